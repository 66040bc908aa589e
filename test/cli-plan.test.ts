import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { planReport } from "../cli/plan.ts";
import { runProgram } from "../cli/program.ts";
import { SIMPLE_MATRIX, cleanup, noStackTrace, simpleProject, strata } from "./helpers.ts";

// The newcomer's path (issue 12) and the shard plans and per-command help (issue 14), through the real CLI.
const dirs: string[] = [];
after(() => dirs.forEach(cleanup));

type Resource = { type: string; name: string; inputs: Record<string, unknown> };

describe("the example AWS stack (Pulumi.example-aws.yaml)", () => {
  const r = strata(["plan", "--stack", "example-aws", "--json"]);
  const plan = r.code === 0 ? JSON.parse(r.stdout) : undefined;

  test("plans offline: ECR, the fleet and the GitHub wiring, in the stack's own region", () => {
    assert.equal(r.code, 0, r.stderr);
    const types = new Set((plan.resources as Resource[]).map((x) => x.type));
    for (const t of ["aws:ecr/repository:Repository", "strata:fleet:GpuRunnerFleet", "aws:lambda/function:Function", "aws:iam/openIdConnectProvider:OpenIdConnectProvider", "github:index/actionsVariable:ActionsVariable"]) {
      assert.ok(types.has(t), `the plan declares a ${t}`);
    }
    assert.equal(plan.registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    assert.match(plan.outputs.fleet.webhookUrl, /\.lambda-url\.eu-west-1\.on\.aws\/$/);
    assert.doesNotMatch(r.stdout, /us-east-1/, "no resource is placed in another region");
  });

  test("--json carries every resource's inputs, the IAM policy documents included", () => {
    const policies = (plan.resources as Resource[]).filter((x) => x.type === "aws:iam/rolePolicy:RolePolicy" || x.type === "aws:iam/policy:Policy");
    assert.ok(policies.length >= 3, "the fleet's and the GitHub roles' policies");
    for (const p of policies) {
      const doc = JSON.parse(p.inputs.policy as string) as { Version: string; Statement: unknown[] };
      assert.equal(doc.Version, "2012-10-17");
      assert.ok(doc.Statement.length > 0);
    }
    const push = (plan.resources as Resource[]).find((x) => x.type === "aws:iam/role:Role" && x.name === "github-push-bases")!;
    assert.match(push.inputs.assumeRolePolicy as string, /repo:example-org\/example-models:ref:refs\/heads\/main/);
  });

  test("the human form shows the whole AWS tree", () => {
    const human = strata(["plan", "--stack", "example-aws"]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /registry 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com/);
    assert.match(human.stdout, /^ {2}strata:fleet:GpuRunnerFleet {2}fleet$/m);
    assert.match(human.stdout, /^ {2}strata:github:GitHubWiring {2}github$/m);
  });
});

test("plan --json masks secrets in resource inputs and outputs", async () => {
  const KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIBsecretbody\n-----END RSA PRIVATE KEY-----";
  const run = await runProgram({
    stack: "ci",
    config: {
      "strata:registry": { kind: "ecr" },
      "strata:fleet": { enabled: true, runnerOwner: "acme", repositories: ["acme/models"] },
      "strata:githubAppId": "1",
      "strata:githubAppInstallationId": "2",
      "strata:githubAppPrivateKey": KEY,
    },
    secretKeys: ["strata:githubAppPrivateKey"],
    lean: true,
  });
  assert.ok(run.resources.some((x) => JSON.stringify(x.inputs).includes("MIIBsecretbody")), "the key reaches a resource (as a secret)");
  const text = JSON.stringify(planReport("ci", "strata.yaml", run));
  assert.doesNotMatch(text, /MIIBsecretbody/);
  assert.match(text, /"\[secret\]"/);
});

describe("shard stacks plan offline", () => {
  const ROOT = "config:\n  aws:region: eu-west-1\n  strata:registry:\n    kind: ecr\n";

  test("a base shard stack takes its root's registry from the root's own offline plan", () => {
    const dir = simpleProject(SIMPLE_MATRIX, { "Pulumi.prod.yaml": ROOT, "Pulumi.prod-base-ampere.yaml": "config:\n  strata:registry:\n    kind: ecr\n  strata:shardOf: prod\n  strata:bases: [ampere]\n  strata:runtimes: false\n" });
    dirs.push(dir);
    const r = strata(["plan", "--stack", "prod-base-ampere", "--json"], dir);
    assert.equal(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout);
    assert.deepEqual(plan.bases.map((b: { name: string }) => b.name), ["ampere"]);
    const image = (plan.resources as Resource[]).find((x) => x.type === "docker-build:index:Image")!;
    assert.match((image.inputs.tags as string[])[0], /^123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/strata\/bases:ampere-[0-9a-f]{12}$/);
    assert.match(plan.outputs.baseRefs.ampere, /:ampere-[0-9a-f]{12}@sha256:[0-9a-f]{64}$/);
  });

  test("a shard stack whose root has no stack file says how to plan it instead", () => {
    const dir = simpleProject(SIMPLE_MATRIX, { "Pulumi.lone.yaml": "config:\n  strata:shardOf: nowhere\n  strata:bases: [ampere]\n  strata:runtimes: false\n" });
    dirs.push(dir);
    const r = strata(["plan", "--stack", "lone"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /shard of 'nowhere', but there is no Pulumi\.nowhere\.yaml.*--shard NAME/);
    noStackTrace(r.stderr);
  });

  test("--shard plans one runtime shard of a root in full; the root shows them in summary", () => {
    const dir = simpleProject(SIMPLE_MATRIX.replace(/runtimes:\n[\s\S]*$/, "runtimes:\n" + ["a", "b", "c"].map((n) => `  - { name: ${n}, base: ampere, context: app, dockerfile: docker/Dockerfile.runtime, target: runtime }\n`).join("")), {
      "Pulumi.prod.yaml": `${ROOT}  strata:runtimeShardSize: 2\n`,
    });
    dirs.push(dir);
    const root = strata(["plan", "--stack", "prod"], dir);
    assert.equal(root.code, 0, root.stderr);
    assert.match(root.stdout, /Runtime shards \(2\): 3 runtimes, declared by shard stacks/);
    assert.match(root.stdout, /^ {2}runtimes-1 +prod-runtimes-1 +2 +ampere$/m);
    assert.doesNotMatch(root.stdout, /strata:images:RuntimeImage/);
    const one = strata(["plan", "--stack", "prod", "--shard", "runtimes-2", "--json"], dir);
    assert.equal(one.code, 0, one.stderr);
    const plan = JSON.parse(one.stdout);
    assert.equal(plan.stack, "prod-runtimes-2");
    assert.deepEqual(plan.runtimes.map((x: { name: string }) => x.name), ["c"]);
    assert.match(plan.runtimes[0].baseImageArg, /^123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/strata\/bases:ampere-[0-9a-f]{12}@sha256:/);
    const rootJson = strata(["plan", "--stack", "prod", "--json"], dir);
    assert.equal(plan.runtimes[0].baseImageArg, JSON.parse(rootJson.stdout).outputs.baseRefs.ampere, "FROM the ref the root's own plan publishes");
    const bad = strata(["plan", "--stack", "prod", "--shard", "runtimes-7"], dir);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no runtime shard 'runtimes-7'; this stack has 2: runtimes-1, runtimes-2/);
  });
});

describe("per-command help", () => {
  for (const [command, first] of [
    ["check", /^ {2}strata check \[--matrix PATH\]/m],
    ["plan", /^ {2}strata plan \[--stack NAME\].*\[--shard NAME\]/m],
    ["bake", /^ {2}strata bake /m],
    ["impact", /^ {2}strata impact /m],
    ["workflows", /strata workflows \[--stack NAME\]/],
  ] as const) {
    test(`strata ${command} --help prints that command's usage only`, () => {
      const r = strata([command, "--help"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, first);
      for (const other of ["check", "plan", "bake", "impact", "workflows"].filter((c) => c !== command)) {
        assert.doesNotMatch(r.stdout, new RegExp(`^\\s+strata ${other} `, "m"), `no usage of ${other}`);
      }
    });
  }

  test("a usage mistake in one command shows that command's usage", () => {
    const r = strata(["check", "--matrx", "x"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--matrx'[\s\S]*strata check \[--matrix PATH\]/);
    assert.doesNotMatch(r.stderr, /strata bake/);
  });
});

test("strata workflows on the local-registry dev stack names the next step", () => {
  const r = strata(["workflows", "--check"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /stack 'dev' pushes to a local registry/);
  assert.match(r.stderr, /next: `strata workflows --stack example-aws`/);
  assert.match(r.stderr, /--registry-kind ecr/);
});
