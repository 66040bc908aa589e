import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import {
  checkTrustSubjects,
  GitHubConfigError,
  parseGitHubConfig,
  rolePolicy,
  stableJson,
  subjectProblem,
  trustPolicy,
  trustSubjects,
  type RoleKey,
} from "../components/github.ts";
import { shardRefStatus, shardStackName, shardStacks } from "../components/shards.ts";

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const DIGEST = "sha256:" + "a".repeat(64);
const ARNS = { bases: "arn:aws:ecr:us-east-1:123456789012:repository/strata/bases", runtimes: "arn:aws:ecr:us-east-1:123456789012:repository/strata/runtimes", cache: "arn:aws:ecr:us-east-1:123456789012:repository/strata/cache" };

describe("parseGitHubConfig", () => {
  test("applies the defaults", () => {
    const c = parseGitHubConfig({ repositories: ["acme/strata"] });
    assert.equal(c.defaultBranch, "main");
    assert.equal(c.allowUnrestrictedTrust, false);
    assert.equal(c.commitWorkflows, false);
    assert.deepEqual(c.runnerLabels, ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"]);
  });

  test("a repository that is not owner/name is refused, with where and what to do", () => {
    for (const bad of ["strata", "acme/", "https://github.com/acme/strata", "acme/strata/x", "ac me/strata"]) {
      assert.throws(
        () => parseGitHubConfig({ repositories: ["acme/ok", bad] }, "strata:github"),
        (e: Error) => e instanceof GitHubConfigError && e.message.includes("strata:github.repositories[1]") && /must be "owner\/name", e\.g\. "acme\/strata"/.test(e.message) && e.message.includes(JSON.stringify(bad)),
        bad,
      );
    }
    assert.throws(() => parseGitHubConfig({}), /strata:github\.repositories/);
    assert.throws(() => parseGitHubConfig({ repositories: ["a/b"], repos: [] }), /unknown key\(s\) 'repos'; allowed: repositories/);
  });

  test("a default branch or environment with a wildcard is refused", () => {
    assert.throws(() => parseGitHubConfig({ repositories: ["a/b"], defaultBranch: "*" }), /defaultBranch: must name one branch, without wildcards/);
    assert.throws(() => parseGitHubConfig({ repositories: ["a/b"], baseEnvironment: "prod*" }), /baseEnvironment: must name one environment/);
  });

  test("a trust subject without a branch, tag or environment restriction is refused at its field unless allowed", () => {
    const raw = { repositories: ["acme/strata"], extraSubjects: { pushBases: ["repo:acme/strata:*"] } };
    assert.throws(
      () => parseGitHubConfig(raw),
      (e: Error) => e instanceof GitHubConfigError && e.message.includes("strata:github.extraSubjects.pushBases[0]: trust subject 'repo:acme/strata:*' is not in the subject format") && e.message.includes("allowUnrestrictedTrust: true"),
    );
    assert.doesNotThrow(() => parseGitHubConfig({ ...raw, allowUnrestrictedTrust: true }));
    // Not about one repository at all: refused even when unrestricted trust is allowed.
    assert.throws(() => parseGitHubConfig({ repositories: ["acme/strata"], allowUnrestrictedTrust: true, extraSubjects: { readOnly: ["repo:acme/*"] } }), /extraSubjects\.readOnly\[0\]: trust subject 'repo:acme\/\*' does not name one repository/);
  });

  test("extra subjects must be in the workflow-pinned format", () => {
    const old = "repo:acme/strata:ref:refs/heads/release";
    assert.throws(() => parseGitHubConfig({ repositories: ["acme/strata"], extraSubjects: { pushBases: [old] } }), /extraSubjects\.pushBases\[0\]: .*not in the subject format strata sets.*job_workflow_ref/);
    const ok = "repo:acme/strata:ref:refs/heads/release:job_workflow_ref:acme/strata/.github/workflows/strata-build-bases.yml@refs/heads/release";
    assert.deepEqual(parseGitHubConfig({ repositories: ["acme/strata"], extraSubjects: { pushBases: [ok] } }).extraSubjects.pushBases, [ok]);
    const gcOk = "repo:acme/strata:ref:refs/heads/release:job_workflow_ref:acme/strata/.github/workflows/strata-gc.yml@refs/heads/release";
    assert.deepEqual(parseGitHubConfig({ repositories: ["acme/strata"], extraSubjects: { gc: [gcOk] } }).extraSubjects.gc, [gcOk]);
    assert.throws(
      () => parseGitHubConfig({ repositories: ["acme/strata"], extraSubjects: { gc: ["repo:acme/strata:pull_request:job_workflow_ref:acme/strata/.github/workflows/strata-gc.yml@refs/pull/1/merge"] } }),
      /extraSubjects\.gc\[0\]: .*read-only role only/,
    );
  });

  test("prefix wildcards are refused in trust subjects, branch and environment settings", () => {
    const wf = "job_workflow_ref:a/b/.github/workflows/strata-build-bases.yml@refs/heads/main";
    for (const bad of [`repo:a/b:ref:refs/heads/main*:${wf}`, `repo:a/b:ref:refs/heads/release/*:${wf}`, `repo:a/b:environment:prod*:${wf}`, `repo:a/b:ref:refs/tags/release-*:${wf}`]) {
      assert.throws(() => parseGitHubConfig({ repositories: ["a/b"], extraSubjects: { pushBases: [bad] } }), /extraSubjects\.pushBases\[0\]: .*is a wildcard/, bad);
    }
    assert.throws(() => parseGitHubConfig({ repositories: ["a/b"], defaultBranch: "main*" }), /strata:github\.defaultBranch: must name one branch, without wildcards/);
  });

  test("subjectProblem: what each role may trust", () => {
    const wf = (file: string, ref: string) => `job_workflow_ref:a/b/.github/workflows/${file}@${ref}`;
    const ok: [string, RoleKey][] = [
      [`repo:a/b:ref:refs/heads/main:${wf("strata-build-bases.yml", "refs/heads/main")}`, "pushBases"],
      [`repo:a/b:environment:bases:${wf("strata-build-bases.yml", "refs/heads/main")}`, "pushBases"],
      [`repo:a/b:ref:refs/tags/v*:${wf("strata-build-runtimes.yml", "refs/tags/v*")}`, "pushRuntimes"],
      [`repo:a/b:ref:refs/tags/v1.0.0:${wf("strata-build-runtimes.yml", "refs/tags/v1.0.0")}`, "pushRuntimes"],
      ["repo:a/b:pull_request:job_workflow_ref:a/b/.github/workflows/*", "readOnly"],
    ];
    for (const [sub, role] of ok) assert.equal(subjectProblem(sub, role, false), undefined, sub);
    const bad: [string, RoleKey, RegExp][] = [
      ["repo:a/b:*", "pushBases", /not in the subject format/],
      ["repo:a/b:ref:refs/heads/main", "pushBases", /not in the subject format/],
      ["repo:a/b:pull_request:job_workflow_ref:a/b/.github/workflows/*", "pushBases", /read-only role only/],
      [`repo:a/b:ref:refs/heads/main:job_workflow_ref:a/b/.github/workflows/*`, "pushBases", /one workflow file/],
      [`repo:a/b:ref:refs/heads/main:${wf("x.yml", "refs/heads/*")}`, "pushBases", /must be one branch or tag/],
      [`repo:a/b:ref:refs/heads/main:${wf("x.yml", "refs/tags/v*")}`, "pushBases", /together with the context/],
      [`repo:a/b:job_workflow_ref:${wf("x.yml", "refs/heads/main").slice("job_workflow_ref:".length)}`, "pushBases", /no branch, tag or environment restriction/],
      ["repo:a/b:pull_request:job_workflow_ref:*", "readOnly", /fixed 'OWNER\/NAME\/\.github\/workflows\/'/],
    ];
    for (const [sub, role, re] of bad) assert.match(subjectProblem(sub, role, false) ?? "", re, sub);
    assert.deepEqual(checkTrustSubjects(["*"], "readOnly", true).length, 1);
  });
});

describe("trust and permission policies", () => {
  const config = parseGitHubConfig({ repositories: ["acme/strata", "acme/other"] });

  test("push-bases trusts the base workflow on the default branch (or in the environment), push-runtimes the runtime workflow on it and on v* tags, read-only pull requests", () => {
    const subs = trustSubjects(config);
    const bases = (r: string) => `job_workflow_ref:${r}/.github/workflows/strata-build-bases.yml@refs/heads/main`;
    const runtimes = (r: string, ref: string) => `job_workflow_ref:${r}/.github/workflows/strata-build-runtimes.yml@${ref}`;
    assert.deepEqual(subs.pushBases, [`repo:acme/strata:ref:refs/heads/main:${bases("acme/strata")}`, `repo:acme/other:ref:refs/heads/main:${bases("acme/other")}`]);
    assert.deepEqual(subs.pushRuntimes, [
      `repo:acme/strata:ref:refs/heads/main:${runtimes("acme/strata", "refs/heads/main")}`,
      `repo:acme/strata:ref:refs/tags/v*:${runtimes("acme/strata", "refs/tags/v*")}`,
      `repo:acme/other:ref:refs/heads/main:${runtimes("acme/other", "refs/heads/main")}`,
      `repo:acme/other:ref:refs/tags/v*:${runtimes("acme/other", "refs/tags/v*")}`,
    ]);
    assert.deepEqual(subs.readOnly, ["repo:acme/strata:pull_request:job_workflow_ref:acme/strata/.github/workflows/*", "repo:acme/other:pull_request:job_workflow_ref:acme/other/.github/workflows/*"]);
    const gc = (r: string) => `repo:${r}:ref:refs/heads/main:job_workflow_ref:${r}/.github/workflows/strata-gc.yml@refs/heads/main`;
    assert.deepEqual(subs.gc, [gc("acme/strata"), gc("acme/other")]);
    const env = trustSubjects(parseGitHubConfig({ repositories: ["acme/strata"], baseEnvironment: "bases" }));
    assert.deepEqual(env.pushBases, [`repo:acme/strata:environment:bases:${bases("acme/strata")}`]);
    assert.deepEqual(env.gc, [gc("acme/strata")], "base GC runs on the default branch, not in the base environment");
  });

  test("the trust policy requires the STS audience and matches sub exactly, or by StringLike for patterns", () => {
    const p = trustPolicy("arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com", ["repo:a/b:ref:refs/heads/main", "repo:a/b:ref:refs/tags/v*"]);
    assert.equal(p.Statement.length, 2);
    for (const s of p.Statement) {
      assert.deepEqual(s.Action, ["sts:AssumeRoleWithWebIdentity"]);
      assert.equal(s.Condition.StringEquals["token.actions.githubusercontent.com:aud"], "sts.amazonaws.com");
    }
    assert.deepEqual(p.Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"], ["repo:a/b:ref:refs/heads/main"]);
    assert.deepEqual(p.Statement[1].Condition.StringLike["token.actions.githubusercontent.com:sub"], ["repo:a/b:ref:refs/tags/v*"]);
  });

  test("policies reach only strata's repositories: bases+cache, runtimes+cache and pull bases, pull only", () => {
    const resources = (role: Parameters<typeof rolePolicy>[0], action: string) =>
      rolePolicy(role, ARNS).Statement.filter((s) => s.Action.includes(action)).flatMap((s) => [s.Resource].flat());
    assert.deepEqual(resources("pushBases", "ecr:PutImage"), [ARNS.bases, ARNS.cache]);
    assert.deepEqual(resources("pushRuntimes", "ecr:PutImage"), [ARNS.runtimes, ARNS.cache]);
    assert.deepEqual(resources("pushRuntimes", "ecr:BatchGetImage"), [ARNS.runtimes, ARNS.cache, ARNS.bases]);
    assert.deepEqual(resources("readOnly", "ecr:PutImage"), []);
    assert.deepEqual(resources("readOnly", "ecr:BatchGetImage"), [ARNS.bases, ARNS.runtimes, ARNS.cache]);
    assert.deepEqual(resources("gc", "ecr:BatchDeleteImage"), [ARNS.bases, ARNS.cache], "gc deletes bases and cache, never runtimes");
    assert.deepEqual(resources("gc", "ecr:ListImages"), [ARNS.bases, ARNS.cache, ARNS.runtimes]);
    assert.deepEqual(resources("gc", "ecr:PutImage"), []);
    for (const role of ["pushBases", "pushRuntimes", "readOnly", "gc"] as const) {
      assert.deepEqual(resources(role, "ecr:BatchDeleteImage"), role === "gc" ? [ARNS.bases, ARNS.cache] : [], `${role} deletes nothing`);
      for (const s of rolePolicy(role, ARNS).Statement) {
        if ([s.Resource].flat().includes("*")) assert.ok(s.Action.every((a) => a === "ecr:GetAuthorizationToken" || a.startsWith("ec2:Describe")), `${role} ${s.Sid}: only reads on *`);
      }
    }
  });

  test("stableJson sorts keys", () => {
    assert.equal(stableJson({ b: 1, a: { d: 2, c: 3 } }), '{"a":{"c":3,"d":2},"b":1}');
  });
});

describe("shard stacks (pure)", () => {
  const plan = { bases: [{ name: "turing", tag: "turing-111111111111" }, { name: "ampere", tag: "ampere-222222222222" }] };
  test("names one stack per base with the config it needs", () => {
    assert.deepEqual(shardStacks(plan as never, "prod"), [
      { base: "turing", stack: "prod-base-turing", config: { "strata:bases": ["turing"], "strata:runtimes": false, "strata:shardOf": "prod" } },
      { base: "ampere", stack: "prod-base-ampere", config: { "strata:bases": ["ampere"], "strata:runtimes": false, "strata:shardOf": "prod" } },
    ]);
  });
  test("refuses names Pulumi would not take", () => {
    assert.throws(() => shardStackName("prod", "x".repeat(95)), /not a valid Pulumi stack name.*at most 100 characters/);
    assert.throws(() => shardStacks(plan as never, "my stack"), /root stack name 'my stack'/);
  });
  test("classifies a shard's published ref against the matrix's tag", () => {
    const b = plan.bases[0];
    assert.equal(shardRefStatus(b, "s", { turing: `r/bases:turing-111111111111@${DIGEST}` }).status, "current");
    assert.equal(shardRefStatus(b, "s", { turing: `r/bases:turing-000000000000@${DIGEST}` }).status, "stale");
    assert.equal(shardRefStatus(b, "s", undefined).status, "missing");
  });
});

// Everything below runs under Pulumi mocks, once for the whole file.
interface Registered {
  type: string;
  name: string;
  inputs: Record<string, any>;
  provider?: string;
}
const registered: Registered[] = [];
const shardOutputs: Record<string, unknown> = {
  "organization/strata/prod-base-turing": { baseRefs: { turing: `123.dkr.ecr.us-east-1.amazonaws.com/strata/bases:turing-111111111111@${DIGEST}` } },
  "organization/strata/prod-base-ampere": { baseRefs: { ampere: `123.dkr.ecr.us-east-1.amazonaws.com/strata/bases:ampere-000000000000@${DIGEST}` } },
  "organization/strata/prod": { registry: "123.dkr.ecr.us-east-1.amazonaws.com", basesRepository: "123.dkr.ecr.us-east-1.amazonaws.com/strata/bases", runtimesRepository: "123.dkr.ecr.us-east-1.amazonaws.com/strata/runtimes", cacheRepository: "123.dkr.ecr.us-east-1.amazonaws.com/strata/cache" },
};

const unwrap = (v: any): any => (v && typeof v === "object" && v[SECRET_SIG] ? unwrap(v.value) : v);
const isSecret = (v: any) => Boolean(v && typeof v === "object" && v[SECRET_SIG] === "1b47061264138c4ac30d75fd1eb44270");
const output = <T>(o: pulumi.Output<T>) => new Promise<T>((resolve) => o.apply(resolve));

describe("under Pulumi mocks", () => {
  let github: typeof import("../components/github.ts");
  let shards: typeof import("../components/shards.ts");
  before(async () => {
    await pulumi.runtime.setMocks(
      {
        newResource(args) {
          registered.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
          if (args.type === "pulumi:pulumi:StackReference") {
            return { id: args.inputs.name, state: { name: args.inputs.name, outputs: shardOutputs[args.inputs.name] ?? {} } };
          }
          const arn = args.type.startsWith("aws:") ? `arn:aws:test::123456789012:${args.name}` : undefined;
          return { id: `${args.name}-id`, state: { ...args.inputs, ...(arn ? { arn } : {}) } };
        },
        call(args) {
          if (args.token === "aws:index/getRegion:getRegion") return { id: "eu-west-1", name: "eu-west-1", region: "eu-west-1" };
          if (args.token === "aws:ecr/getAuthorizationToken:getAuthorizationToken") return { id: "x", userName: "AWS", password: "tok", proxyEndpoint: "https://123.dkr.ecr.us-east-1.amazonaws.com", authorizationToken: "", expiresAt: "" };
          throw new Error(`unexpected invoke ${args.token}`);
        },
      },
      "strata",
      "test",
      false,
    );
    github = await import("../components/github.ts");
    shards = await import("../components/shards.ts");
  });
  const settle = () => new Promise((r) => setTimeout(r, 50));
  const of = (type: string) => registered.filter((r) => r.type === type);

  test("GitHubWiring: OIDC provider, four roles, variables from outputs, secrets only for secrets", async () => {
    const config = github.parseGitHubConfig({ repositories: ["acme/strata", "other-org/app"], commitWorkflows: true });
    const wiring = new github.GitHubWiring("github", {
      config,
      registry: pulumi.output("123.dkr.ecr.us-east-1.amazonaws.com"),
      repositoryArns: { bases: pulumi.output(ARNS.bases), runtimes: ARNS.runtimes, cache: ARNS.cache },
      baseRefs: pulumi.output({ turing: "r/bases:turing-1@sha256:x", ampere: "r/bases:ampere-1@sha256:y" }),
      registryCredentials: { username: "bot", password: pulumi.secret("hunter2") },
      workflows: { ".github/workflows/a.yml": "name: a\n" },
    });
    assert.equal(await output(wiring.baseRefsJson), '{"ampere":"r/bases:ampere-1@sha256:y","turing":"r/bases:turing-1@sha256:x"}');
    await output(wiring.roleArns!.readOnly);
    await settle();

    const oidc = of("aws:iam/openIdConnectProvider:OpenIdConnectProvider");
    assert.equal(oidc.length, 1);
    assert.equal(oidc[0].inputs.url, "https://token.actions.githubusercontent.com");
    assert.deepEqual(oidc[0].inputs.clientIdLists, ["sts.amazonaws.com"]);

    const roles = of("aws:iam/role:Role");
    assert.deepEqual(roles.map((r) => r.name).sort(), ["github-gc", "github-push-bases", "github-push-runtimes", "github-read-only"]);
    const gcTrust = JSON.parse(roles.find((r) => r.name === "github-gc")!.inputs.assumeRolePolicy);
    assert.deepEqual(gcTrust.Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"], [
      "repo:acme/strata:ref:refs/heads/main:job_workflow_ref:acme/strata/.github/workflows/strata-gc.yml@refs/heads/main",
      "repo:other-org/app:ref:refs/heads/main:job_workflow_ref:other-org/app/.github/workflows/strata-gc.yml@refs/heads/main",
    ]);
    const trust = JSON.parse(roles.find((r) => r.name === "github-push-bases")!.inputs.assumeRolePolicy);
    assert.equal(trust.Statement[0].Principal.Federated, "arn:aws:test::123456789012:github-oidc");
    assert.deepEqual(trust.Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"], [
      "repo:acme/strata:ref:refs/heads/main:job_workflow_ref:acme/strata/.github/workflows/strata-build-bases.yml@refs/heads/main",
      "repo:other-org/app:ref:refs/heads/main:job_workflow_ref:other-org/app/.github/workflows/strata-build-bases.yml@refs/heads/main",
    ]);
    const policy = JSON.parse(of("aws:iam/rolePolicy:RolePolicy").find((p) => p.name === "github-push-bases")!.inputs.policy);
    assert.deepEqual(policy.Statement[1].Resource, [ARNS.bases, ARNS.cache]);

    const providers = of("pulumi:providers:github");
    assert.deepEqual(providers.map((p) => p.inputs.owner).sort(), ["acme", "other-org"], "one provider per owner");
    const vars = of("github:index/actionsVariable:ActionsVariable");
    const strata = vars.filter((v) => v.inputs.repository === "strata");
    assert.deepEqual(strata.map((v) => v.inputs.variableName).sort(), [
      "STRATA_AWS_REGION",
      "STRATA_BASE_REFS",
      "STRATA_REGISTRY",
      "STRATA_REGISTRY_USERNAME",
      "STRATA_ROLE_GC",
      "STRATA_ROLE_PUSH_BASES",
      "STRATA_ROLE_PUSH_RUNTIMES",
      "STRATA_ROLE_READ_ONLY",
    ]);
    const value = (name: string) => unwrap(strata.find((v) => v.inputs.variableName === name)!.inputs.value);
    assert.equal(value("STRATA_AWS_REGION"), "eu-west-1");
    assert.equal(value("STRATA_ROLE_PUSH_BASES"), "arn:aws:test::123456789012:github-push-bases");
    assert.deepEqual(JSON.parse(value("STRATA_BASE_REFS")), { ampere: "r/bases:ampere-1@sha256:y", turing: "r/bases:turing-1@sha256:x" });
    assert.ok(strata.every((v) => !isSecret(v.inputs.value)), "variables hold nothing secret");
    assert.ok(vars.some((v) => v.inputs.repository === "app"));

    const secrets = of("github:index/actionsSecret:ActionsSecret");
    assert.deepEqual(secrets.map((s) => `${s.inputs.repository}/${s.inputs.secretName}`).sort(), ["app/STRATA_REGISTRY_PASSWORD", "strata/STRATA_REGISTRY_PASSWORD"]);
    assert.ok(secrets.every((s) => isSecret(s.inputs.value) && unwrap(s.inputs.value) === "hunter2"));
    const templates = of("github:index/actionsRepositoryOidcSubjectClaimCustomizationTemplate:ActionsRepositoryOidcSubjectClaimCustomizationTemplate");
    assert.deepEqual(templates.map((t) => [t.inputs.repository, t.inputs.useDefault, t.inputs.includeClaimKeys]).sort(), [
      ["app", false, ["repo", "context", "job_workflow_ref"]],
      ["strata", false, ["repo", "context", "job_workflow_ref"]],
    ]);
    const rulesets = of("github:index/repositoryRuleset:RepositoryRuleset");
    assert.equal(rulesets.length, 2);
    for (const r of rulesets) {
      assert.equal(r.inputs.target, "tag");
      assert.equal(r.inputs.enforcement, "active");
      assert.deepEqual(r.inputs.conditions, { refName: { includes: ["refs/tags/v*"], excludes: [] } });
      assert.deepEqual(r.inputs.rules, { creation: true, update: true, deletion: true });
      assert.deepEqual(r.inputs.bypassActors, [{ actorType: "RepositoryRole", actorId: 5, bypassMode: "always" }]);
    }
    const files = of("github:index/repositoryFile:RepositoryFile");
    assert.equal(files.length, 2);
    assert.equal(files[0].inputs.branch, "main");
  });

  test("GitHubWiring without ECR roles leaves the repository's OIDC subject and tag rules alone", async () => {
    new github.GitHubWiring("ext", { config: github.parseGitHubConfig({ repositories: ["acme/ext"] }), registry: "ghcr.io", baseRefs: {}, region: "us-west-2" });
    await settle();
    assert.equal(of("github:index/actionsVariable:ActionsVariable").filter((v) => v.inputs.repository === "ext").length > 0, true);
    assert.deepEqual(of("github:index/actionsRepositoryOidcSubjectClaimCustomizationTemplate:ActionsRepositoryOidcSubjectClaimCustomizationTemplate").filter((t) => t.inputs.repository === "ext"), []);
    assert.deepEqual(of("github:index/repositoryRuleset:RepositoryRuleset").filter((t) => t.inputs.repository === "ext"), []);
  });

  test("GitHubWiring reuses an existing OIDC provider by ARN", async () => {
    const arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com";
    const before = of("aws:iam/openIdConnectProvider:OpenIdConnectProvider").length;
    const w = new github.GitHubWiring("reuse", { config: github.parseGitHubConfig({ repositories: ["acme/strata"], oidcProviderArn: arn }), registry: "r", repositoryArns: ARNS, baseRefs: {}, region: "us-west-2" });
    assert.equal(await output(w.oidcProviderArn!), arn);
    await settle();
    assert.equal(of("aws:iam/openIdConnectProvider:OpenIdConnectProvider").length, before);
    const trust = JSON.parse(of("aws:iam/role:Role").find((r) => r.name === "reuse-read-only")!.inputs.assumeRolePolicy);
    assert.equal(trust.Statement[0].Principal.Federated, arn);
  });

  test("GitHubWiring refuses commitWorkflows without files and a config with unrestricted trust", () => {
    assert.throws(() => new github.GitHubWiring("nofiles", { config: github.parseGitHubConfig({ repositories: ["a/b"], commitWorkflows: true }), registry: "r", baseRefs: {} }), /commitWorkflows is true but no workflows were passed/);
    const unsafe = { ...github.parseGitHubConfig({ repositories: ["a/b"] }), extraSubjects: { pushBases: ["repo:a/b:*"], pushRuntimes: [], readOnly: [], gc: [] } };
    assert.throws(() => new github.GitHubWiring("unsafe", { config: unsafe, registry: "r", repositoryArns: ARNS, baseRefs: {} }), /role pushBases: trust subject 'repo:a\/b:\*' is not in the subject format/);
  });

  test("baseRefsFromShards reads each shard through a StackReference and keeps only current refs", async () => {
    const plan = { bases: [{ name: "turing", tag: "turing-111111111111" }, { name: "ampere", tag: "ampere-222222222222" }] };
    const refs = shards.baseRefsFromShards(plan as never, "prod");
    assert.deepEqual(await output(refs.refs), { turing: `123.dkr.ecr.us-east-1.amazonaws.com/strata/bases:turing-111111111111@${DIGEST}` });
    assert.deepEqual((await output(refs.status)).map((s) => s.status), ["current", "stale"]);
    assert.match(await output(refs.ref("turing")), /turing-111111111111@sha256/);
    await settle();
    assert.deepEqual(of("pulumi:pulumi:StackReference").map((r) => r.inputs.name).filter((n) => n.includes("-base-")).sort(), ["organization/strata/prod-base-ampere", "organization/strata/prod-base-turing"]);
    assert.throws(() => refs.ref("hopper"), /base 'hopper' is not in the matrix/);
  });

  test("ShardRegistry takes the root's repositories and logs in to ECR with the shard's own identity", async () => {
    const reg = new shards.ShardRegistry("registry", { root: "prod", kind: "ecr" });
    assert.equal(await output(reg.basesRepository), "123.dkr.ecr.us-east-1.amazonaws.com/strata/bases");
    assert.equal(await output(reg.cacheRepository), "123.dkr.ecr.us-east-1.amazonaws.com/strata/cache");
    assert.equal(await output(pulumi.output(reg.auth!.username)), "AWS");
    assert.deepEqual(reg.repositoryArns, []);
    assert.equal(of("aws:ecr/repository:Repository").length, 0, "a shard owns no repositories");
  });
});
