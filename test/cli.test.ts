import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadMatrix } from "../matrix/load.ts";
import { REPO, SIMPLE_MATRIX, cleanup, noStackTrace, simpleProject, strata } from "./helpers.ts";

const dirs: string[] = [];
after(() => dirs.forEach(cleanup));

function projectWith(matrix: string, stackFiles: Record<string, string> = {}) {
  const dir = simpleProject(matrix, stackFiles);
  dirs.push(dir);
  return dir;
}

describe("strata check", () => {
  test("prints the derived bases of the default matrix", () => {
    const r = strata(["check"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /strata\.yaml: 3 runtime\(s\) on 3 base\(s\)/);
    assert.match(r.stdout, /^ {2}ampere +ampere-[0-9a-f]{12} +linux\/amd64 +1$/m);
  });

  test("--json on the 234-entry fixture lists 29 bases with their consumers", () => {
    const r = strata(["check", "--json", "--matrix", "examples/localai/strata-pr9672.yaml"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { bases: { consumers: string[] }[]; runtimes: unknown[] };
    assert.equal(out.bases.length, 29);
    assert.equal(out.runtimes.length, 234);
    assert.equal(out.bases.flatMap((b) => b.consumers).length, 234);
  });

  test("a bad matrix exits 1 with file:line:col, what is wrong and what to do, and no stack trace", () => {
    const dir = projectWith(SIMPLE_MATRIX.replace("    target: base", "    taget: base"));
    const r = strata(["check"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^strata\.yaml:5:5: error: unknown key 'taget' in bases\[0\]\n {4}fix: did you mean 'target'\?/m);
    assert.match(r.stderr, /1 error\(s\); nothing was declared/);
    assert.equal(r.stdout, "");
    noStackTrace(r.stderr);
  });

  test("warnings are printed and do not fail the check", () => {
    const dir = projectWith(SIMPLE_MATRIX.replace("2.7.1+cu126", "2.7.1+cu124").replace("cu126\n", "cu124\n"));
    const r = strata(["check"], dir);
    assert.equal(r.code, 0);
    assert.match(r.stderr, /strata\.yaml:9:26: warning: base 'ampere': torch is built for CUDA 12\.4/);
  });

  test("a usage mistake exits 2", () => {
    const r = strata(["check", "--matrx", "x"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--matrx'/);
    assert.equal(strata(["frobnicate"]).code, 2);
  });
});

describe("exit status", () => {
  test("is what the README's table and the usage text say", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("\n## CLI\n"), readme.indexOf("\n### Without Pulumi"));
    const rows = Object.fromEntries([...section.matchAll(/^\| (\d) \| (.+) \|$/gm)].map((m) => [m[1], m[2]]));
    assert.deepEqual(Object.keys(rows), ["0", "1", "2", "3"]);
    assert.match(rows["3"], /a bug in strata, never the answer to any input/);

    const bad = projectWith(SIMPLE_MATRIX.replace("target: base", "target: nope"));
    const cases: [string[], string, number][] = [
      [["check"], REPO, 0],
      [["check"], bad, 1],
      [["bake"], bad, 1],
      [["bake", "--stack", "none"], REPO, 2],
      [[], REPO, 2],
      [["check", "--nope"], REPO, 2],
      [["help"], REPO, 0],
    ];
    for (const [args, cwd, code] of cases) assert.equal(strata(args, cwd).code, code, `strata ${args.join(" ")}`);
    const usage = strata(["help"]).stdout;
    assert.match(usage, /Exit status: 0 success; 1 invalid input .*\n.*2 usage error .*3 a bug in strata/);
  });
});

describe("strata plan", () => {
  test("--json runs the program offline and lists bases, runtimes and resources", () => {
    const r = strata(["plan", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout);
    assert.deepEqual(plan.bases.map((b: { name: string }) => b.name), ["turing", "ampere", "hopper"]);
    const ampere = plan.bases[1];
    assert.equal(ampere.buildArgs.CUDA_ARCH_LIST, "8.0;8.6");
    assert.equal(ampere.target, "base");
    assert.equal(ampere.dockerfile, "docker/Dockerfile.base");
    assert.deepEqual(ampere.platforms, ["linux/amd64"]);
    assert.deepEqual(ampere.consumers, ["ampere"]);
    assert.match(ampere.tag, /^ampere-[0-9a-f]{12}$/);
    assert.deepEqual(plan.runtimes.map((r: { name: string; base: string }) => [r.name, r.base]), [["turing", "turing"], ["ampere", "ampere"], ["hopper", "hopper"]]);
    assert.match(plan.runtimes[1].baseImageArg, new RegExp(`^localhost:5000/strata/bases:${ampere.tag}@sha256:[0-9a-f]{64}$`));
    assert.ok(plan.resources.some((x: { type: string; name: string; parent: string }) => x.type === "docker-build:index:Image" && x.name === "base-ampere" && x.parent === "base-ampere"));
  });

  test("the human form shows a table and the resource tree", () => {
    const r = strata(["plan"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Bases \(3\)/m);
    assert.match(r.stdout, /^ {2}strata:images:BaseImage {2}base-turing\n {4}docker-build:index:Image {2}base-turing$/m);
  });

  test("an unknown registry kind is an error at its line in the stack file", () => {
    const dir = projectWith(SIMPLE_MATRIX, { "Pulumi.bad.yaml": "config:\n  strata:registry:\n    kind: quay\n" });
    const r = strata(["plan", "--stack", "bad"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Pulumi\.bad\.yaml:3:11: error: strata:registry\.kind: .*\n {4}fix: use one of: ecr, local, external/);
    noStackTrace(r.stderr);
  });

  test("a misspelt config key is an error, not a silent default", () => {
    const dir = projectWith(SIMPLE_MATRIX, { "Pulumi.typo.yaml": "config:\n  strata:registy:\n    kind: local\n" });
    const r = strata(["plan", "--stack", "typo"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Pulumi\.typo\.yaml:2:3: error: unknown config key 'strata:registy'\n {4}fix: did you mean 'strata:registry'\?/);
  });

  test("an external registry without credentials is an error before anything is declared", () => {
    const dir = projectWith(SIMPLE_MATRIX, { "Pulumi.ext.yaml": "config:\n  strata:registry:\n    kind: external\n    address: ghcr.io\n" });
    const r = strata(["plan", "--stack", "ext"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Pulumi\.ext\.yaml:3:11: error: an external registry needs a username and a password/);
    assert.equal(r.stdout, "");
  });

  test("an external registry with a secret password plans", () => {
    const dir = projectWith(SIMPLE_MATRIX, {
      "Pulumi.ext.yaml": "config:\n  strata:registry:\n    kind: external\n    address: ghcr.io\n    username: bot\n  strata:registryPassword:\n    secure: AAABAHZ\n",
    });
    const r = strata(["plan", "--stack", "ext", "--json"], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).runtimes[0].baseImageArg, /^ghcr\.io\/strata\/bases:ampere-/);
  });
});

describe("strata plan --recorded", () => {
  test("explains in words why the matrix differs from what the stack recorded", () => {
    const dir = projectWith(SIMPLE_MATRIX);
    const recorded = Object.fromEntries(loadMatrix(join(dir, "strata.yaml")).bases.map((b) => [b.name, { tag: b.tag, identity: b.hash, inputs: b.inputs }]));
    writeFileSync(join(dir, "recorded.json"), JSON.stringify(recorded));
    writeFileSync(join(dir, "strata.yaml"), SIMPLE_MATRIX.replace('"8.0;8.6"', '"8.0;8.6;8.9"'));
    const r = strata(["plan", "--recorded", "recorded.json"], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ {2}ampere \(changed\)\n {4}- \[arg\] build arg CUDA_ARCH_LIST: 8\.0;8\.6 → 8\.0;8\.6;8\.9$/m);
    const json = JSON.parse(strata(["plan", "--recorded", "recorded.json", "--json"], dir).stdout);
    assert.deepEqual(json.rebuild.bases, ["ampere"]);
  });

  test("a recorded file that is not JSON is an error naming it", () => {
    const dir = projectWith(SIMPLE_MATRIX, { "recorded.json": "not json" });
    const r = strata(["plan", "--recorded", "recorded.json"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^recorded\.json:1:1: error: cannot read the recorded outputs/m);
  });
});

describe("strata bake", () => {
  test("writes the same builds as a bake file: bases, then runtimes pinned by digest", () => {
    const dir = projectWith(SIMPLE_MATRIX);
    const r = strata(["bake", "--registry", "127.0.0.1:5000", "--version", "v2", "--out", "bake.json"], dir);
    assert.equal(r.code, 0, r.stderr);
    const bake = JSON.parse(readFileSync(join(dir, "bake.json"), "utf8"));
    assert.deepEqual(bake.group.bases.targets, ["base-ampere"]);
    assert.deepEqual(bake.group.runtimes.targets, ["runtime-app"]);
    const base = bake.target["base-ampere"];
    assert.equal(base.context, "app");
    assert.equal(base.dockerfile, "../docker/Dockerfile.base");
    assert.equal(base.target, "base");
    assert.equal(base.args.CUDA_ARCH_LIST, "8.0;8.6");
    assert.match(base.tags[0], /^127\.0\.0\.1:5000\/strata\/bases:ampere-[0-9a-f]{12}$/);
    assert.deepEqual(base["cache-to"], ["type=registry,ref=127.0.0.1:5000/strata/cache:cache-base-ampere,mode=max,image-manifest=true,oci-mediatypes=true"]);
    const runtime = bake.target["runtime-app"];
    assert.equal(runtime.args.BASE_IMAGE, base.tags[0]);
    assert.deepEqual(runtime.tags, ["127.0.0.1:5000/strata/runtimes:app-v2"]);

    const digest = `sha256:${"ab".repeat(32)}`;
    writeFileSync(join(dir, "meta.json"), JSON.stringify({ "base-ampere": { "containerimage.digest": digest } }));
    const pinned = strata(["bake", "--registry", "127.0.0.1:5000", "--pin", "meta.json"], dir);
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.equal(JSON.parse(pinned.stdout).target["runtime-app"].args.BASE_IMAGE, `${base.tags[0]}@${digest}`);
  });

  test("an ECR stack needs --registry: its addresses exist only after pulumi up", () => {
    const dir = projectWith(SIMPLE_MATRIX, { "Pulumi.dev.yaml": "config:\n  strata:registry:\n    kind: ecr\n" });
    const r = strata(["bake"], dir);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /pass --registry/);
  });
});
