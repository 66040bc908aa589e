import assert from "node:assert/strict";
import { before, test } from "node:test";
import { runProgram, type ProgramRun } from "../cli/program.ts";
import { plainStrings } from "./mocks.ts";

// The real program with the GPU runner fleet and the GitHub wiring, on ECR: what `strata plan` shows for such a stack.
let run: ProgramRun;
const KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----";
before(async () => {
  run = await runProgram({
    stack: "ci",
    config: {
      "strata:registry": { kind: "ecr" },
      "strata:fleet": { enabled: true, runnerOwner: "acme", pools: [{ name: "gpu-base-builder", maxRunners: 3 }] },
      "strata:githubAppId": "123",
      "strata:githubAppInstallationId": "456",
      "strata:githubAppPrivateKey": KEY,
      "strata:github": { repositories: ["acme/models"] },
    },
    secretKeys: ["strata:githubAppPrivateKey"],
  });
});

test("the fleet plans alongside the images, and its webhook URL and AMI are stack outputs", () => {
  assert.equal(run.resources.filter((r) => r.type === "strata:fleet:GpuRunnerFleet").length, 1);
  const fleet = run.outputs.fleet as { webhookUrl: string; amiIds: Record<string, string>; paramPrefix: string };
  assert.match(fleet.webhookUrl, /^https:\/\/.+\.lambda-url\.us-east-1\.on\.aws\/$/);
  assert.deepEqual(fleet.amiIds, { "gpu-base-builder": "ami-0abc1234def567890" });
  assert.equal(fleet.paramPrefix, "/strata/ci/jit/");
});

test("runner instances hold no registry access: jobs push with the OIDC roles", () => {
  const policy = run.resources.find((r) => r.type === "aws:iam/rolePolicy:RolePolicy" && r.name === "fleet-instance")!;
  const doc = JSON.parse(policy.inputs.policy as string) as { Statement: { Action: string | string[]; Resource: string | string[] }[] };
  assert.deepEqual(doc.Statement.flatMap((s) => [s.Action].flat()).filter((a) => a.startsWith("ecr:")), []);
});

test("the GitHub App key reaches no resource in plain text", () => {
  const plain = run.resources.flatMap((r) => plainStrings(r.inputs));
  assert.ok(!plain.some((s) => s.includes("MIIB")), "the private key appears outside a secret");
  assert.ok(run.resources.some((r) => JSON.stringify(r.inputs).includes("MIIB")), "the key does reach Secrets Manager, as a secret");
});

test("the fleet's pool cap reaches the scaler", () => {
  const webhook = run.resources.find((r) => r.type === "aws:lambda/function:Function" && /webhook/.test(r.name))!;
  const env = JSON.stringify(webhook.inputs.environment);
  assert.match(env, /\\"maxRunners\\":3/);
});

test("GitHub gets AWS access by OIDC only: four roles, each trusting one restricted subject set", () => {
  assert.equal(run.resources.filter((r) => r.type === "aws:iam/openIdConnectProvider:OpenIdConnectProvider").length, 1);
  assert.equal(run.resources.filter((r) => r.type === "aws:iam/accessKey:AccessKey").length, 0, "no long-lived keys");
  const roles = run.resources.filter((r) => r.type === "aws:iam/role:Role" && r.parent === "github");
  assert.deepEqual(roles.map((r) => r.name).sort(), ["github-gc", "github-push-bases", "github-push-runtimes", "github-read-only"]);
  for (const role of roles) {
    const subs = JSON.stringify(JSON.parse(role.inputs.assumeRolePolicy as string).Statement.map((s: { Condition: unknown }) => s.Condition));
    assert.match(subs, /token\.actions\.githubusercontent\.com:sub/);
    assert.doesNotMatch(subs, /repo:acme\/models:\*"/, `${role.name} trusts every ref`);
  }
});

test("the base references reach the repository as an Actions variable, from the program's outputs", () => {
  const variable = run.resources.find((r) => r.type === "github:index/actionsVariable:ActionsVariable" && r.inputs.variableName === "STRATA_BASE_REFS")!;
  assert.equal(variable.inputs.repository, "models");
  assert.deepEqual(JSON.parse(variable.inputs.value as string), run.outputs.baseRefs);
});

test("the fleet serves strata:github.repositories through a runner group limited to the base-build workflow", () => {
  const group = run.resources.find((r) => r.type === "github:index/actionsRunnerGroup:ActionsRunnerGroup")!;
  assert.equal(group.inputs.visibility, "selected");
  assert.equal(group.inputs.allowsPublicRepositories, false);
  assert.equal(group.inputs.restrictedToWorkflows, true);
  assert.deepEqual(group.inputs.selectedWorkflows, ["acme/models/.github/workflows/strata-build-bases.yml@refs/heads/main"]);
  assert.equal((group.inputs.selectedRepositoryIds as number[]).length, 1);
  const consumer = run.resources.find((r) => r.type === "aws:lambda/function:Function" && /scaleup/.test(r.name))!;
  assert.match(JSON.stringify(consumer.inputs.environment), /STRATA_REPOSITORIES.*acme\/models/);
});
