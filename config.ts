import { existsSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { DEFAULT_RUNTIME_SHARD_SIZE } from "./components/shard-stacks.ts";
import { MatrixError, type Location, type Problem } from "./matrix/errors.ts";
import { LIMITS } from "./matrix/files.ts";
import { allowedKeys, closest } from "./matrix/schema.ts";
import { SourceFile } from "./matrix/source.ts";
import { plaintextSecretProblems } from "./cli/stack.ts";

/** Where images are pushed: ECR in an AWS account, a registry on this machine, or any other registry. */
const RegistryConfig = z.strictObject({
  /** `ecr` (ECR repositories in the stack's AWS account), `local` or `external`. Default `ecr`. */
  kind: z.enum(["ecr", "local", "external"]).default("ecr"),
  /** Registry host[:port]. Default `localhost:5000` for `local`; required for `external`; ECR's own for `ecr`. */
  address: z.string().min(1).optional(),
  /** User name for `external`; the password is the secret `strata:registryPassword`. */
  username: z.string().min(1).optional(),
  /** Repository namespace: images go to `<address>/<prefix>/bases`, `/runtimes` and `/cache`. Default `strata`. */
  prefix: z.string().regex(/^[a-z0-9]+([._/-][a-z0-9]+)*$/, "must be lowercase path segments").default("strata"),
  /** ECR: let `pulumi destroy` delete repositories that still hold images. Default false. */
  forceDelete: z.boolean().default(false),
  /** ECR: a KMS key ARN to encrypt repositories with; default AES256 (ECR-managed keys). */
  kmsKeyArn: z.string().min(1).optional(),
  /** ECR: days after which untagged images (superseded pushes, old cache manifests) expire. Default 7. */
  untaggedExpiryDays: z.number().int().positive().default(7),
  /** ECR: days after which pull-request tags (`pr-*`) expire. Default 14. */
  pullRequestExpiryDays: z.number().int().positive().default(14),
});

/** The release a runtime build is for; fills the runtime tag templates. */
const ReleaseConfig = z.strictObject({
  /** Release version, e.g. v0.1.1. Default `dev`. */
  version: z.string().min(1).default("dev"),
  /** Branch name, for `{branch}` tags. Default `main`. */
  branch: z.string().min(1).default("main"),
  /** Commit, for `{sha}` tags (shortened to 7 characters). Default `0000000`. */
  sha: z.string().min(1).default("0000000"),
});

export type RegistryConfig = z.infer<typeof RegistryConfig>;
export type ReleaseConfig = z.infer<typeof ReleaseConfig>;

export interface StackConfig {
  /** The matrix file, relative to the project. Default `strata.yaml`. */
  matrix: string;
  registry: RegistryConfig;
  /** Password of an `external` registry, as a secret. */
  registryPassword?: pulumi.Output<string>;
  release: ReleaseConfig;
  /** Build only these bases in this stack (one shard of a large matrix); default all. */
  bases?: string[];
  /** Declare runtime images. Default true. */
  runtimes: boolean;
  /** Root stack this stack is a base shard of: push to its registry, declare only `bases`. */
  shardOf?: string;
  /** Read every base's ref from its shard stack `<stack>-base-<name>` instead of building bases here. Default false. */
  baseShards: boolean;
  /** Runtimes per runtime shard stack; a matrix with more runtimes than this declares them in shards. Default 500. */
  runtimeShardSize: number;
  /** This stack is runtime shard `runtimes-<k>` of `shardOf`: it declares only that shard's runtimes. Default none. */
  runtimeShard?: string;
  /** Raw `strata:fleet` object, parsed by the fleet component's own schema. */
  fleet?: unknown;
  /** Raw `strata:github` object, parsed by the GitHub wiring's own schema. */
  github?: unknown;
}

/** Every `strata:*` config key the program reads. */
export const CONFIG_KEYS = [
  "matrix", "registry", "registryPassword", "release", "bases", "runtimes", "shardOf", "baseShards",
  "runtimeShardSize", "runtimeShard",
  "fleet", "githubAppId", "githubAppInstallationId", "githubAppPrivateKey", "github", "forecast",
];

/** Reads and validates the `strata:*` stack config; problems name Pulumi.<stack>.yaml with line and column. */
export function readStackConfig(): StackConfig {
  const cfg = new pulumi.Config("strata");
  const problems: Problem[] = [];
  // Pulumi ignores keys nobody reads: a misspelt one would silently fall back to a default.
  for (const full of Object.keys(pulumi.runtime.allConfig())) {
    const key = full.startsWith("strata:") ? full.slice("strata:".length) : undefined;
    if (key === undefined || CONFIG_KEYS.includes(key)) continue;
    const guess = closest(key, CONFIG_KEYS);
    problems.push({
      ...configLocation(key, [], { key: true }),
      message: `unknown config key 'strata:${key}'`,
      fix: guess ? `did you mean 'strata:${guess}'? (pulumi config rm strata:${key})` : `remove it (pulumi config rm strata:${key}); strata reads ${CONFIG_KEYS.map((k) => `strata:${k}`).join(", ")}`,
    });
  }
  // A secret in plain text in the stack file: the same rule `strata plan` applies (cli/stack.ts).
  const stackFile = `Pulumi.${pulumi.getStack()}.yaml`;
  if (existsSync(stackFile)) problems.push(...plaintextSecretProblems(SourceFile.read(stackFile, stackFile, LIMITS.stackBytes)));
  const parse = <T extends z.ZodType>(key: string, schema: T, fallback: unknown): z.infer<T> | undefined => {
    const text = cfg.get(key);
    const raw = text === undefined ? fallback : parseValue(text);
    const result = schema.safeParse(raw, { reportInput: true });
    if (result.success) return result.data;
    for (const issue of result.error.issues) {
      const path = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p));
      let message = `strata:${key}${path.length ? "." + path.join(".") : ""}: ${issue.message.replace(/^Invalid input: /, "")}`;
      let fix = "correct the value in the stack config (pulumi config set --path ...)";
      if (issue.code === "unrecognized_keys") {
        const allowed = allowedKeys(schema, issue.path);
        message = `strata:${key}: unknown key(s) ${issue.keys.map((k) => `'${k}'`).join(", ")}`;
        const guess = closest(issue.keys[0], allowed);
        fix = guess ? `did you mean '${guess}'? (allowed: ${allowed.join(", ")})` : `allowed keys: ${allowed.join(", ")}`;
      } else if (issue.code === "invalid_value") {
        fix = `use one of: ${issue.values.map(String).join(", ")}`;
      }
      problems.push({ ...configLocation(key, path), message, fix });
    }
    return undefined;
  };

  const registry = parse("registry", RegistryConfig, {});
  const release = parse("release", ReleaseConfig, {});
  const bases = parse("bases", z.array(z.string().min(1)).min(1).optional(), undefined);
  const runtimes = parse("runtimes", z.boolean().default(true), undefined);
  const shardOf = parse("shardOf", z.string().regex(/^[A-Za-z0-9_./-]+$/, "must be a stack name").optional(), undefined);
  const baseShards = parse("baseShards", z.boolean().default(false), undefined);
  const runtimeShardSize = parse("runtimeShardSize", z.number().int().min(1).default(DEFAULT_RUNTIME_SHARD_SIZE), undefined);
  const runtimeShard = parse("runtimeShard", z.string().regex(/^runtimes-[1-9][0-9]*$/, "must be a runtime shard name, runtimes-<k>").optional(), undefined);
  if (runtimeShard && !shardOf) problems.push({ ...configLocation("runtimeShard"), message: "a runtime shard (strata:runtimeShard) needs strata:shardOf, its root stack", fix: "pulumi config set strata:shardOf ROOT" });
  if (runtimeShard && bases) problems.push({ ...configLocation("runtimeShard"), message: "a runtime shard builds no base: strata:bases and strata:runtimeShard cannot both be set", fix: "pulumi config rm strata:bases" });
  if (shardOf && !bases && !runtimeShard) problems.push({ ...configLocation("shardOf"), message: "a shard stack (strata:shardOf) needs strata:bases (a base shard) or strata:runtimeShard (a runtime shard)", fix: "pulumi config set --path 'strata:bases[0]' NAME" });
  if (shardOf && baseShards) problems.push({ ...configLocation("baseShards"), message: "a shard stack cannot read its bases from shards", fix: "pulumi config rm strata:baseShards" });
  const registryPassword = cfg.getSecret("registryPassword");
  if (registry?.kind === "external") {
    if (!registry.address) problems.push({ ...configLocation("registry", ["kind"]), message: "an external registry needs an address", fix: "pulumi config set --path strata:registry.address ghcr.io" });
    if (!registry.username || !registryPassword) {
      problems.push({
        ...configLocation("registry", ["kind"]),
        message: "an external registry needs a username and a password",
        fix: "pulumi config set --path strata:registry.username USER && pulumi config set --secret strata:registryPassword",
      });
    }
  }
  if (problems.length > 0) throw new MatrixError(problems);
  return {
    matrix: cfg.get("matrix") ?? "strata.yaml",
    registry: registry!,
    registryPassword,
    release: release!,
    bases,
    runtimes: runtimes!,
    shardOf,
    baseShards: baseShards!,
    runtimeShardSize: runtimeShardSize!,
    runtimeShard,
    fleet: cfg.getObject<unknown>("fleet"),
    github: cfg.getObject<unknown>("github"),
  };
}

/** A config value as set: JSON for objects, lists, numbers and booleans, else the plain string. */
function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The position of a `strata:<key>` setting in Pulumi.<stack>.yaml, or the file's start when it is not there. */
export function configLocation(key: string, path: ReadonlyArray<string | number> = [], opts: { key?: boolean } = {}): Location {
  const file = `Pulumi.${pulumi.getStack()}.yaml`;
  if (!existsSync(file)) return { file, line: 1, col: 1 };
  try {
    return SourceFile.read(file, file, LIMITS.stackBytes).locate(["config", `strata:${key}`, ...path], opts);
  } catch {
    return { file, line: 1, col: 1 };
  }
}
