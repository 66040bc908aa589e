import { z } from "zod";
import { DEFAULT_LABELS } from "./fleet/config.ts";

// What GitHub Actions may do in AWS and which variables it gets: the `strata:github` config, the roles' trust
// subjects and policies. Pure (no Pulumi), so the CLI reads it without loading the Pulumi SDK.

/** GitHub's OIDC issuer, and the audience `aws-actions/configure-aws-credentials` asks for. */
export const GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com";
export const GITHUB_OIDC_HOST = "token.actions.githubusercontent.com";
export const STS_AUDIENCE = "sts.amazonaws.com";

/** The Actions variables the wiring sets on every repository; the generated workflows read exactly these. */
export const VARIABLES = {
  registry: "STRATA_REGISTRY",
  region: "STRATA_AWS_REGION",
  pushBases: "STRATA_ROLE_PUSH_BASES",
  pushRuntimes: "STRATA_ROLE_PUSH_RUNTIMES",
  readOnly: "STRATA_ROLE_READ_ONLY",
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
  /** Extra `sub` claims a role trusts, e.g. `repo:acme/strata:ref:refs/heads/release/*`. Default none. */
  extraSubjects: z.strictObject({ pushBases: subjects, pushRuntimes: subjects, readOnly: subjects }).prefault({}),
  /** Accept trust subjects without a branch, tag or environment restriction (`repo:acme/strata:*`). Default false. */
  allowUnrestrictedTrust: z.boolean().default(false),
  /** Labels base-build jobs run on; some fleet pool must carry all of them. Default the fleet's default pool labels. */
  runnerLabels: z.array(label).min(1).default([...DEFAULT_LABELS]),
  /** Also keep the generated workflows in the repositories (github.RepositoryFile). Default false. */
  commitWorkflows: z.boolean().default(false),
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
  const problems = Object.entries(trust).flatMap(([role, subs]) => checkTrustSubjects(subs, config.allowUnrestrictedTrust).map((p) => `  ${where}: role ${role}: ${p}`));
  if (problems.length > 0) throw new GitHubConfigError(`unsafe trust in ${where}:\n${problems.join("\n")}`);
  return config;
}

/** The three roles and what each may do. */
export type RoleKey = "pushBases" | "pushRuntimes" | "readOnly";

/** The `token.actions.githubusercontent.com:sub` values each role trusts, for every configured repository. */
export function trustSubjects(config: Pick<GitHubConfig, "repositories" | "defaultBranch" | "baseEnvironment" | "extraSubjects">): Record<RoleKey, string[]> {
  const per = (f: (repo: string) => string[]) => config.repositories.flatMap(f);
  const branch = (repo: string) => `repo:${repo}:ref:refs/heads/${config.defaultBranch}`;
  return {
    pushBases: [...per((r) => [config.baseEnvironment ? `repo:${r}:environment:${config.baseEnvironment}` : branch(r)]), ...config.extraSubjects.pushBases],
    pushRuntimes: [...per((r) => [branch(r), `repo:${r}:ref:refs/tags/v*`]), ...config.extraSubjects.pushRuntimes],
    readOnly: [...per((r) => [`repo:${r}:pull_request`]), ...config.extraSubjects.readOnly],
  };
}

/**
 * Problems with trust subjects: each must name one repository (no wildcard in owner/name) and restrict it to a
 * branch or tag (`ref:refs/heads/<b>`, `ref:refs/tags/<t>`, a wildcard only after a fixed prefix), an environment
 * (`environment:<name>`) or pull requests (`pull_request`). `repo:x/y:*` and the like are refused unless
 * `allowUnrestricted` (then only a subject that is not about one repository at all is refused).
 */
export function checkTrustSubjects(subs: string[], allowUnrestricted: boolean): string[] {
  const problems: string[] = [];
  for (const sub of subs) {
    const m = /^repo:([^:]+)\/([^:]+):(.+)$/.exec(sub);
    if (!m || /[*?]/.test(m[1]) || /[*?]/.test(m[2])) {
      problems.push(`trust subject '${sub}' does not name one repository: use 'repo:OWNER/NAME:ref:refs/heads/BRANCH' (or :environment:NAME, :pull_request)`);
      continue;
    }
    const rest = m[3];
    const restricted =
      rest === "pull_request" ||
      /^ref:refs\/(heads|tags)\/[^*?]+/.test(rest) ||
      /^environment:[^*?]+$/.test(rest);
    if (!restricted && !allowUnrestricted) {
      problems.push(
        `trust subject '${sub}' has no branch, tag or environment restriction: any workflow run in ${m[1]}/${m[2]} (any branch, any pull request) could assume the role; ` +
          `name a branch ('repo:${m[1]}/${m[2]}:ref:refs/heads/main') or an environment, or set allowUnrestrictedTrust: true if you really mean it`,
      );
    }
  }
  return problems;
}

/** ECR actions: pulling, and pushing (which needs the pull actions too, for layer checks). */
export const ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer"];
export const ECR_PUSH = [...ECR_PULL, "ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart"];

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
    // The publish job runs the root stack's program (targeted at STRATA_BASE_REFS); the fleet reads the public
    // Deep Learning AMI parameter there.
    pushBases: [login, allow("PushBasesAndCache", ECR_PUSH, [arns.bases, arns.cache]), allow("ReadPublicParameters", ["ssm:GetParameter"], ["arn:aws:ssm:*::parameter/aws/service/*"])],
    pushRuntimes: [login, allow("PushRuntimesAndCache", ECR_PUSH, [arns.runtimes, arns.cache]), allow("PullBases", ECR_PULL, [arns.bases])],
    readOnly: [login, allow("PullAll", ECR_PULL, [arns.bases, arns.runtimes, arns.cache])],
  }[role];
  return { Version: "2012-10-17", Statement: statements };
}

/** Serializes a JSON value with object keys sorted, so equal values give equal strings (and no spurious diffs). */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v));
}

