import * as pulumi from "@pulumi/pulumi";
import { GpuRunnerFleet, parseFleetConfig } from "./components/fleet/index.ts";
import { GitHubWiring, parseGitHubConfig, type GitHubConfig } from "./components/github.ts";
import { BaseImage, RuntimeImage } from "./components/images.ts";
import { mutableRuntimeTagFilters, Registry } from "./components/registry.ts";
import { baseRefsFromRoot, baseRefsFromShards, checkPlanSize, findRuntimeShard, runtimeShards, shardsRuntimes, ShardRegistry } from "./components/shards.ts";
import { configLocation, readStackConfig, type StackConfig } from "./config.ts";
import { MatrixError, formatProblem } from "./matrix/errors.ts";
import { loadMatrix } from "./matrix/load.ts";
import { lockWarning } from "./matrix/lock.ts";
import { runtimeTags, selectBases, type BuildPlan } from "./matrix/plan.ts";
import { fleetPools, generateWorkflows, WorkflowError } from "./workflows/generate.ts";

/**
 * The strata program: stack config and matrix in, registry, base images and runtime images out. User mistakes
 * (matrix, Dockerfiles, config) end the run with their file:line:col messages and no stack trace.
 */
export default async function strata() {
  try {
    return await declare();
  } catch (err) {
    if (err instanceof MatrixError || err instanceof WorkflowError) throw new pulumi.RunError(err.message);
    throw err;
  }
}

async function declare() {
  const config = readStackConfig();
  const matrix = loadMatrix(config.matrix);
  for (const w of matrix.warnings) pulumi.log.warn(formatProblem(w, "warning"));
  const lock = lockWarning(matrix);
  if (lock) pulumi.log.warn(lock.replace(/^strata: warning: /, ""));
  // Runtime shards: above strata:runtimeShardSize runtimes, the root declares none and each shard stack
  // `<root>-runtimes-<k>` declares its group, FROM the bases the root publishes.
  const shards = shardsRuntimes(matrix, config.runtimeShardSize) ? runtimeShards(matrix, config.shardOf ?? pulumi.getStack(), config.runtimeShardSize) : [];
  if (config.runtimeShard && !config.runtimes) {
    throw new MatrixError([{ ...configLocation("runtimes"), message: "a runtime shard (strata:runtimeShard) declares runtimes: strata:runtimes cannot be false", fix: "pulumi config rm strata:runtimes" }]);
  }
  const runtimeShard = config.runtimeShard ? shardOrError(shards, config.runtimeShard) : undefined;
  const plan = runtimeShard ? selectRuntimes(matrix, runtimeShard) : selectBases(matrix, config.bases, configLocation("bases"));
  const declaresRuntimes = config.runtimes && (runtimeShard !== undefined || shards.length === 0);
  checkPlanSize(plan, { bases: !runtimeShard && !config.baseShards, runtimes: declaresRuntimes, at: { file: config.matrix, line: 1, col: 1 }, shardSize: config.runtimeShardSize });

  const gh = config.github !== undefined && !config.shardOf ? githubConfig(config) : undefined;
  // A base shard pushes to its root stack's registry; every other stack owns one.
  const registry = config.shardOf
    ? new ShardRegistry("registry", { root: config.shardOf, kind: config.registry.kind, username: config.registry.username, password: config.registryPassword })
    : new Registry("registry", {
        config: config.registry,
        password: config.registryPassword,
        protectedTags: plan.bases.map((b) => b.tag),
        mutableRuntimeTags: mutableRuntimeTagFilters(plan.runtimes.flatMap((r) => r.tags), { defaultBranch: gh?.defaultBranch ?? "main", release: config.release }),
      });
  const destination = (repository: pulumi.Output<string>) => ({ repository, cacheRepository: registry.cacheRepository, auth: registry.auth });

  // With base shards, each base is built by a stack of its own and only read here.
  // A runtime shard builds FROM the refs its root publishes, checked before anything is declared.
  const rootRefs = runtimeShard ? await baseRefsFromRoot((registry as ShardRegistry).root, plan, config.shardOf!) : undefined;
  const shardRefs = !rootRefs && config.baseShards ? baseRefsFromShards(plan, pulumi.getStack()) : undefined;
  const bases = new Map(
    shardRefs || rootRefs ? [] : plan.bases.map((b) => [b.name, new BaseImage(`base-${b.name}`, { plan: b, dir: plan.dir, ...destination(registry.basesRepository) })]),
  );
  const baseRef = (name: string) => (rootRefs ? pulumi.output(rootRefs[name]) : shardRefs ? shardRefs.ref(name) : bases.get(name)!.ref);
  const baseRefs = rootRefs ? pulumi.output(rootRefs) : shardRefs ? shardRefs.refs : pulumi.output(Object.fromEntries([...bases].map(([name, image]) => [name, image.ref])));
  const runtimes = declaresRuntimes
    ? plan.runtimes.map((r) => {
        const tags = runtimeTags(r, { ...config.release, sha: config.release.sha.slice(0, 7) });
        const image = new RuntimeImage(`runtime-${r.name}`, {
          plan: r,
          dir: plan.dir,
          baseRef: baseRef(r.base),
          tags,
          ...destination(registry.runtimesRepository),
        });
        return { plan: r, image, tags };
      })
    : [];

  const fleet = config.shardOf ? undefined : declareFleet(config.fleet, gh);
  if (gh) declareGitHub(config, gh, plan, registry, baseRefs);

  return {
    registry: registry.address,
    basesRepository: registry.basesRepository,
    runtimesRepository: registry.runtimesRepository,
    cacheRepository: registry.cacheRepository,
    /** Base name → digest-pinned reference: what runtime builds and the GitHub variable read. */
    baseRefs,
    bases: Object.fromEntries(
      plan.bases.map((b) => [
        b.name,
        // `inputs` lets `strata plan --recorded` explain, in words, why a later matrix changes this base.
        { tag: b.tag, identity: b.hash, platforms: b.platforms, consumers: b.consumers, ref: pulumi.output(baseRefs).apply((r) => r[b.name]), inputs: b.inputs },
      ]),
    ),
    runtimes: Object.fromEntries(runtimes.map(({ plan: r, image, tags }) => [r.name, { base: r.base, tags, ref: image.ref }])),
    ...(runtimeShard ? { runtimeShard: runtimeShard.name } : {}),
    // The root of a sharded matrix: which shard stack declares which runtimes (`strata plan --shard NAME` shows one).
    ...(!config.shardOf && shards.length > 0
      ? { runtimeShards: shards.map((s) => ({ name: s.name, stack: s.stack, bases: s.bases, runtimes: s.runtimes.length })) }
      : {}),
    ...(fleet
      ? {
          fleet: {
            webhookUrl: fleet.webhookUrl,
            launchTemplateIds: fleet.launchTemplateIds,
            amiIds: fleet.amiIds,
            instanceRoleArn: fleet.instanceRoleArn,
            paramPrefix: fleet.paramPrefix,
          },
        }
      : {}),
  };
}

/** A runtime shard's group, or a config error at strata:runtimeShard naming the shards there are. */
function shardOrError(shards: ReturnType<typeof runtimeShards>, name: string) {
  try {
    return findRuntimeShard(shards, name);
  } catch (err) {
    throw new MatrixError([{ ...configLocation("runtimeShard"), message: (err as Error).message, fix: "set strata:runtimeShard to one of the shards `strata plan --stack ROOT` lists (and the root's strata:runtimeShardSize)" }]);
  }
}

/** The plan narrowed to one runtime shard: its runtimes and the bases they are built FROM (read, not built). */
function selectRuntimes(plan: BuildPlan, shard: { bases: string[]; runtimes: string[] }): BuildPlan {
  const bases = new Set(shard.bases);
  const runtimes = new Set(shard.runtimes);
  return { ...plan, bases: plan.bases.filter((b) => bases.has(b.name)), runtimes: plan.runtimes.filter((r) => runtimes.has(r.name)) };
}

/** The validated `strata:github` config; a problem is an error at the setting. */
function githubConfig(config: StackConfig): GitHubConfig {
  try {
    return parseGitHubConfig(config.github, "strata:github");
  } catch (err) {
    throw new MatrixError([{ ...configLocation("github"), message: (err as Error).message, fix: "correct strata:github in the stack config (see the README's GitHub section)" }]);
  }
}

/** OIDC roles, Actions variables and secrets (and, optionally, the generated workflows) on the configured repositories. */
function declareGitHub(config: StackConfig, gh: GitHubConfig, plan: BuildPlan, registry: Registry | ShardRegistry, baseRefs: pulumi.Input<Record<string, pulumi.Input<string>>>): GitHubWiring {
  const [bases, runtimes, cache] = registry.repositoryArns;
  return new GitHubWiring("github", {
    config: gh,
    registry: registry.address,
    repositoryArns: config.registry.kind === "ecr" ? { bases, runtimes, cache } : undefined,
    baseRefs,
    registryCredentials: config.registry.kind === "external" ? { username: config.registry.username!, password: config.registryPassword! } : undefined,
    workflows: gh.commitWorkflows
      ? generateWorkflows(plan, {
          stack: pulumi.getStack(),
          matrix: config.matrix,
          registryKind: config.registry.kind,
          defaultBranch: gh.defaultBranch,
          baseEnvironment: gh.baseEnvironment,
          runnerLabels: gh.runnerLabels,
          signing: gh.signing,
          pools: fleetPools(config.fleet, "strata:fleet"),
          runtimeShardSize: config.runtimeShardSize,
        })
      : undefined,
  });
}

/** The GPU runner fleet, when `strata:fleet.enabled`; its GitHub App comes from `strata:githubApp*` settings. */
function declareFleet(raw: unknown, gh: GitHubConfig | undefined): GpuRunnerFleet | undefined {
  let fleetConfig;
  try {
    fleetConfig = parseFleetConfig(raw ?? { enabled: false }, "strata:fleet");
  } catch (err) {
    throw new MatrixError([{ ...configLocation("fleet"), message: (err as Error).message, fix: "correct strata:fleet in the stack config (see the README's fleet section)" }]);
  }
  if (!fleetConfig.enabled) return undefined;
  const cfg = new pulumi.Config("strata");
  const missing = ["githubAppId", "githubAppInstallationId", "githubAppPrivateKey"].filter((k) => cfg.get(k) === undefined);
  if (missing.length > 0) {
    throw new MatrixError([
      {
        ...configLocation("fleet"),
        message: `the runner fleet needs its GitHub App: ${missing.map((k) => `strata:${k}`).join(", ")} not set`,
        fix: "pulumi config set strata:githubAppId ID; pulumi config set strata:githubAppInstallationId ID; pulumi config set --secret strata:githubAppPrivateKey < app.pem",
      },
    ]);
  }
  // The fleet serves strata:github.repositories unless strata:fleet.repositories says otherwise.
  const served = fleetConfig.repositories ?? gh?.repositories ?? [];
  const foreign = served.filter((r) => r.split("/")[0]!.toLowerCase() !== fleetConfig.runnerOwner.toLowerCase());
  if (served.length === 0 || foreign.length > 0) {
    throw new MatrixError([
      {
        ...configLocation("fleet"),
        message: served.length === 0 ? "the runner fleet serves only configured repositories, and none is configured" : `the runner fleet cannot serve ${foreign.join(", ")}: not owned by runnerOwner "${fleetConfig.runnerOwner}"`,
        fix: 'set strata:github.repositories (or strata:fleet.repositories) to the "owner/name" repositories of runnerOwner whose base builds the fleet runs',
      },
    ]);
  }
  return new GpuRunnerFleet("fleet", {
    config: fleetConfig,
    repositories: served,
    ...(gh ? { defaultBranch: gh.defaultBranch } : {}),
    githubApp: { appId: cfg.require("githubAppId"), installationId: cfg.require("githubAppInstallationId"), privateKey: cfg.requireSecret("githubAppPrivateKey") },
  });
}
