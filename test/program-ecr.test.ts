import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runProgram, type ProgramRun, type RecordedResource } from "../cli/program.ts";
import { mutableRuntimeTagFilters } from "../components/registry.ts";
import { SIMPLE_MATRIX, cleanup, simpleProject } from "./helpers.ts";

// An ECR stack whose one base builds for two platforms.
const dir = simpleProject(SIMPLE_MATRIX.replace('cuda: "12.6.3"', 'cuda: "12.6.3"\n    platforms: [linux/amd64, linux/arm64]'));
let run: ProgramRun;
before(async () => {
  run = await runProgram({
    stack: "prod",
    config: {
      "strata:matrix": join(dir, "strata.yaml"),
      "strata:registry": { kind: "ecr", kmsKeyArn: "arn:aws:kms:us-east-1:123456789012:key/abc" },
      "strata:release": { version: "v1.2.3" },
    },
  });
});
after(() => cleanup(dir));

const SECRET = "4dabf18193072939515e22adb298388d";
const of = (type: string) => run.resources.filter((r) => r.type === type);
function findCreatedResource(type: string, name: string): RecordedResource {
  const hits = run.resources.filter((r) => r.type === type && r.name === name);
  assert.equal(hits.length, 1, `expected one ${type} named ${name}`);
  return hits[0];
}

describe("program: ECR registry", () => {
  test("three repositories: bases and released runtimes immutable (pull-request and branch tags excepted), cache writable", () => {
    const repos: Record<string, Record<string, any>> = Object.fromEntries(of("aws:ecr/repository:Repository").map((r) => [r.inputs.name, r.inputs]));
    assert.deepEqual(Object.keys(repos).sort(), ["strata/bases", "strata/cache", "strata/runtimes"]);
    assert.equal(repos["strata/bases"].imageTagMutability, "IMMUTABLE_WITH_EXCLUSION");
    assert.deepEqual(repos["strata/bases"].imageTagMutabilityExclusionFilters, [{ filter: "pr-*", filterType: "WILDCARD" }, { filter: "sha256-*", filterType: "WILDCARD" }]);
    // The runtime workflow tags default-branch builds `<name>-main`: those move, `<name>-v1.2.3` never does.
    assert.equal(repos["strata/runtimes"].imageTagMutability, "IMMUTABLE_WITH_EXCLUSION");
    assert.deepEqual(repos["strata/runtimes"].imageTagMutabilityExclusionFilters, [{ filter: "pr-*", filterType: "WILDCARD" }, { filter: "sha256-*", filterType: "WILDCARD" }, { filter: "*-main", filterType: "WILDCARD" }]);
    assert.equal(repos["strata/cache"].imageTagMutability, "MUTABLE");
    for (const repo of Object.values(repos)) {
      assert.deepEqual(repo.imageScanningConfiguration, { scanOnPush: true });
      assert.deepEqual(repo.encryptionConfigurations, [{ encryptionType: "KMS", kmsKey: "arn:aws:kms:us-east-1:123456789012:key/abc" }]);
      assert.equal(repo.forceDelete, false);
    }
  });

  test("lifecycle rules expire untagged images and pull-request tags, never a tag the matrix uses", () => {
    const policies = of("aws:ecr/lifecyclePolicy:LifecyclePolicy");
    assert.equal(policies.length, 3);
    const tags = Object.values(run.outputs.bases as Record<string, { tag: string }>).map((b) => b.tag);
    for (const p of policies) {
      const rules = JSON.parse(p.inputs.policy as string).rules as { selection: { tagStatus: string; tagPatternList?: string[] } }[];
      assert.deepEqual(rules.map((r) => r.selection.tagStatus), ["untagged", "tagged"]);
      for (const pattern of rules.flatMap((r) => r.selection.tagPatternList ?? [])) {
        const re = new RegExp(`^${pattern.replace(/\*/g, ".*")}$`);
        assert.ok(!tags.some((t) => re.test(t)), `${pattern} would expire a base in use`);
      }
    }
  });

  test("builders authenticate with the ECR authorization token, the password only as a secret", () => {
    const img = findCreatedResource("docker-build:index:Image", "base-ampere-linux-amd64").inputs as Record<string, any>;
    assert.equal(img.registries[SECRET], "1b47061264138c4ac30d75fd1eb44270", "the credentials must arrive as a secret");
    const registries = img.registries.value as { address: string; username: string; password: string }[];
    assert.deepEqual(registries, [{ address: "123456789012.dkr.ecr.us-east-1.amazonaws.com", username: "AWS", password: "offline-ecr-password" }]);
  });

  test("two platforms: one cached Image per platform joined by an Index under the identity tag", () => {
    const repo = "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata";
    const tag = (run.outputs.bases as Record<string, { tag: string }>).ampere.tag;
    const amd = findCreatedResource("docker-build:index:Image", "base-ampere-linux-amd64").inputs as Record<string, any>;
    const arm = findCreatedResource("docker-build:index:Image", "base-ampere-linux-arm64").inputs as Record<string, any>;
    assert.deepEqual(amd.platforms, ["linux/amd64"]);
    assert.deepEqual(arm.platforms, ["linux/arm64"]);
    assert.deepEqual(arm.tags, [`${repo}/bases:${tag}-linux-arm64`]);
    assert.equal(arm.cacheTo[0].registry.ref, `${repo}/cache:cache-base-ampere-linux-arm64`);
    assert.notEqual(amd.cacheTo[0].registry.ref, arm.cacheTo[0].registry.ref);
    const index = findCreatedResource("docker-build:index:Index", "base-ampere");
    assert.equal(index.inputs.tag, `${repo}/bases:${tag}`);
    assert.deepEqual(index.inputs.sources, [
      findCreatedResource("docker-build:index:Image", "base-ampere-linux-amd64").state.ref,
      findCreatedResource("docker-build:index:Image", "base-ampere-linux-arm64").state.ref,
    ]);
    assert.equal(index.parent, "base-ampere");
  });

  test("the runtime builds FROM the Index's digest-pinned reference", () => {
    const index = findCreatedResource("docker-build:index:Index", "base-ampere");
    for (const platform of ["linux-amd64", "linux-arm64"]) {
      const runtime = findCreatedResource("docker-build:index:Image", `runtime-app-${platform}`).inputs as Record<string, any>;
      assert.equal(runtime.buildArgs.BASE_IMAGE, index.state.ref);
      assert.match(runtime.buildArgs.BASE_IMAGE, /@sha256:[0-9a-f]{64}$/);
    }
    const runtimeIndex = findCreatedResource("docker-build:index:Index", "runtime-app");
    assert.equal(runtimeIndex.inputs.tag, "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata/runtimes:app-v1.2.3");
  });
});

describe("mutableRuntimeTagFilters", () => {
  const release = { version: "v1.2.3", branch: "main", sha: "abcdef0" };
  const matches = (filters: string[], tag: string) => filters.some((f) => new RegExp(`^${f.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`).test(tag));

  test("released tags stay immutable; branch, non-release and release-less tags move", () => {
    const f = mutableRuntimeTagFilters(["{name}-{version}", "{name}-latest", "{name}-{sha}"], { defaultBranch: "trunk", release: { ...release, version: "dev" } });
    assert.deepEqual(f, ["pr-*", "sha256-*", "*-trunk", "*-dev", "*-latest"]);
    // cosign re-pushes sha256-<digest>.sig to add a signature; re-attesting moves .spdx/.provenance and the referrers index.
    for (const tag of ["app-trunk", "app-dev", "app-latest", "pr-12-app", `sha256-${"a".repeat(64)}.sig`, `sha256-${"a".repeat(64)}.spdx`, `sha256-${"a".repeat(64)}`]) assert.ok(matches(f, tag), `${tag} is mutable`);
    for (const tag of ["app-v1.2.3", "app-abcdef0"]) assert.ok(!matches(f, tag), `${tag} is immutable`);
    const prefixed = mutableRuntimeTagFilters(["{version}-{name}"], { defaultBranch: "main", release });
    assert.deepEqual(prefixed, ["pr-*", "sha256-*", "main-*"]);
    assert.ok(!matches(prefixed, "v1.2.3-app") && matches(prefixed, "main-app"));
  });

  test("more kinds of mutable tag than ECR keeps filters for is an error saying what to do", () => {
    const templates = ["{name}-{version}", "{version}-{name}", "{base}.{version}", "{version}.{base}", "{name}_{version}"];
    assert.throws(() => mutableRuntimeTagFilters(templates, { defaultBranch: "main", release }), /ECR keeps at most 5 mutable-tag filters per repository: use fewer runtime tag templates/);
  });
});
