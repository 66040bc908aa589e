import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { RegistryConfig } from "../config.ts";

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
}

/** Tags of pull-request builds start with this; lifecycle rules expire them. */
export const PULL_REQUEST_TAG_PREFIX = "pr-";

/**
 * Where strata's images live: three repositories (bases, runtimes, build cache) in ECR, in a local registry on
 * loopback, or in any external registry. Base tags are content-addressed, so the bases repository is
 * tag-immutable in ECR; cache tags are rewritten on every build, so the cache has a mutable repository of its own.
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
        bases: ecrRepository(`${name}-bases`, repoNames.bases, "IMMUTABLE_WITH_EXCLUSION", config, this),
        runtimes: ecrRepository(`${name}-runtimes`, repoNames.runtimes, "MUTABLE", config, this),
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

function ecrRepository(
  name: string,
  repositoryName: string,
  mutability: "MUTABLE" | "IMMUTABLE_WITH_EXCLUSION",
  config: RegistryConfig,
  parent: pulumi.Resource,
): aws.ecr.Repository {
  return new aws.ecr.Repository(
    name,
    {
      name: repositoryName,
      imageTagMutability: mutability,
      // Pull-request tags are rebuilt under the same name within a pull request.
      imageTagMutabilityExclusionFilters:
        mutability === "IMMUTABLE_WITH_EXCLUSION" ? [{ filter: `${PULL_REQUEST_TAG_PREFIX}*`, filterType: "WILDCARD" }] : undefined,
      imageScanningConfiguration: { scanOnPush: true },
      encryptionConfigurations: [config.kmsKeyArn ? { encryptionType: "KMS", kmsKey: config.kmsKeyArn } : { encryptionType: "AES256" }],
      forceDelete: config.forceDelete,
      tags: { "strata:repository": repositoryName },
    },
    { parent },
  );
}
