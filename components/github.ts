import * as aws from "@pulumi/aws";
import * as github from "@pulumi/github";
import * as pulumi from "@pulumi/pulumi";
import {
  GITHUB_OIDC_URL,
  GitHubConfig,
  GitHubConfigError,
  OIDC_SUBJECT_CLAIMS,
  RELEASE_TAG_PATTERN,
  RoleKey,
  SECRETS,
  STS_AUDIENCE,
  VARIABLES,
  checkTrustSubjects,
  rolePolicy,
  stableJson,
  trustPolicy,
  trustSubjects,
} from "./github-trust.ts";

export * from "./github-trust.ts";

/** GitHub's id of the base repository role "Admin" (ruleset bypass actors of type `RepositoryRole`). */
export const REPOSITORY_ADMIN_ROLE_ID = 5;

export interface GitHubWiringArgs {
  /** The parsed `strata:github` config (`parseGitHubConfig`). */
  config: GitHubConfig;
  /** Registry host[:port] (the Registry's `address`), for `STRATA_REGISTRY`. */
  registry: pulumi.Input<string>;
  /**
   * ARNs of the ECR repositories (the Registry's `repositoryArns`: bases, runtimes, cache). When absent (a
   * registry outside AWS) no OIDC provider or roles are created and no role variables are set. Default none.
   */
  repositoryArns?: { bases: pulumi.Input<string>; runtimes: pulumi.Input<string>; cache: pulumi.Input<string> };
  /** Base name → digest-pinned ref (the program's `baseRefs`), for `STRATA_BASE_REFS`. */
  baseRefs: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** AWS region for `STRATA_AWS_REGION`. Default the provider's region (aws.getRegion). */
  region?: pulumi.Input<string>;
  /** For an `external` registry: the user name (a variable) and the password (a secret). Default none. */
  registryCredentials?: { username: pulumi.Input<string>; password: pulumi.Input<string> };
  /** More Actions secrets to set, e.g. `PULUMI_ACCESS_TOKEN` for the base builds. Values should be secrets. Default none. */
  extraSecrets?: Record<string, pulumi.Input<string>>;
  /** Workflow files (path → content, from `generateWorkflows`), committed when `config.commitWorkflows`. Default none. */
  workflows?: Record<string, string>;
  /** GitHub token for the providers (one per repository owner). Default the GITHUB_TOKEN environment variable. */
  token?: pulumi.Input<string>;
}

/**
 * GitHub Actions wiring: AWS access by OIDC (no keys anywhere): a GitHub OIDC provider (or the account's existing
 * one), four roles whose trust is limited by the token's `sub` and `aud` claims and whose policies reach only
 * strata's repositories. Each repository's OIDC subject is customised to carry `job_workflow_ref`, so push-bases
 * trusts only the base-build workflow on the default branch (or its protected environment), push-runtimes only the
 * runtime workflow on the default branch and on release tags (`v*`, which a tag ruleset lets only repository admins
 * create and nobody move or delete), read-only any workflow run for a pull request, gc only the base-GC workflow on
 * the default branch. Also the Actions variables and
 * secrets the generated workflows read, all taken from outputs so they change exactly when the infrastructure does.
 */
export class GitHubWiring extends pulumi.ComponentResource {
  /** Role ARNs by role, when the registry is ECR. */
  readonly roleArns?: Record<RoleKey, pulumi.Output<string>>;
  readonly oidcProviderArn?: pulumi.Output<string>;
  /** The JSON `STRATA_BASE_REFS` holds. */
  readonly baseRefsJson: pulumi.Output<string>;
  /** Names of the variables set on each repository. */
  readonly variableNames: string[];

  constructor(name: string, args: GitHubWiringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("strata:github:GitHubWiring", name, {}, opts);
    const { config } = args;
    const subs = trustSubjects(config);
    const unsafe = (Object.entries(subs) as [RoleKey, string[]][]).flatMap(([role, s]) => checkTrustSubjects(s, role, config.allowUnrestrictedTrust).map((p) => `role ${role}: ${p}`));
    if (unsafe.length > 0) throw new GitHubConfigError(`unsafe trust in strata:github:\n  ${unsafe.join("\n  ")}`);

    this.baseRefsJson = pulumi.output(args.baseRefs).apply((refs) => stableJson(refs));
    const variables: Record<string, pulumi.Input<string>> = { [VARIABLES.registry]: args.registry, [VARIABLES.baseRefs]: this.baseRefsJson };
    const secrets: Record<string, pulumi.Input<string>> = { ...(args.extraSecrets ?? {}) };

    if (args.repositoryArns) {
      const arns = pulumi.output(args.repositoryArns);
      this.oidcProviderArn = config.oidcProviderArn
        ? pulumi.output(config.oidcProviderArn)
        : new aws.iam.OpenIdConnectProvider(`${name}-oidc`, { url: GITHUB_OIDC_URL, clientIdLists: [STS_AUDIENCE], tags: { "strata:component": "github" } }, { parent: this }).arn;
      const role = (key: RoleKey, suffix: string) => {
        const r = new aws.iam.Role(
          `${name}-${suffix}`,
          {
            description: `strata ${suffix}: assumed by GitHub Actions (${subs[key].join(", ")})`.slice(0, 1000),
            assumeRolePolicy: this.oidcProviderArn!.apply((arn) => stableJson(trustPolicy(arn, subs[key]))),
            maxSessionDuration: key === "pushBases" ? 12 * 3600 : 3600,
            tags: { "strata:role": suffix },
          },
          { parent: this },
        );
        new aws.iam.RolePolicy(`${name}-${suffix}`, { role: r.id, policy: arns.apply((a) => stableJson(rolePolicy(key, a))) }, { parent: this });
        return r.arn;
      };
      this.roleArns = { pushBases: role("pushBases", "push-bases"), pushRuntimes: role("pushRuntimes", "push-runtimes"), readOnly: role("readOnly", "read-only"), gc: role("gc", "gc") };
      variables[VARIABLES.pushBases] = this.roleArns.pushBases;
      variables[VARIABLES.pushRuntimes] = this.roleArns.pushRuntimes;
      variables[VARIABLES.readOnly] = this.roleArns.readOnly;
      variables[VARIABLES.gc] = this.roleArns.gc;
      variables[VARIABLES.region] = args.region ?? aws.getRegionOutput({}, { parent: this }).region;
    } else if (args.region) {
      variables[VARIABLES.region] = args.region;
    }
    if (args.registryCredentials) {
      variables[VARIABLES.registryUsername] = args.registryCredentials.username;
      secrets[SECRETS.registryPassword] = pulumi.secret(pulumi.output(args.registryCredentials.password));
    }
    for (const secretName of Object.keys(secrets)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(secretName) || /^GITHUB_/i.test(secretName)) {
        throw new GitHubConfigError(`Actions secret name '${secretName}' is invalid: use letters, digits and '_', not starting with a digit or GITHUB_`);
      }
    }
    if (config.commitWorkflows && !args.workflows) {
      throw new GitHubConfigError("strata:github.commitWorkflows is true but no workflows were passed: give GitHubWiring the files from generateWorkflows(plan, ...)");
    }
    this.variableNames = Object.keys(variables).sort();

    const providers = new Map<string, github.Provider>();
    for (const repository of config.repositories) {
      const [owner, repo] = repository.split("/");
      let provider = providers.get(owner.toLowerCase());
      if (!provider) {
        provider = new github.Provider(`${name}-${owner.toLowerCase()}`, { owner, token: args.token }, { parent: this });
        providers.set(owner.toLowerCase(), provider);
      }
      const child = { parent: this, provider };
      const id = `${name}-${owner}-${repo}`.toLowerCase();
      if (this.roleArns) {
        // The roles' trust subjects are in this format: without it no job of the repository could assume them.
        new github.ActionsRepositoryOidcSubjectClaimCustomizationTemplate(`${id}-oidc-subject`, { repository: repo, useDefault: false, includeClaimKeys: [...OIDC_SUBJECT_CLAIMS] }, child);
        // push-runtimes trusts release tags: only repository admins may create them, nobody may move or delete one.
        new github.RepositoryRuleset(
          `${id}-release-tags`,
          {
            repository: repo,
            name: "strata release tags",
            target: "tag",
            enforcement: "active",
            conditions: { refName: { includes: [RELEASE_TAG_PATTERN], excludes: [] } },
            rules: { creation: true, update: true, deletion: true },
            bypassActors: [{ actorType: "RepositoryRole", actorId: REPOSITORY_ADMIN_ROLE_ID, bypassMode: "always" }],
          },
          child,
        );
      }
      for (const variableName of this.variableNames) {
        new github.ActionsVariable(`${id}-${variableName}`, { repository: repo, variableName, value: variables[variableName] }, child);
      }
      for (const secretName of Object.keys(secrets).sort()) {
        new github.ActionsSecret(`${id}-${secretName}`, { repository: repo, secretName, value: pulumi.secret(pulumi.output(secrets[secretName])) }, child);
      }
      if (config.commitWorkflows) {
        for (const [file, content] of Object.entries(args.workflows!).sort(([a], [b]) => (a < b ? -1 : 1))) {
          new github.RepositoryFile(
            `${id}-${file}`,
            { repository: repo, file, content, branch: config.defaultBranch, commitMessage: `strata: update ${file}`, overwriteOnCreate: true },
            child,
          );
        }
      }
    }
    this.registerOutputs({ roleArns: this.roleArns, oidcProviderArn: this.oidcProviderArn, baseRefsJson: this.baseRefsJson });
  }
}
