import { z } from "zod";
import { WORKFLOW_FILES } from "../workflows/generate.ts";
import { DEFAULT_LABELS } from "./fleet/config.ts";

// What GitHub Actions may do in AWS and which variables it gets: the `strata:github` config, the roles' trust
// subjects and policies. Pure (no Pulumi), so the CLI reads it without loading the Pulumi SDK.

/** GitHub's OIDC issuer, and the audience `aws-actions/configure-aws-credentials` asks for. */
export const GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com";
export const GITHUB_OIDC_HOST = "token.actions.githubusercontent.com";
export const STS_AUDIENCE = "sts.amazonaws.com";
/** sigstore's public RFC 3161 timestamp authority. */
export const DEFAULT_TIMESTAMP_URL = "https://timestamp.sigstore.dev/api/v1/timestamp";

/** The Actions variables the wiring sets on every repository; the generated workflows read exactly these. */
export const VARIABLES = {
  registry: "STRATA_REGISTRY",
  region: "STRATA_AWS_REGION",
  pushBases: "STRATA_ROLE_PUSH_BASES",
  pushRuntimes: "STRATA_ROLE_PUSH_RUNTIMES",
  readOnly: "STRATA_ROLE_READ_ONLY",
  gc: "STRATA_ROLE_GC",
  baseRefs: "STRATA_BASE_REFS",
  registryUsername: "STRATA_REGISTRY_USERNAME",
} as const;
export const SECRETS = { registryPassword: "STRATA_REGISTRY_PASSWORD" } as const;

const OWNER = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})";
const REPO_NAME = "[A-Za-z0-9._-]{1,100}";
const REPOSITORY = new RegExp(`^${OWNER}/${REPO_NAME}$`);
/** A git ref or environment name with no wildcard: trust must name one branch or environment. */
const plainName = (what: string) =>
  z
    .string()
    .min(1, `must not be empty`)
    .regex(/^[^*?\s[\]]+$/, `must name one ${what}, without wildcards (*, ?) or spaces`);
const label = z.string().min(1).regex(/^[^,\s]+$/, "must not contain spaces or commas");
const subjects = z.array(z.string().min(1)).default([]);

const GitHubConfigSchema = z.strictObject({
  /** Repositories (`owner/name`) whose workflows may assume the roles and that get the variables and secrets. */
  repositories: z
    .array(z.string().regex(REPOSITORY, 'must be "owner/name", e.g. "acme/strata" (a GitHub owner, a slash, the repository name)'))
    .min(1, 'must list at least one repository ("owner/name")'),
  /** The branch that may push bases and runtimes. Default `main`. */
  defaultBranch: plainName("branch").default("main"),
  /** A protected environment: when set, only jobs in it may push bases (not the default branch). Default none. */
  baseEnvironment: plainName("environment").optional(),
  /** ARN of an existing GitHub OIDC provider in the account (one per account); default: create one. */
  oidcProviderArn: z
    .string()
    .regex(/^arn:aws[a-z-]*:iam::\d{12}:oidc-provider\/token\.actions\.githubusercontent\.com$/, "must be the ARN of the account's token.actions.githubusercontent.com OIDC provider")
    .optional(),
  /**
   * Extra `sub` claims a role trusts, in the customised format strata sets on the repositories
   * (`repo:OWNER/NAME:CONTEXT:job_workflow_ref:OWNER/NAME/.github/workflows/FILE@REF`), e.g.
   * `repo:acme/strata:ref:refs/heads/release:job_workflow_ref:acme/strata/.github/workflows/strata-build-bases.yml@refs/heads/release`.
   * Default none.
   */
  extraSubjects: z.strictObject({ pushBases: subjects, pushRuntimes: subjects, readOnly: subjects, gc: subjects }).prefault({}),
  /** Accept trust subjects without a branch, tag or environment restriction (`repo:acme/strata:*`). Default false. */
  allowUnrestrictedTrust: z.boolean().default(false),
  /** Labels base-build jobs run on; some fleet pool must carry all of them. Default the fleet's default pool labels. */
  runnerLabels: z.array(label).min(1).default([...DEFAULT_LABELS]),
  /** Also keep the generated workflows in the repositories (github.RepositoryFile). Default false. */
  commitWorkflows: z.boolean().default(false),
  /** How the generated workflows sign pushed images (cosign, keyless with the job's OIDC identity). Default below. */
  signing: z
    .strictObject({
      /**
       * Record each signature in sigstore's public Rekor log (what `cosign verify` checks by default). A private
       * repository may not want its repository and workflow names in a public log: false signs without it, dated by
       * `timestampUrl` instead, and verifies with `--insecure-ignore-tlog --use-signed-timestamps`. Default true.
       */
      transparencyLog: z.boolean().default(true),
      /** RFC 3161 timestamp authority for `transparencyLog: false`. Default `https://timestamp.sigstore.dev/api/v1/timestamp`. */
      timestampUrl: z.url({ protocol: /^https$/ }).default(DEFAULT_TIMESTAMP_URL),
    })
    .prefault({}),
}).superRefine((config, ctx) => {
  // Each extra subject is checked at its own field (strata:github.extraSubjects.<role>[i]).
  for (const [role, subs] of Object.entries(config.extraSubjects) as [RoleKey, string[]][]) {
    subs.forEach((sub, i) => {
      const problem = subjectProblem(sub, role, config.allowUnrestrictedTrust);
      if (problem) ctx.addIssue({ code: "custom", path: ["extraSubjects", role, i], message: problem });
    });
  }
});

export type GitHubConfig = z.output<typeof GitHubConfigSchema>;

/** Bad `strata:github` config: every problem, one a line, as `<key path>: <what is wrong and what to do>`. */
export class GitHubConfigError extends Error {}

/**
 * Validates the raw `strata:github` stack config. `where` names the key in messages (e.g. `strata:github` or
 * `Pulumi.prod.yaml strata:github`). Trust subjects are checked too (see `checkTrustSubjects`).
 */
export function parseGitHubConfig(raw: unknown, where = "strata:github"): GitHubConfig {
  const result = GitHubConfigSchema.safeParse(raw ?? {}, { reportInput: true });
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const path = where + issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
      if (issue.code === "unrecognized_keys") {
        return `  ${path}: unknown key(s) ${issue.keys.map((k) => `'${k}'`).join(", ")}; allowed: ${Object.keys(GitHubConfigSchema.shape).join(", ")}`;
      }
      const got = "input" in issue && issue.input !== undefined ? ` (got ${JSON.stringify(issue.input)})` : "";
      return `  ${path}: ${issue.message.replace(/^Invalid input: /, "")}${got}`;
    });
    throw new GitHubConfigError(`invalid stack config ${where} (fix it in Pulumi.<stack>.yaml, e.g. pulumi config set --path ...):\n${lines.join("\n")}`);
  }
  const config = result.data;
  const trust = trustSubjects(config);
  const problems = (Object.entries(trust) as [RoleKey, string[]][]).flatMap(([role, subs]) => checkTrustSubjects(subs, role, config.allowUnrestrictedTrust).map((p) => `  ${where}: role ${role}: ${p}`));
  if (problems.length > 0) throw new GitHubConfigError(`unsafe trust in ${where}:\n${problems.join("\n")}`);
  return config;
}

/** The four roles: push bases, push runtimes, pull (pull requests), base GC (delete unused bases). */
export type RoleKey = "pushBases" | "pushRuntimes" | "readOnly" | "gc";

/**
 * The claims strata puts in each repository's OIDC `sub` (ActionsRepositoryOidcSubjectClaimCustomizationTemplate).
 * GitHub then writes `sub` as `repo:OWNER/NAME:CONTEXT:job_workflow_ref:WORKFLOW@REF`, where CONTEXT is
 * `ref:refs/heads/B`, `ref:refs/tags/T`, `environment:E` or `pull_request` ("Customizing the subject claims",
 * docs.github.com, about-security-hardening-with-openid-connect: `repo:octo-org/octo-repo:environment:prod:job_workflow_ref:octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main`).
 */
export const OIDC_SUBJECT_CLAIMS = ["repo", "context", "job_workflow_ref"] as const;

/** Release tags: the runtime push role trusts them, the tag ruleset protects them, ECR keeps them immutable. */
export const RELEASE_TAG_PATTERN = "refs/tags/v*";

/** `OWNER/NAME/.github/workflows/FILE@REF`, the `job_workflow_ref` of a job of that workflow run at that ref. */
export function workflowRef(repository: string, file: string, ref: string): string {
  return `${repository}/${file}@${ref}`;
}

/**
 * The certificate identity Fulcio gives the base-build workflow on the default branch, `https://github.com/` +
 * its `job_workflow_ref`: the only signer a runtime build accepts for a base (the same workflow and branch the
 * push-bases role trusts).
 */
export function baseSignerIdentity(repository: string, defaultBranch: string): string {
  return `https://github.com/${workflowRef(repository, WORKFLOW_FILES.bases, `refs/heads/${defaultBranch}`)}`;
}

/**
 * With several repositories (strata:github.repositories), the signers a runtime build accepts for a base: the base
 * workflow on the default branch of any of them, as an anchored RE2 pattern for `cosign verify
 * --certificate-identity-regexp` (the same set of workflows the push-bases role trusts).
 */
export function baseSignerPattern(repositories: readonly string[], defaultBranch: string): string {
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const file = esc(WORKFLOW_FILES.bases.replace(/^\.github\/workflows\//, ""));
  return `^https://github\\.com/(?:${repositories.map(esc).join("|")})/\\.github/workflows/${file}@${esc(`refs/heads/${defaultBranch}`)}$`;
}

/** The `token.actions.githubusercontent.com:sub` values each role trusts, for every configured repository. */
export function trustSubjects(config: Pick<GitHubConfig, "repositories" | "defaultBranch" | "baseEnvironment" | "extraSubjects">): Record<RoleKey, string[]> {
  const per = (f: (repo: string) => string[]) => config.repositories.flatMap(f);
  const branch = `refs/heads/${config.defaultBranch}`;
  const sub = (repo: string, context: string, file: string, ref: string) => `repo:${repo}:${context}:job_workflow_ref:${workflowRef(repo, file, ref)}`;
  return {
    // Only the base-build workflow, as it is on the default branch (in the protected environment when one is set).
    pushBases: [
      ...per((r) => [sub(r, config.baseEnvironment ? `environment:${config.baseEnvironment}` : `ref:${branch}`, WORKFLOW_FILES.bases, branch)]),
      ...config.extraSubjects.pushBases,
    ],
    // Only the runtime workflow: on the default branch (branch tags such as `app-main`) and on protected release tags.
    pushRuntimes: [
      ...per((r) => [sub(r, `ref:${branch}`, WORKFLOW_FILES.runtimes, branch), sub(r, `ref:${RELEASE_TAG_PATTERN}`, WORKFLOW_FILES.runtimes, RELEASE_TAG_PATTERN)]),
      ...config.extraSubjects.pushRuntimes,
    ],
    // Any workflow of the repository itself, run for a pull request: pull only.
    readOnly: [...per((r) => [`repo:${r}:pull_request:job_workflow_ref:${r}/.github/workflows/*`]), ...config.extraSubjects.readOnly],
    // Only the scheduled base-GC workflow, as it is on the default branch: the one role that may delete images.
    gc: [...per((r) => [sub(r, `ref:${branch}`, WORKFLOW_FILES.gc, branch)]), ...config.extraSubjects.gc],
  };
}

const FIXED = /^[^*?\s]+$/;
const WORKFLOW_FILE = /^[^*?\s/]+\/[^*?\s/]+\/\.github\/workflows\/[^*?\s/]+\.ya?ml$/;
const WORKFLOW_PREFIX = /^[^*?\s/]+\/[^*?\s/]+\/\.github\/workflows\//;

/**
 * What is wrong with one trust subject for a role, or undefined. A subject must be in the customised format,
 * name one repository, and restrict it: a push role trusts a branch (`ref:refs/heads/NAME`, no wildcard), the
 * protected release tags (`ref:refs/tags/v*`) or one tag, or an environment, and one workflow file at one ref
 * (the release-tag pattern only with the release-tag context); only the read-only role may trust `pull_request`,
 * with workflows under a fixed `OWNER/NAME/.github/workflows/`. Prefix wildcards (`main*`, `release/*`) are
 * refused: they match branches anyone with write access can create. With `allowUnrestricted`, any subject of
 * one named repository passes.
 */
export function subjectProblem(sub: string, role: RoleKey, allowUnrestricted: boolean): string | undefined {
  const repo = /^repo:([^:]+)\/([^:]+):/.exec(sub);
  if (!repo || /[*?]/.test(repo[1]!) || /[*?]/.test(repo[2]!)) {
    return `trust subject '${sub}' does not name one repository: use 'repo:OWNER/NAME:ref:refs/heads/BRANCH:job_workflow_ref:OWNER/NAME/.github/workflows/FILE.yml@refs/heads/BRANCH'`;
  }
  if (allowUnrestricted) return undefined;
  const name = `${repo[1]}/${repo[2]}`;
  const example = `repo:${name}:ref:refs/heads/main:job_workflow_ref:${name}/.github/workflows/strata-build-bases.yml@refs/heads/main`;
  const marker = sub.indexOf(":job_workflow_ref:");
  if (marker < 0) {
    return (
      `trust subject '${sub}' is not in the subject format strata sets on the repositories (claims ${OIDC_SUBJECT_CLAIMS.join(", ")}): ` +
      `write 'repo:OWNER/NAME:CONTEXT:job_workflow_ref:OWNER/NAME/.github/workflows/FILE@REF', e.g. '${example}' ` +
      `(or set allowUnrestrictedTrust: true if you really mean any workflow run of the repository)`
    );
  }
  const context = sub.slice(repo[0].length, marker);
  const jobWorkflow = sub.slice(marker + ":job_workflow_ref:".length);
  if (context === "pull_request") {
    if (role !== "readOnly") return `trust subject '${sub}': pull requests get the read-only role only, never a push role`;
    return WORKFLOW_PREFIX.test(jobWorkflow) ? undefined : `trust subject '${sub}': the job_workflow_ref must start with a fixed 'OWNER/NAME/.github/workflows/'`;
  }
  const c = /^(ref:refs\/heads\/|ref:refs\/tags\/|environment:)(.+)$/.exec(context);
  if (!c) {
    return `trust subject '${sub}' has no branch, tag or environment restriction: use 'ref:refs/heads/BRANCH', 'ref:${RELEASE_TAG_PATTERN}' or 'environment:NAME' as its context, e.g. '${example}'`;
  }
  const releaseTags = context === `ref:${RELEASE_TAG_PATTERN}`;
  if (!releaseTags && !FIXED.test(c[2]!)) {
    return (
      `trust subject '${sub}': '${c[2]}' is a wildcard, which matches every branch, tag or environment with that prefix (anyone with write access can create one): ` +
      `name exactly one, or use the protected release tags 'ref:${RELEASE_TAG_PATTERN}'`
    );
  }
  const at = jobWorkflow.lastIndexOf("@");
  const [file, ref] = at < 0 ? [jobWorkflow, ""] : [jobWorkflow.slice(0, at), jobWorkflow.slice(at + 1)];
  if (!WORKFLOW_FILE.test(file)) {
    return `trust subject '${sub}': job_workflow_ref must name one workflow file, 'OWNER/NAME/.github/workflows/FILE.yml@REF', without wildcards`;
  }
  const refOk = FIXED.test(ref) ? /^refs\/(heads|tags)\/./.test(ref) : releaseTags && ref === RELEASE_TAG_PATTERN;
  if (!refOk) {
    return `trust subject '${sub}': the workflow's ref '${ref}' must be one branch or tag ('refs/heads/NAME'), or '${RELEASE_TAG_PATTERN}' together with the context 'ref:${RELEASE_TAG_PATTERN}'`;
  }
  return undefined;
}

/** Every problem of a role's trust subjects (see `subjectProblem`). */
export function checkTrustSubjects(subs: string[], role: RoleKey, allowUnrestricted: boolean): string[] {
  return subs.flatMap((sub) => subjectProblem(sub, role, allowUnrestricted) ?? []);
}

/** ECR actions: pulling, and pushing (which needs the pull actions too, for layer checks). */
export const ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer"];
export const ECR_PUSH = [...ECR_PULL, "ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"];
/**
 * What `strata gc` reads through the registry API (cli/gc.ts): tag lists (ListImages), manifests (BatchGetImage),
 * image configs for their creation time (GetDownloadUrlForLayer), plus DescribeImages.
 */
export const ECR_GC_READ = ["ecr:BatchGetImage", "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer", "ecr:ListImages"];

export interface RepositoryArns {
  bases: string;
  runtimes: string;
  cache: string;
}

/** An IAM policy document (the subset strata writes). */
export interface PolicyDocument {
  Version: "2012-10-17";
  Statement: { Sid: string; Effect: "Allow"; Action: string[]; Resource: string | string[]; Condition?: Record<string, Record<string, string | string[]>> }[];
}

/** A role's trust policy. */
export interface TrustPolicy {
  Version: "2012-10-17";
  Statement: { Sid: string; Effect: "Allow"; Principal: { Federated: string }; Action: string[]; Condition: Record<string, Record<string, string | string[]>> }[];
}

/** The trust policy of a role assumable by GitHub Actions tokens with `aud` sts.amazonaws.com and one of `subs`. */
export function trustPolicy(providerArn: string, subs: string[]): TrustPolicy {
  if (subs.length === 0) throw new Error("a role needs at least one trust subject");
  const exact = subs.filter((s) => !/[*?]/.test(s));
  const patterns = subs.filter((s) => /[*?]/.test(s));
  const aud = { [`${GITHUB_OIDC_HOST}:aud`]: STS_AUDIENCE };
  const sub = (values: string[]) => ({ [`${GITHUB_OIDC_HOST}:sub`]: values });
  const base = { Effect: "Allow" as const, Principal: { Federated: providerArn }, Action: ["sts:AssumeRoleWithWebIdentity"] };
  // Conditions in one statement must all hold, so exact subjects (StringEquals) and patterns (StringLike) get
  // statements of their own; each also requires the STS audience.
  return {
    Version: "2012-10-17",
    Statement: [
      ...(exact.length ? [{ Sid: "GitHubActionsExact", ...base, Condition: { StringEquals: { ...aud, ...sub(exact) } } }] : []),
      ...(patterns.length ? [{ Sid: "GitHubActionsPattern", ...base, Condition: { StringEquals: aud, StringLike: sub(patterns) } }] : []),
    ],
  };
}

/** The permissions policy of each role, scoped to strata's repositories. */
export function rolePolicy(role: RoleKey, arns: RepositoryArns): PolicyDocument {
  const login = { Sid: "EcrLogin", Effect: "Allow" as const, Action: ["ecr:GetAuthorizationToken"], Resource: "*" };
  const allow = (Sid: string, Action: string[], Resource: string[]) => ({ Sid, Effect: "Allow" as const, Action, Resource });
  const statements = {
    // The publish job runs the root stack's program (targeted at STRATA_BASE_REFS), whose lookups run in full: the
    // fleet reads the public Deep Learning AMI parameter, the AMI's root device, the zones offering its instance
    // types and an existing VPC (Describe* actions have no resource-level permissions).
    pushBases: [
      login,
      allow("PushBasesAndCache", ECR_PUSH, [arns.bases, arns.cache]),
      allow("ReadPublicParameters", ["ssm:GetParameter"], ["arn:aws:ssm:*::parameter/aws/service/*"]),
      allow("ProgramLookups", ["ec2:DescribeAvailabilityZones", "ec2:DescribeImages", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeVpcs"], ["*"]),
    ],
    pushRuntimes: [login, allow("PushRuntimesAndCache", ECR_PUSH, [arns.runtimes, arns.cache]), allow("PullBases", ECR_PULL, [arns.bases])],
    readOnly: [login, allow("PullAll", ECR_PULL, [arns.bases, arns.runtimes, arns.cache])],
    // strata gc reads all three repositories (runtimes keep the bases they were built FROM) and deletes unused
    // base tags, their attestations and their build cache; it never pushes and never deletes a runtime.
    gc: [login, allow("PruneBasesAndCache", [...ECR_GC_READ, "ecr:BatchDeleteImage"], [arns.bases, arns.cache]), allow("ReadRuntimes", ECR_GC_READ, [arns.runtimes])],
  }[role];
  return { Version: "2012-10-17", Statement: statements };
}

/** Serializes a JSON value with object keys sorted, so equal values give equal strings (and no spurious diffs). */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v));
}

