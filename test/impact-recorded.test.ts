import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { comparePlans, explainRecorded, formatImpact } from "../matrix/impact.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { BASE_DOCKERFILE, RUNTIME_DOCKERFILE, SIMPLE_MATRIX, cleanup, project, simpleProject } from "./helpers.ts";

const dirs: string[] = [];
after(() => dirs.forEach(cleanup));

/** A fresh project per state: identity hashing memoises contexts per directory for the life of the process. */
function plan(matrix?: string, extra: Record<string, string> = {}): BuildPlan {
  const dir = simpleProject(matrix, extra);
  dirs.push(dir);
  return loadMatrix(join(dir, "strata.yaml"));
}

/** What `pulumi stack output bases --json` gives for a plan (index.ts exports these fields per base). */
function recorded(p: BuildPlan, drop: string[] = []) {
  const out = Object.fromEntries(p.bases.map((b) => [b.name, { tag: b.tag, identity: b.hash, platforms: b.platforms, consumers: b.consumers, ref: `reg/bases@sha256:${"0".repeat(64)}`, inputs: b.inputs }]));
  for (const d of drop) delete (out[d] as { inputs?: unknown }).inputs;
  return JSON.parse(JSON.stringify(out));
}

const kinds = (r: ReturnType<typeof explainRecorded>, name: string) => r.bases.find((b) => b.name === name)!.reasons.map(({ detail: _, ...x }) => x);

describe("explainRecorded: why a stack's recorded bases differ from the plan", () => {
  test("a stack up to date with the plan: nothing listed", () => {
    const p = plan();
    const r = explainRecorded(recorded(p), p);
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.rebuild, { bases: [], runtimes: [] });
  });

  test("a build arg, from the recorded args", () => {
    const before = plan();
    const now = plan(SIMPLE_MATRIX.replace("TORCH_VER: 2.7.1+cu126", "TORCH_VER: 2.8.0+cu126"));
    const r = explainRecorded(recorded(before), now);
    assert.deepEqual(kinds(r, "ampere"), [{ kind: "arg", arg: "TORCH_VER", old: "2.7.1+cu126", new: "2.8.0+cu126" }]);
    assert.equal(r.bases[0].change, "changed");
    assert.equal(r.bases[0].oldTag, before.bases[0].tag);
    assert.equal(r.bases[0].newTag, now.bases[0].tag);
    assert.deepEqual(r.bases[0].runtimes, ["app"]);
    assert.deepEqual(r.rebuild, { bases: ["ampere"], runtimes: ["app"] });
  });

  test("a context file, from the recorded per-file digests: modified, added, removed", () => {
    const before = plan(undefined, { "app/setup.cfg": "x\n" });
    const now = plan(undefined, { "app/requirements.txt": "numpy\ntorch\n", "app/extra.txt": "y\n" });
    const r = explainRecorded(recorded(before), now);
    assert.deepEqual(kinds(r, "ampere"), [
      { kind: "file", path: "app/extra.txt" },
      { kind: "file", path: "app/requirements.txt" },
      { kind: "file", path: "app/setup.cfg" },
    ]);
    assert.deepEqual(r.bases[0].reasons.map((x) => x.detail), ["app/extra.txt added to the context", "app/requirements.txt modified", "app/setup.cfg removed from the context"]);
  });

  test("the Dockerfile, from the recorded digest (the file is named; stages need the old text)", () => {
    const before = plan();
    const now = plan(undefined, { "docker/Dockerfile.base": BASE_DOCKERFILE.replace("echo build torch", "echo build torch now") });
    const r = explainRecorded(recorded(before), now);
    assert.deepEqual(kinds(r, "ampere"), [{ kind: "dockerfile", path: "docker/Dockerfile.base" }]);
    assert.match(r.bases[0].reasons[0].detail, /the stages target 'base' runs changed/);
  });

  test("platforms and target, from the recorded values", () => {
    const before = plan();
    const now = plan(SIMPLE_MATRIX.replace("target: base\n", "target: builder\n    platforms: [linux/amd64, linux/arm64]\n").replace("target: runtime\n", "target: runtime\n    platforms: [linux/amd64]\n"));
    const r = explainRecorded(recorded(before), now);
    assert.deepEqual(kinds(r, "ampere"), [
      { kind: "platforms", old: "linux/amd64", new: "linux/amd64,linux/arm64" },
      { kind: "target", old: "base", new: "builder" },
      { kind: "dockerfile", path: "docker/Dockerfile.base" },
    ]);
  });

  test("a base recorded before inputs were exported: changed, cause not nameable", () => {
    const before = plan();
    const now = plan(SIMPLE_MATRIX.replace("TORCH_VER: 2.7.1+cu126", "TORCH_VER: 2.8.0+cu126"));
    const r = explainRecorded(recorded(before, ["ampere"]), now);
    assert.deepEqual(kinds(r, "ampere"), [{ kind: "matrix" }]);
    assert.match(r.bases[0].reasons[0].detail, /recorded no inputs/);
  });

  test("bases added, removed and renamed with respect to the stack", () => {
    const two = `${SIMPLE_MATRIX.replace("runtimes:", `  - name: hopper
    context: app
    dockerfile: docker/Dockerfile.base
    target: base
    cuda: "12.8.1"
    args: { TORCH_VER: 2.8.0+cu128 }
runtimes:`)}`;
    const before = plan(two);
    const now = plan(
      two
        .replace("name: ampere", "name: ampere-sm86")
        .replace("base: ampere", "base: ampere-sm86")
        .replace(/  - name: hopper[\s\S]*?runtimes:/, `  - name: blackwell
    context: app
    dockerfile: docker/Dockerfile.base
    target: base
    cuda: "12.8.1"
    args: { TORCH_VER: 2.8.0+cu128, CUDA_ARCH_LIST: "12.0" }
runtimes:`),
    );
    const r = explainRecorded(recorded(before), now);
    assert.deepEqual(
      r.bases.map((b) => [b.name, b.change, b.renamedFrom]),
      [
        ["blackwell", "added", null],
        ["hopper", "removed", null],
        ["ampere-sm86", "renamed", "ampere"],
      ],
    );
    assert.deepEqual(r.rebuild, { bases: ["blackwell"], runtimes: [] });
  });
});

describe("comparePlans: derived bases (pure)", () => {
  const derived = (entries: string) => `derive:
  entries:
${entries}
  fields: { name: name, lang: lang, platforms: platforms, backend: backend }
  key: [lang]
  base: { dockerfile: docker/Dockerfile.base, context: app, target: base }
  runtime: { dockerfile: docker/Dockerfile.runtime, context: app, args: { BACKEND: "{backend}" } }
`;
  const files = { "docker/Dockerfile.base": BASE_DOCKERFILE, "docker/Dockerfile.runtime": RUNTIME_DOCKERFILE, "app/requirements.txt": "x\n" };
  const load = (m: string) => {
    const dir = project({ "strata.yaml": m, ...files });
    dirs.push(dir);
    return loadMatrix(join(dir, "strata.yaml"));
  };

  test("a consumer that adds a platform to its derived base: reason platforms naming the consumer", () => {
    const before = load(derived(`    - { name: a, lang: py, platforms: linux/amd64, backend: a }
    - { name: b, lang: py, platforms: linux/amd64, backend: b }`));
    const after = load(derived(`    - { name: a, lang: py, platforms: linux/amd64, backend: a }
    - { name: b, lang: py, platforms: "linux/amd64,linux/arm64", backend: b }`));
    const r = comparePlans(before, after, { base: "x", head: "y" });
    assert.deepEqual(r.bases.map((b) => [b.name, b.change]), [["py", "changed"]]);
    assert.equal(r.bases[0].reasons.length, 1);
    assert.equal(r.bases[0].reasons[0].kind, "platforms");
    assert.match(r.bases[0].reasons[0].detail, /linux\/arm64 wanted by consumer 'b'/);
    assert.deepEqual(r.rebuild, { bases: ["py"], runtimes: ["a", "b"] });
    assert.match(formatImpact(r), /py\s+changed/);
  });

  test("the last consumer of a key moving away: the old base is removed, naming where it went", () => {
    const before = load(derived(`    - { name: a, lang: py, platforms: linux/amd64, backend: a }
    - { name: b, lang: go, platforms: linux/amd64, backend: b }`));
    const after = load(derived(`    - { name: a, lang: py, platforms: linux/amd64, backend: a }
    - { name: b, lang: py, platforms: linux/amd64, backend: b }`));
    const r = comparePlans(before, after);
    assert.deepEqual(r.bases.map((b) => [b.name, b.change]), [["go", "removed"]]);
    assert.match(r.bases[0].reasons[0].detail, /'b' → base 'py'/);
    assert.deepEqual(r.runtimes.rebuilt, ["b"]);
    assert.deepEqual(r.rebuild, { bases: [], runtimes: ["b"] });
  });
});
