import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { RegistryConfig, ReleaseConfig } from "../config.ts";
import { renderTemplate } from "../matrix/plan.ts";

/** Credentials a builder pushes with. */
export interface RegistryAuth {
  address: pulumi.Input<string>;
  username: pulumi.Input<string>;
  password: pulumi.Input<string>;
}

export interface RegistryArgs {
  /** The `strata:registry` stack config (kind, address, prefix, ECR options). */
  config: RegistryConfig;
  /** Password of an `external` registry, as a secret. Required for `external`, unused otherwise. */
  password?: pulumi.Input<string>;
  /**
   * Tags that must outlive every lifecycle rule: the base tags the current matrix uses. A rule that would match
   * one is refused. Default none.
   */
  protectedTags?: string[];
  /**
   * ECR: wildcard filters of the runtime tags that stay mutable (`mutableRuntimeTagFilters`); every other runtime
   * tag, i.e. every released one, is immutable. Default: only pull-request and attestation tags (`pr-*`, `sha256-*`).
   */
  mutableRuntimeTags?: string[];
}

/** Tags of pull-request builds start with this; lifecycle rules expire them. */
export const PULL_REQUEST_TAG_PREFIX = "pr-";

/**
 * Where strata's images live: three repositories (bases, runtimes, build cache) in ECR, in a local registry on
 * loopback, or in any external registry. Base tags are content-addressed, so the bases repository is
 * tag-immutable in ECR; released runtime tags are immutable too (only branch and pull-request tags move); cache
 * tags are rewritten on every build, so the cache has a mutable repository of its own.
 */
export class Registry extends pulumi.ComponentResource {
  /** Registry host[:port]. */
  readonly address: pulumi.Output<string>;
  readonly basesRepository: pulumi.Output<string>;
  readonly runtimesRepository: pulumi.Output<string>;
  readonly cacheRepository: pulumi.Output<string>;
  /** ARNs of the ECR repositories (empty for other kinds), for push policies. */
  readonly repositoryArns: pulumi.Output<string>[];
  /** Credentials for builders, or undefined where the registry needs none (local). */
  readonly auth?: RegistryAuth;
  readonly kind: RegistryConfig["kind"];

  constructor(name: string, args: RegistryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("strata:registry:Registry", name, {}, opts);
    const { config } = args;
    this.kind = config.kind;
    const repoNames = { bases: `${config.prefix}/bases`, runtimes: `${config.prefix}/runtimes`, cache: `${config.prefix}/cache` };

    if (config.kind === "ecr") {
      const repos = {
        bases: ecrRepository(`${name}-bases`, repoNames.bases, [PULL_REQUEST_FILTER, DIGEST_TAG_FILTER], config, this),
        runtimes: ecrRepository(`${name}-runtimes`, repoNames.runtimes, args.mutableRuntimeTags ?? [PULL_REQUEST_FILTER, DIGEST_TAG_FILTER], config, this),
        cache: ecrRepository(`${name}-cache`, repoNames.cache, "MUTABLE", config, this),
      };
      const rules = lifecycleRules(config);
      checkProtectedTags(rules, args.protectedTags ?? []);
      for (const [key, repo] of Object.entries(repos)) {
        new aws.ecr.LifecyclePolicy(`${name}-${key}`, { repository: repo.name, policy: JSON.stringify({ rules }) }, { parent: this });
      }
      const token = aws.ecr.getAuthorizationTokenOutput({ registryId: repos.bases.registryId }, { parent: this });
      this.address = token.proxyEndpoint.apply((e) => e.replace(/^https?:\/\//, ""));
      this.basesRepository = repos.bases.repositoryUrl;
      this.runtimesRepository = repos.runtimes.repositoryUrl;
      this.cacheRepository = repos.cache.repositoryUrl;
      this.repositoryArns = Object.values(repos).map((r) => r.arn);
      this.auth = { address: this.address, username: token.userName, password: pulumi.secret(token.password) };
    } else {
      const address = config.address ?? "localhost:5000";
      this.address = pulumi.output(address);
      this.basesRepository = pulumi.output(`${address}/${repoNames.bases}`);
      this.runtimesRepository = pulumi.output(`${address}/${repoNames.runtimes}`);
      this.cacheRepository = pulumi.output(`${address}/${repoNames.cache}`);
      this.repositoryArns = [];
      if (config.kind === "external") {
        this.auth = { address, username: config.username!, password: pulumi.secret(pulumi.output(args.password!)) };
      }
    }
    this.registerOutputs({
      address: this.address,
      basesRepository: this.basesRepository,
      runtimesRepository: this.runtimesRepository,
      cacheRepository: this.cacheRepository,
    });
  }
}

/** One ECR lifecycle rule, as the ECR API takes it. */
export interface LifecycleRule {
  rulePriority: number;
  description: string;
  selection: { tagStatus: "untagged" | "tagged" | "any"; tagPatternList?: string[]; countType: "sinceImagePushed"; countUnit: "days"; countNumber: number };
  action: { type: "expire" };
}

/** Expire untagged images and pull-request tags; never anything else, so no base in use can expire. */
export function lifecycleRules(config: Pick<RegistryConfig, "untaggedExpiryDays" | "pullRequestExpiryDays">): LifecycleRule[] {
  return [
    {
      rulePriority: 1,
      description: "Expire untagged images (superseded pushes and cache manifests)",
      selection: { tagStatus: "untagged", countType: "sinceImagePushed", countUnit: "days", countNumber: config.untaggedExpiryDays },
      action: { type: "expire" },
    },
    {
      rulePriority: 2,
      description: "Expire pull-request tags",
      selection: { tagStatus: "tagged", tagPatternList: [`${PULL_REQUEST_TAG_PREFIX}*`], countType: "sinceImagePushed", countUnit: "days", countNumber: config.pullRequestExpiryDays },
      action: { type: "expire" },
    },
  ];
}

/** Throws when a lifecycle rule would expire one of the given tags. ECR wildcards: `*` matches any run. */
export function checkProtectedTags(rules: LifecycleRule[], tags: string[]): void {
  for (const rule of rules) {
    for (const pattern of rule.selection.tagPatternList ?? []) {
      const re = new RegExp(`^${pattern.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
      const hit = tags.find((t) => re.test(t));
      if (hit) {
        throw new pulumi.RunError(
          `lifecycle rule '${rule.description}' (pattern ${pattern}) would expire tag '${hit}', which the matrix uses; rename the base so its tag does not start with '${PULL_REQUEST_TAG_PREFIX}'`,
        );
      }
    }
  }
}

/** Pull-request tags are rebuilt under the same name within a pull request. */
const PULL_REQUEST_FILTER = `${PULL_REQUEST_TAG_PREFIX}*`;
/**
 * Tags named after an image digest: cosign's signatures (`sha256-<hex>.sig`), strata's attestations
 * (`sha256-<hex>.spdx`, `.provenance`) and the OCI referrers index (`sha256-<hex>`). cosign re-pushes the `.sig` tag
 * to add a signature (a re-run signs again) and re-attesting or adding a referrer moves the others, which a
 * tag-immutable repository refuses: they stay mutable (only the push roles can write them). Being tagged, no
 * lifecycle rule expires them while their image is kept.
 */
export const DIGEST_TAG_FILTER = "sha256-*";
/** ECR takes at most five tag mutability exclusion filters, each of these characters. */
export const MAX_EXCLUSION_FILTERS = 5;
const EXCLUSION_FILTER = /^[0-9a-zA-Z._*-]{1,128}$/;

/**
 * The runtime tags that move by design, as ECR wildcard filters: a tag rendered for a non-release build (the
 * default branch's builds, whose `{version}` is the branch name, and the stack's own `strata:release.version` when
 * it is not a `v…` release) and a tag that names no release at all (no `{version}` and no `{sha}`, e.g.
 * `{name}-latest`). `{name}` and `{base}` become `*`, and `{sha}` too (a branch tag is rebuilt at every commit).
 * Everything else, i.e. every tag of a `v…` release, stays immutable. Pull-request tags (`pr-*`) and signature and
 * attestation tags (`sha256-*`) are always mutable.
 */
export function mutableRuntimeTagFilters(templates: readonly string[], opts: { defaultBranch: string; release: ReleaseConfig }): string[] {
  const versions = [...new Set([opts.defaultBranch, ...(opts.release.version.startsWith("v") ? [] : [opts.release.version])])];
  const filters = new Set<string>([PULL_REQUEST_FILTER, DIGEST_TAG_FILTER]);
  for (const template of new Set(templates)) {
    const has = (p: string) => template.includes(`{${p}}`);
    const render = (version: string) =>
      renderTemplate(template, { name: "*", base: "*", version, branch: opts.release.branch, sha: "*" }).value.replace(/\*+/g, "*");
    if (has("version")) for (const v of versions) filters.add(render(v));
    else if (!has("sha")) filters.add(render(""));
  }
  const list = [...filters];
  const bad = list.filter((f) => !EXCLUSION_FILTER.test(f));
  if (bad.length > 0) {
    throw new pulumi.RunError(`runtime tags: mutable tag filter(s) ${bad.map((f) => `'${f}'`).join(", ")} are not ECR tag filters (letters, digits, '.', '_', '-', '*'): check strata:release and the default branch name`);
  }
  if (list.length > MAX_EXCLUSION_FILTERS) {
    throw new pulumi.RunError(
      `runtime tags: ${list.length} kinds of mutable tag (${list.join(", ")}), but ECR keeps at most ${MAX_EXCLUSION_FILTERS} mutable-tag filters per repository: ` +
        `use fewer runtime tag templates (defaults.runtimeTags in the matrix) or a strata:release.version starting with 'v'`,
    );
  }
  return list;
}

function ecrRepository(
  name: string,
  repositoryName: string,
  mutability: "MUTABLE" | string[],
  config: RegistryConfig,
  parent: pulumi.Resource,
): aws.ecr.Repository {
  return new aws.ecr.Repository(
    name,
    {
      name: repositoryName,
      imageTagMutability: mutability === "MUTABLE" ? "MUTABLE" : "IMMUTABLE_WITH_EXCLUSION",
      imageTagMutabilityExclusionFilters: mutability === "MUTABLE" ? undefined : mutability.map((filter) => ({ filter, filterType: "WILDCARD" })),
      imageScanningConfiguration: { scanOnPush: true },
      encryptionConfigurations: [config.kmsKeyArn ? { encryptionType: "KMS", kmsKey: config.kmsKeyArn } : { encryptionType: "AES256" }],
      forceDelete: config.forceDelete,
      tags: { "strata:repository": repositoryName },
    },
    { parent },
  );
}
