import * as pulumi from "@pulumi/pulumi";
import { GpuRunnerFleet, parseFleetConfig } from "./components/fleet/index.ts";
import { BaseImage, RuntimeImage } from "./components/images.ts";
import { Registry } from "./components/registry.ts";
import { configLocation, readStackConfig } from "./config.ts";
import { MatrixError, formatProblem } from "./matrix/errors.ts";
import { loadMatrix } from "./matrix/load.ts";
import { runtimeTags, selectBases } from "./matrix/plan.ts";

/**
 * The strata program: stack config and matrix in, registry, base images and runtime images out. User mistakes
 * (matrix, Dockerfiles, config) end the run with their file:line:col messages and no stack trace.
 */
export default async function strata() {
  try {
    return declare();
  } catch (err) {
    if (err instanceof MatrixError) throw new pulumi.RunError(err.message);
    throw err;
  }
}

function declare() {
  const config = readStackConfig();
  const plan = selectBases(loadMatrix(config.matrix), config.bases, configLocation("bases"));
  for (const w of plan.warnings) pulumi.log.warn(formatProblem(w, "warning"));

  const registry = new Registry("registry", {
    config: config.registry,
    password: config.registryPassword,
    protectedTags: plan.bases.map((b) => b.tag),
  });
  const destination = (repository: pulumi.Output<string>) => ({ repository, cacheRepository: registry.cacheRepository, auth: registry.auth });

  const bases = new Map(
    plan.bases.map((b) => [b.name, new BaseImage(`base-${b.name}`, { plan: b, dir: plan.dir, ...destination(registry.basesRepository) })]),
  );
  const runtimes = config.runtimes
    ? plan.runtimes.map((r) => {
        const tags = runtimeTags(r, { ...config.release, sha: config.release.sha.slice(0, 7) });
        const image = new RuntimeImage(`runtime-${r.name}`, {
          plan: r,
          dir: plan.dir,
          baseRef: bases.get(r.base)!.ref,
          tags,
          ...destination(registry.runtimesRepository),
        });
        return { plan: r, image, tags };
      })
    : [];

  const fleet = declareFleet(config.fleet, registry.repositoryArns);

  return {
    registry: registry.address,
    basesRepository: registry.basesRepository,
    runtimesRepository: registry.runtimesRepository,
    /** Base name → digest-pinned reference: what runtime builds and the GitHub variable read. */
    baseRefs: pulumi.output(Object.fromEntries([...bases].map(([name, image]) => [name, image.ref]))),
    bases: Object.fromEntries(
      plan.bases.map((b) => [
        b.name,
        // `inputs` lets `strata plan --recorded` explain, in words, why a later matrix changes this base.
        { tag: b.tag, identity: b.hash, platforms: b.platforms, consumers: b.consumers, ref: bases.get(b.name)!.ref, inputs: b.inputs },
      ]),
    ),
    runtimes: Object.fromEntries(runtimes.map(({ plan: r, image, tags }) => [r.name, { base: r.base, tags, ref: image.ref }])),
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

/** The GPU runner fleet, when `strata:fleet.enabled`; its GitHub App comes from `strata:githubApp*` settings. */
function declareFleet(raw: unknown, pushRepositoryArns: pulumi.Input<string>[]): GpuRunnerFleet | undefined {
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
  return new GpuRunnerFleet("fleet", {
    config: fleetConfig,
    githubApp: { appId: cfg.require("githubAppId"), installationId: cfg.require("githubAppInstallationId"), privateKey: cfg.requireSecret("githubAppPrivateKey") },
    pushRepositoryArns,
  });
}
