import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";

/** A resource the program registered, as the mock engine saw it. */
export interface RecordedResource {
  type: string;
  name: string;
  urn: string;
  /** Name and type of the parent resource; undefined for children of the stack. */
  parent?: string;
  parentType?: string;
  custom: boolean;
  inputs: Record<string, unknown>;
  state: Record<string, unknown>;
}

export interface ProgramRun {
  resources: RecordedResource[];
  /** The stack outputs, resolved. */
  outputs: Record<string, unknown>;
}

export interface RunOptions {
  stack: string;
  /** Config as `pulumi config` holds it: `strata:registry` → value (objects allowed). */
  config: Record<string, unknown>;
  /** Keys of `config` that are secrets. */
  secretKeys?: string[];
  /** Run as `pulumi preview` (unknown outputs stay unknown) instead of `pulumi up`. Default false. */
  preview?: boolean;
  /**
   * Capture no stack traces while the program runs. Pulumi captures one for every promise it makes, which is
   * most of the time and memory of a large offline plan. Default false.
   */
  lean?: boolean;
  /** Outputs of other stacks, by stack name, for the program's StackReferences. Default: none have outputs. */
  stackOutputs?: Record<string, Record<string, unknown>>;
}

/** Fixed fake account facts used for every offline answer; the region is the stack's `aws:region` when it sets one. */
export const OFFLINE = { account: "123456789012", region: "us-east-1", ami: "ami-0abc1234def567890" };

type Facts = typeof OFFLINE;

/** The offline facts for a stack's config: its `aws:region`, else us-east-1. */
export function offlineFacts(config: Record<string, unknown>): Facts {
  const region = config["aws:region"];
  return { ...OFFLINE, ...(typeof region === "string" && /^[a-z]{2}(-[a-z]+)+-\d$/.test(region) ? { region } : {}) };
}



/**
 * Runs the real strata program in this process under Pulumi's mock runtime, recording every resource it
 * registers. Nothing leaves the machine: resources get deterministic fake outputs, and any invoke the program
 * makes that has no offline answer here is an error (so a new cloud lookup cannot slip in unnoticed).
 * One run at a time per process: the Pulumi runtime is global (each run replaces its mocks and config).
 */
export async function runProgram(opts: RunOptions): Promise<ProgramRun> {
  const resources: RecordedResource[] = [];
  const byUrn = new Map<string, RecordedResource>();
  const parents = new Map<string, string>();
  let pending = 0;
  const facts = offlineFacts(opts.config);

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const state =
          args.type === "pulumi:pulumi:StackReference"
            ? { name: args.inputs.name, outputs: stackOutputsOf(opts.stackOutputs ?? {}, args.inputs.name), secretOutputNames: [] }
            : offlineState(args.type, args.name, args.inputs, facts);
        const id = args.custom ? `${args.name}-id` : undefined;
        resources.push({ type: args.type, name: args.name, urn: "", custom: args.custom ?? false, inputs: args.inputs, state });
        return { id, state };
      },
      call(args) {
        return offlineCall(args.token, args.inputs, facts);
      },
    },
    "strata",
    opts.stack,
    opts.preview ?? false,
  );

  // The mock monitor does not tell newResource who the parent is; read it off the registration request.
  const monitor = pulumi.runtime.getMonitor() as unknown as {
    registerResource(req: { getParent(): string; getName(): string; getType(): string }, cb: (err: unknown, resp?: { getUrn(): string }) => void): Promise<void>;
  };
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) => {
    pending++;
    return register(req, (err, resp) => {
      pending--;
      if (!err && resp) {
        const urn = resp.getUrn();
        const rec = [...resources].reverse().find((r) => r.urn === "" && r.name === req.getName() && r.type === req.getType());
        if (rec) {
          rec.urn = urn;
          byUrn.set(urn, rec);
          if (req.getParent()) parents.set(urn, req.getParent());
        }
      }
      cb(err, resp);
    });
  };

  const config: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.config)) config[k] = typeof v === "string" ? v : JSON.stringify(v);
  pulumi.runtime.setAllConfig(config, opts.secretKeys ?? []);

  const program = (await import("../index.ts")).default;
  // Set only once every module is loaded: module loading itself relies on stack traces.
  const stackTraceLimit = Error.stackTraceLimit;
  if (opts.lean) Error.stackTraceLimit = 0;
  let outputs: Record<string, unknown> = {};
  // An error inside an Output (a base ref a runtime may not use yet) fails the registration that awaits it, and the
  // outputs that depend on it never resolve: the engine would fail the update with its message, so does this run.
  const failures: unknown[] = [];
  let failed!: (reason: unknown) => void;
  const failure = new Promise<never>((_, reject) => (failed = reject));
  failure.catch(() => {});
  const onRejection = (reason: unknown) => {
    failures.push(reason);
    failed(reason);
  };
  process.on("unhandledRejection", onRejection);
  try {
    const result = await Promise.race([program(), failure]);
    outputs = await Promise.race([new Promise<Record<string, unknown>>((resolve) => pulumi.output(result).apply((v) => resolve(v as Record<string, unknown>))), failure]);
    // Resources can register late (a Lambda waits for its code bundle): wait until Pulumi has no RPC in flight.
    await Promise.race([(pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs(), failure]);
    await settle(() => pending);
  } catch (err) {
    // Let registrations already sent finish, so none lands in a later run of this process.
    await Promise.race([(pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
    await settle(() => pending, 5000);
    if (failures.length === 0) throw err;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
    process.off("unhandledRejection", onRejection);
  }
  if (failures.length > 0) {
    const messages = [...new Set(failures.map((f) => (f instanceof Error ? f.message : String(f)).replace(/^error serializing property "[^"]*": /, "")))];
    const shown = messages.slice(0, 10).join("\n");
    throw new pulumi.RunError(messages.length > 10 ? `${shown}\n... and ${messages.length - 10} more` : shown);
  }

  for (const r of resources) {
    const parentUrn = parents.get(r.urn);
    const parent = parentUrn ? byUrn.get(parentUrn) : undefined;
    if (parent && parent.type !== "pulumi:pulumi:Stack") {
      r.parent = parent.name;
      r.parentType = parent.type;
    }
  }
  return { resources: resources.filter((r) => r.type !== "pulumi:pulumi:Stack"), outputs };
}

/** Waits until no registration is in flight for a few turns of the event loop (at most `maxMs`). */
async function settle(pending: () => number, maxMs = Infinity): Promise<void> {
  let quiet = 0;
  const until = performance.now() + maxMs;
  while (quiet < 3 && performance.now() < until) {
    await new Promise((r) => setImmediate(r));
    quiet = pending() === 0 ? quiet + 1 : 0;
  }
}

/** A referenced stack's outputs: by its full `org/project/stack` name or by the stack name alone. */
function stackOutputsOf(all: Record<string, Record<string, unknown>>, name: string): Record<string, unknown> {
  return all[name] ?? all[name.split("/").pop()!] ?? {};
}

function digestOf(value: unknown): string {
  return `sha256:${createHash("sha256").update(JSON.stringify(value)).digest("hex")}`;
}

/** Fake outputs for a resource, derived from its inputs so that the same inputs give the same outputs. */
function offlineState(type: string, name: string, inputs: Record<string, any>, facts: Facts): Record<string, unknown> {
  const { account, region } = facts;
  switch (type) {
    case "docker-build:index:Image": {
      const digest = digestOf(inputs);
      const tags: string[] = inputs.tags ?? [];
      return { ...inputs, digest, ref: tags.length ? `${tags[0]}@${digest}` : "", contextHash: digestOf(inputs.context ?? {}) };
    }
    case "docker-build:index:Index": {
      const digest = digestOf(inputs.sources ?? []);
      return { ...inputs, ref: `${inputs.tag}@${digest}` };
    }
    case "aws:ecr/repository:Repository":
      return {
        ...inputs,
        arn: `arn:aws:ecr:${region}:${account}:repository/${inputs.name}`,
        registryId: account,
        repositoryUrl: `${account}.dkr.ecr.${region}.amazonaws.com/${inputs.name}`,
      };
    case "aws:lambda/functionUrl:FunctionUrl":
      return { ...inputs, functionUrl: `https://${name}.lambda-url.${region}.on.aws/` };
    default: {
      const service = type.startsWith("aws:") ? type.split(/[:/]/)[1] : undefined;
      return { ...inputs, ...(service && !inputs.arn ? { arn: `arn:aws:${service}:${region}:${account}:${name}` } : {}) };
    }
  }
}

/** Offline answers for the invokes strata makes; anything else is an error. */
function offlineCall(token: string, inputs: Record<string, any>, facts: Facts): Record<string, unknown> {
  const { account, region, ami } = facts;
  switch (token) {
    case "aws:ecr/getAuthorizationToken:getAuthorizationToken":
      return {
        id: region,
        authorizationToken: Buffer.from("AWS:offline").toString("base64"),
        userName: "AWS",
        password: "offline-ecr-password",
        proxyEndpoint: `https://${inputs.registryId ?? account}.dkr.ecr.${region}.amazonaws.com`,
        expiresAt: "2099-01-01T00:00:00Z",
      };
    case "aws:ssm/getParameter:getParameter":
      return { id: inputs.name, name: inputs.name, type: "String", value: ami, insecureValue: ami, arn: `arn:aws:ssm:${region}::parameter${inputs.name}`, version: 1, withDecryption: true };
    case "aws:index/getRegion:getRegion":
      return { id: region, name: region, region, endpoint: `ec2.${region}.amazonaws.com`, description: "offline" };
    case "aws:index/getCallerIdentity:getCallerIdentity":
      return { id: account, accountId: account, arn: `arn:aws:iam::${account}:user/offline`, userId: "OFFLINE" };
    case "aws:index/getPartition:getPartition":
      return { id: "aws", partition: "aws", dnsSuffix: "amazonaws.com", reverseDnsPrefix: "com.amazonaws" };
    case "aws:index/getAvailabilityZones:getAvailabilityZones":
      return { id: region, names: [`${region}a`, `${region}b`, `${region}c`], zoneIds: ["az1", "az2", "az4"].map((z) => `${region.replace(/^(\w\w)-(\w)\w*-(\d)$/, "$1$2$3")}-${z}`), groupNames: [region] };
    case "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {
      // Offline, every requested type is offered in every zone.
      const types: string[] = inputs.filters?.find((f: { name: string }) => f.name === "instance-type")?.values ?? [];
      const zones = [`${region}a`, `${region}b`, `${region}c`];
      const pairs = zones.flatMap((z) => types.map((t) => [z, t]));
      return { id: region, locations: pairs.map((p) => p[0]), instanceTypes: pairs.map((p) => p[1]), locationTypes: pairs.map(() => "availability-zone") };
    }
    case "aws:ec2/getAmi:getAmi":
      return { id: inputs.filters?.[0]?.values?.[0] ?? ami, rootDeviceName: "/dev/sda1", blockDeviceMappings: [], architecture: "x86_64" };
    case "aws:ec2/getVpc:getVpc":
      return { id: inputs.id, cidrBlock: "172.31.0.0/16" };
    case "github:index/getRepository:getRepository": {
      // Offline, a stable made-up id per repository (the runner group lists repositories by id).
      const id = [...String(inputs.fullName)].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % 1_000_000_000;
      return { id: inputs.fullName, fullName: inputs.fullName, name: String(inputs.fullName).split("/")[1], repoId: id, defaultBranch: "main" };
    }
    default:
      throw new Error(`strata plan has no offline answer for the invoke ${token}; add one to cli/program.ts`);
  }
}
