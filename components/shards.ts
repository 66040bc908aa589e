import { getHeapStatistics } from "node:v8";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { MatrixError, type Location } from "../matrix/errors.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import type { RegistryAuth } from "./registry.ts";
import { shardStacks } from "./shard-stacks.ts";

export * from "./shard-stacks.ts";

/**
 * Parallel base builds: one Pulumi stack per base.
 *
 * A base build takes hours, so a matrix with tens of bases cannot be one `pulumi up` on one runner, and several
 * runners cannot share one stack (an update holds the stack's lock). Each base therefore has a *shard stack*
 * `<root>-base-<name>` of its own (config `strata:bases: [<name>]`, `strata:runtimes: false`,
 * `strata:shardOf: <root>`). A shard declares only its base image, pushes it to the root stack's registry (read
 * through a StackReference: the shard owns no repositories) and exports `baseRefs: {<name>: repo:tag@digest}`.
 * The root stack owns the registry, the OIDC roles and the GitHub wiring; with `strata:baseShards: true` it builds
 * no base itself and reads every base's ref from its shard through a StackReference (`baseRefsFromShards`), so
 * `STRATA_BASE_REFS` and runtime builds follow the shards with no hand-written tag.
 */

/**
 * `org/project/stack` for a stack of this project. DIY backends use the organization `organization`, which is also
 * the fallback when the engine names none (offline runs under mocks).
 */
export function qualifiedStackName(stack: string, project = pulumi.getProject(), organization = currentOrganization()): string {
  return stack.includes("/") ? stack : `${organization}/${project}/${stack}`;
}

function currentOrganization(): string {
  try {
    return pulumi.getOrganization();
  } catch {
    return "organization";
  }
}

/** What a shard published for its base, checked against the identity tag the current matrix wants. */
export type ShardRefStatus = { base: string; stack: string; ref: string; status: "current" } | { base: string; stack: string; ref?: string; status: "missing" | "stale" };

/**
 * Classifies a shard's `baseRefs` output: `current` when it holds `<repo>:<tag>@sha256:...` for the tag the matrix
 * derives now, `stale` when it holds another tag (the shard has not built this identity yet), `missing` otherwise.
 */
export function shardRefStatus(base: { name: string; tag: string }, stack: string, outputs: unknown): ShardRefStatus {
  const refs = outputs && typeof outputs === "object" ? (outputs as Record<string, unknown>) : {};
  const ref = refs[base.name];
  if (typeof ref !== "string" || ref === "") return { base: base.name, stack, status: "missing" };
  const current = new RegExp(`:${base.tag.replace(/[.+?^${}()|[\]\\*]/g, "\\$&")}@sha256:[0-9a-f]{64}$`).test(ref);
  return current ? { base: base.name, stack, ref, status: "current" } : { base: base.name, stack, ref, status: "stale" };
}

export interface ShardRefs {
  /** Base name → digest-pinned ref, for bases whose shard has published the identity the matrix wants now. */
  refs: pulumi.Output<Record<string, string>>;
  /** Every base's status (current, stale or missing), for reports. */
  status: pulumi.Output<ShardRefStatus[]>;
  /** One base's ref; an error naming the shard stack and what to run when it is missing or stale. */
  ref(base: string): pulumi.Output<string>;
}

/**
 * Reads each base's ref from its shard stack (`<stack>-base-<name>`, output `baseRefs`) through a StackReference.
 * Stale or missing shards are left out of `refs` with a warning (so `STRATA_BASE_REFS` never names an identity the
 * matrix no longer has); `ref(name)` fails for them, so nothing is built FROM an outdated base.
 */
export function baseRefsFromShards(plan: Pick<BuildPlan, "bases">, stack: string, opts?: pulumi.CustomResourceOptions): ShardRefs {
  const shards = shardStacks(plan, stack);
  const tags = new Map(plan.bases.map((b) => [b.name, b.tag]));
  const statuses = new Map<string, pulumi.Output<ShardRefStatus>>();
  for (const s of shards) {
    const reference = new pulumi.StackReference(`shard-${s.base}`, { name: qualifiedStackName(s.stack) }, opts);
    statuses.set(
      s.base,
      reference.getOutput("baseRefs").apply((outputs) => shardRefStatus({ name: s.base, tag: tags.get(s.base)! }, s.stack, outputs)),
    );
  }
  const status = pulumi.all([...statuses.values()]);
  const refs = status.apply((all) => {
    const out: Record<string, string> = {};
    for (const s of all) {
      if (s.status === "current") out[s.base] = s.ref;
      else pulumi.log.warn(describeShard(s, tags.get(s.base)!));
    }
    return out;
  });
  const ref = (base: string): pulumi.Output<string> => {
    const s = statuses.get(base);
    if (!s) throw new Error(`base '${base}' is not in the matrix; known bases: ${[...statuses.keys()].join(", ")}`);
    return s.apply((st) => {
      if (st.status !== "current") throw new pulumi.RunError(describeShard(st, tags.get(base)!));
      return st.ref;
    });
  };
  return { refs, status, ref };
}

function describeShard(s: ShardRefStatus, tag: string): string {
  const what = s.status === "missing" ? "has published no ref" : `publishes '${s.ref}'`;
  return `base '${s.base}': shard stack '${s.stack}' ${what}, but the matrix wants tag '${tag}'; build it first (workflow strata-build-bases, or \`pulumi up -s ${s.stack}\`)`;
}

export interface ShardRegistryArgs {
  /** The root stack (name or org/project/stack) whose registry outputs the shard pushes to. */
  root: string;
  /** The registry kind of the root (`strata:registry.kind`, copied into the shard's config). */
  kind: "ecr" | "local" | "external";
  /** For `external`: the user name (`strata:registry.username`). */
  username?: pulumi.Input<string>;
  /** For `external`: the password (`strata:registryPassword`, secret). */
  password?: pulumi.Input<string>;
}

/**
 * The root stack's registry as a shard stack sees it: the same fields as `Registry`, read from the root's
 * outputs (`registry`, `basesRepository`, `runtimesRepository`, `cacheRepository`). It owns no repositories, so any
 * number of shards can push at once; ECR credentials come from the shard's own AWS identity (the push-bases role).
 */
export class ShardRegistry extends pulumi.ComponentResource {
  readonly address: pulumi.Output<string>;
  readonly basesRepository: pulumi.Output<string>;
  readonly runtimesRepository: pulumi.Output<string>;
  readonly cacheRepository: pulumi.Output<string>;
  /** Always empty: the root stack owns the repositories and their policies. */
  readonly repositoryArns: pulumi.Output<string>[] = [];
  readonly auth?: RegistryAuth;
  readonly kind: ShardRegistryArgs["kind"];
  /** The root stack's reference: runtime shards also read its `baseRefs` through it. */
  readonly root: pulumi.StackReference;

  constructor(name: string, args: ShardRegistryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("strata:shards:ShardRegistry", name, {}, opts);
    this.kind = args.kind;
    const root = new pulumi.StackReference(`${name}-root`, { name: qualifiedStackName(args.root) }, { parent: this });
    this.root = root;
    const required = (key: string) =>
      root.getOutput(key).apply((v) => {
        if (typeof v !== "string" || v === "") {
          throw new pulumi.RunError(`root stack '${args.root}' has no output '${key}': run \`pulumi up -s ${args.root}\` first (it creates the registry the shards push to)`);
        }
        return v;
      });
    this.address = required("registry");
    this.basesRepository = required("basesRepository");
    this.runtimesRepository = required("runtimesRepository");
    this.cacheRepository = required("cacheRepository");
    if (args.kind === "ecr") {
      const registryId = this.address.apply((a) => a.split(".")[0]);
      const token = aws.ecr.getAuthorizationTokenOutput({ registryId }, { parent: this });
      this.auth = { address: this.address, username: token.userName, password: pulumi.secret(token.password) };
    } else if (args.kind === "external") {
      if (!args.username || !args.password) throw new Error("an external registry needs strata:registry.username and the secret strata:registryPassword in the shard's config (`pulumi config cp` from the root copies them)");
      this.auth = { address: this.address, username: args.username, password: pulumi.secret(pulumi.output(args.password)) };
    }
    this.registerOutputs({ address: this.address, basesRepository: this.basesRepository, cacheRepository: this.cacheRepository });
  }
}

/**
 * A runtime shard's base refs: the root stack's `baseRefs` output (the bases it built, or read from its base
 * shards), each checked against the identity tag the matrix derives now, as `baseRefsFromShards` checks a shard's.
 * Read before anything is declared: a base the root has not published (or publishes under another tag) is one
 * error naming every such base and what to run, and the shard declares nothing.
 */
export async function baseRefsFromRoot(root: pulumi.StackReference, plan: Pick<BuildPlan, "bases">, rootStack: string): Promise<Record<string, string>> {
  const details = await root.getOutputDetails("baseRefs");
  const published = details.value ?? details.secretValue;
  const statuses = plan.bases.map((b) => shardRefStatus(b, rootStack, published));
  const bad = statuses.filter((s) => s.status !== "current");
  if (bad.length > 0) {
    const tags = new Map(plan.bases.map((b) => [b.name, b.tag]));
    const lines = bad.slice(0, 10).map((s) => `  base '${s.base}': ${s.status === "missing" ? "no ref published" : `publishes '${s.ref}'`}, the matrix wants tag '${tags.get(s.base)}'`);
    throw new pulumi.RunError(
      [
        `root stack '${rootStack}' has not published ${bad.length} of the ${plan.bases.length} base(s) this runtime shard builds FROM:`,
        ...lines,
        ...(bad.length > 10 ? [`  ... and ${bad.length - 10} more`] : []),
        `build and publish them first (workflow strata-build-bases, or \`pulumi up -s ${rootStack}\`), then update this shard`,
      ].join("\n"),
    );
  }
  return Object.fromEntries(statuses.map((s) => [s.base, s.ref!]));
}

/**
 * Memory a declared resource costs the program (component, image inputs, Pulumi's bookkeeping), measured under
 * the offline plan's mock runtime (about 0.22 MB at 10,000 resources) with a margin; a real `pulumi up` holds at least as much per resource.
 */
export const BYTES_PER_RESOURCE = 300 * 1024;

/** How many resources a plan declares: per image a component, one Image per platform, Indexes for several. */
export function estimateResources(plan: Pick<BuildPlan, "bases" | "runtimes">, opts: { bases: boolean; runtimes: boolean }): number {
  const images = (platforms: number, tags: number) => 1 + platforms + (platforms > 1 ? tags : 0);
  let n = 40; // registry, fleet and GitHub wiring, at most
  if (opts.bases) for (const b of plan.bases) n += images(b.platforms.length, 1);
  if (opts.runtimes) for (const r of plan.runtimes) n += images(r.platforms.length, r.tags.length);
  return n;
}

/**
 * Refuses, before declaring anything, a plan whose resources would not fit the heap this process may still use
 * (V8 would abort with "JavaScript heap out of memory" and no message): an error at the matrix naming the count
 * and the setting that shards it.
 */
export function checkPlanSize(
  plan: Pick<BuildPlan, "bases" | "runtimes">,
  opts: { bases: boolean; runtimes: boolean; at: Location; shardSize: number; heapBytes?: number },
): void {
  const resources = estimateResources(plan, opts);
  const heap = getHeapStatistics();
  const available = opts.heapBytes ?? heap.heap_size_limit - heap.used_heap_size;
  const needed = resources * BYTES_PER_RESOURCE;
  if (needed <= available) return;
  const mb = (b: number) => Math.round(b / 2 ** 20);
  throw new MatrixError([
    {
      ...opts.at,
      message: `this stack would declare about ${resources} resources (${plan.runtimes.length} runtime(s), ${plan.bases.length} base(s)), about ${mb(needed)} MB, more than the ${mb(available)} MB of heap left to this process`,
      fix: opts.runtimes
        ? `lower strata:runtimeShardSize (now ${opts.shardSize}) so the runtimes are declared by runtime shard stacks of that size, or give Node more heap (NODE_OPTIONS=--max-old-space-size=MB)`
        : "declare the bases in base shard stacks (strata:baseShards: true), or give Node more heap (NODE_OPTIONS=--max-old-space-size=MB)",
    },
  ]);
}
