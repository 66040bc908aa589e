import { z } from "zod";

/** Pool names go into tags and runner names: keep them short and plain. */
const poolSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/, "1-32 chars of [A-Za-z0-9_.-], starting alphanumeric"),
  labels: z.array(z.string().min(1).max(100)).min(1).max(99),
  launchTemplateId: z.string().regex(/^lt-[0-9a-f]+$/, "launch template id (lt-...)"),
  instanceTypes: z.array(z.string().regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, "instance type like g5.xlarge")).min(1),
  subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, "subnet id (subnet-...)")).min(1),
  maxRunners: z.number().int().min(0).max(10_000),
  maxRuntimeMinutes: z.number().int().min(1).max(7 * 24 * 60),
  spot: z.boolean(),
  /** URL of the pool's FIFO scale-up queue. */
  queueUrl: z.url({ protocol: /^https?$/ }),
});
export type Pool = z.infer<typeof poolSchema>;

const poolsSchema = z
  .array(poolSchema)
  .min(1)
  .superRefine((pools, ctx) => {
    const seen = new Set<string>();
    for (const [i, p] of pools.entries()) {
      if (seen.has(p.name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate pool name "${p.name}"` });
      seen.add(p.name);
    }
  });

const ownerRe = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$/;
const repoRe = /^[A-Za-z0-9_.-]{1,100}$/;
const repositoryRe = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9_.-]{1,100}$/;
const arnRe = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/;

const envSchema = z.object({
  STRATA_POOLS: z.string().min(1, "is required"),
  STRATA_WEBHOOK_SECRET_ARN: z.string().regex(arnRe, "must be a Secrets Manager secret ARN"),
  STRATA_GITHUB_APP_SECRET_ARN: z.string().regex(arnRe, "must be a Secrets Manager secret ARN"),
  STRATA_GITHUB_API_URL: z.url({ protocol: /^https?$/ }).default("https://api.github.com"),
  STRATA_RUNNER_OWNER: z.string().regex(ownerRe, "must be a GitHub org or user login"),
  STRATA_RUNNER_REPO: z.string().regex(repoRe, "must be a repository name (without owner)").optional(),
  STRATA_RUNNER_GROUP_ID: z.coerce.number().int().min(1).default(1),
  STRATA_PARAM_PREFIX: z.string().regex(/^\/(?:[A-Za-z0-9_.-]+\/)+$/, "must be an SSM path that starts and ends with '/', e.g. /strata/dev/jit/"),
  STRATA_TAG_KEY: z.string().regex(/^[A-Za-z0-9_.:/=+@-]{1,100}$/).default("strata:pool"),
  /** Tag on each JIT parameter holding its instance's ARN: the instance role may read only the one tagged with its own. */
  STRATA_INSTANCE_ARN_TAG_KEY: z.string().regex(/^[A-Za-z0-9_.:/=+@-]{1,100}$/).default("strata:instance-arn"),
  /** `arn:<partition>:ec2:<region>:<account>:instance/`; with it, JIT parameters are tagged with their instance's ARN. */
  STRATA_INSTANCE_ARN_PREFIX: z.string().regex(/^arn:[a-z-]+:ec2:[a-z0-9-]+:\d{12}:instance\/$/, "must look like arn:aws:ec2:<region>:<account>:instance/").optional(),
  /** JSON array of the "owner/name" repositories the fleet serves; deliveries for any other are refused. */
  STRATA_REPOSITORIES: z.string().min(1, "is required"),
  /** SSM path of the scaler's own state documents (breaker, interruptions, re-runs), e.g. /strata/dev/state/. */
  STRATA_STATE_PREFIX: z.string().regex(/^\/(?:[A-Za-z0-9_.-]+\/)+$/, "must be an SSM path that starts and ends with '/', e.g. /strata/dev/state/"),
  /** Standard SQS queue whose messages wake the scale-up consumer; unset: its schedule alone drives it. */
  STRATA_WAKE_QUEUE_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** Spot circuit breaker: after this many spot capacity failures or interruptions of a pool ... */
  STRATA_SPOT_BREAKER_FAILURES: z.coerce.number().int().min(1).max(1000).default(3),
  /** ... within this many minutes ... */
  STRATA_SPOT_BREAKER_WINDOW_MINUTES: z.coerce.number().int().min(1).max(24 * 60).default(30),
  /** ... the pool launches on-demand for this many minutes. */
  STRATA_SPOT_BREAKER_ON_DEMAND_MINUTES: z.coerce.number().int().min(1).max(7 * 24 * 60).default(60),
  /** Not part of the deploy contract: housekeeping tunable, minutes a runner may take to come online. */
  STRATA_REGISTRATION_TIMEOUT_MINUTES: z.coerce.number().int().min(1).max(120).default(10),
});

export interface ScalerConfig {
  pools: Pool[];
  /** Tag key and ARN prefix for tagging each JIT parameter with its instance's ARN; none where not deployed so. */
  instanceArnTag?: { key: string; prefix: string };
  webhookSecretArn: string;
  githubAppSecretArn: string;
  githubApiUrl: string;
  owner: string;
  repo?: string;
  runnerGroupId: number;
  paramPrefix: string;
  tagKey: string;
  registrationTimeoutMinutes: number;
  /** "owner/name" of every repository served, lowercase. */
  repositories: string[];
  statePrefix: string;
  wakeQueueUrl?: string;
  breaker: BreakerSettings;
}

/** Spot circuit breaker: `failures` spot failures within `windowMinutes` → on-demand for `onDemandMinutes`. */
export interface BreakerSettings {
  failures: number;
  windowMinutes: number;
  onDemandMinutes: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid scaler configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

function describe(prefix: string, issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    const path = i.path.length ? `${prefix}${i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")}` : prefix;
    return `${path}: ${i.message}`;
  });
}

/** Parse the Lambda environment. Throws ConfigError naming every bad variable. */
export function parseConfig(env: Record<string, string | undefined>): ScalerConfig {
  // Empty strings count as unset, which is what an unset optional Pulumi input becomes.
  const clean = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith("STRATA_") && v !== undefined && v !== ""));
  const parsed = envSchema.safeParse(clean);
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const key = String(issue.path[0] ?? "environment");
      problems.push(`${key}: ${issue.message}`);
    }
  }
  let pools: Pool[] = [];
  if (typeof clean.STRATA_POOLS === "string") {
    let raw: unknown;
    try {
      raw = JSON.parse(clean.STRATA_POOLS);
    } catch (err) {
      problems.push(`STRATA_POOLS: not valid JSON (${(err as Error).message})`);
    }
    if (raw !== undefined) {
      const p = poolsSchema.safeParse(raw);
      if (p.success) pools = p.data;
      else problems.push(...describe("STRATA_POOLS", p.error.issues));
    }
  }
  let repositories: string[] = [];
  if (typeof clean.STRATA_REPOSITORIES === "string") {
    const r = z
      .array(z.string().regex(repositoryRe, 'must be "owner/name"'))
      .min(1, "must list at least one repository")
      .safeParse((() => {
        try {
          return JSON.parse(clean.STRATA_REPOSITORIES);
        } catch {
          return undefined;
        }
      })());
    if (r.success) repositories = [...new Set(r.data.map((x) => x.toLowerCase()))];
    else problems.push(...describe("STRATA_REPOSITORIES", r.error.issues).map((m) => (m.includes("expected array") ? "STRATA_REPOSITORIES: must be a JSON array of \"owner/name\"" : m)));
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  const e = parsed.data;
  return {
    pools,
    webhookSecretArn: e.STRATA_WEBHOOK_SECRET_ARN,
    githubAppSecretArn: e.STRATA_GITHUB_APP_SECRET_ARN,
    githubApiUrl: e.STRATA_GITHUB_API_URL.replace(/\/+$/, ""),
    owner: e.STRATA_RUNNER_OWNER,
    ...(e.STRATA_RUNNER_REPO ? { repo: e.STRATA_RUNNER_REPO } : {}),
    runnerGroupId: e.STRATA_RUNNER_GROUP_ID,
    paramPrefix: e.STRATA_PARAM_PREFIX,
    tagKey: e.STRATA_TAG_KEY,
    instanceArnTag: e.STRATA_INSTANCE_ARN_PREFIX ? { key: e.STRATA_INSTANCE_ARN_TAG_KEY, prefix: e.STRATA_INSTANCE_ARN_PREFIX } : undefined,
    registrationTimeoutMinutes: e.STRATA_REGISTRATION_TIMEOUT_MINUTES,
    repositories,
    statePrefix: e.STRATA_STATE_PREFIX,
    ...(e.STRATA_WAKE_QUEUE_URL ? { wakeQueueUrl: e.STRATA_WAKE_QUEUE_URL } : {}),
    breaker: { failures: e.STRATA_SPOT_BREAKER_FAILURES, windowMinutes: e.STRATA_SPOT_BREAKER_WINDOW_MINUTES, onDemandMinutes: e.STRATA_SPOT_BREAKER_ON_DEMAND_MINUTES },
  };
}

/** The GitHub App secret stored in STRATA_GITHUB_APP_SECRET_ARN. */
export const appSecretSchema = z.object({
  appId: z.union([z.number().int().positive(), z.string().regex(/^\d+$/)]),
  installationId: z.union([z.number().int().positive(), z.string().regex(/^\d+$/)]),
  privateKey: z.string().includes("PRIVATE KEY"),
});
export interface AppSecret {
  appId: number;
  installationId: number;
  privateKey: string;
}

export function parseAppSecret(text: string): AppSecret {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(["STRATA_GITHUB_APP_SECRET_ARN: secret value is not JSON"]);
  }
  const p = appSecretSchema.safeParse(raw);
  if (!p.success) throw new ConfigError(describe("STRATA_GITHUB_APP_SECRET_ARN secret", p.error.issues));
  return {
    appId: Number(p.data.appId),
    installationId: Number(p.data.installationId),
    // Keys pasted into JSON by hand often carry literal "\n".
    privateKey: p.data.privateKey.includes("\\n") ? p.data.privateKey.replace(/\\n/g, "\n") : p.data.privateKey,
  };
}
