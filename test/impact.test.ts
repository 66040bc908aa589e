import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { computeImpact, impactCommand, materialize } from "../cli/impact.ts";
import type { ImpactReport, Reason } from "../matrix/impact.ts";
import { impactJson } from "../matrix/impact.ts";
import { FIXTURES, RUNTIME_DOCKERFILE } from "./helpers.ts";

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com", GIT_CONFIG_NOSYSTEM: "1", HOME: tmpdir() };

function git(dir: string, ...args: string[]): string {
  const res = spawnSync("git", args, { cwd: dir, env: GIT_ENV });
  assert.equal(res.status, 0, `git ${args.join(" ")}: ${res.stderr}`);
  return res.stdout.toString().trim();
}

function write(dir: string, files: Record<string, string>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
}

/** A git repository in a temp dir with `files` committed on main. */
function repo(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "strata-impact-test-"));
  dirs.push(dir);
  git(dir, "-c", "init.defaultBranch=main", "init", "-q");
  write(dir, files);
  commit(dir, "initial");
  return dir;
}

function commit(dir: string, message: string): string {
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "--allow-empty", "-m", message);
  return git(dir, "rev-parse", "HEAD");
}

/** Impact of the working tree against HEAD (or as given). */
function impact(dir: string, opts: { base?: string; head?: string; matrix?: string } = {}): ImpactReport {
  return computeImpact({ cwd: dir, base: opts.base ?? "HEAD", head: opts.head, matrix: opts.matrix ?? "strata.yaml" }).report;
}

/** The sets a reviewer reads off a report. */
function sets(r: ImpactReport) {
  const by = (c: string) => r.bases.filter((b) => b.change === c).map((b) => b.name);
  return { changed: by("changed"), added: by("added"), removed: by("removed"), renamed: by("renamed"), rebuild: r.rebuild, runtimes: r.runtimes };
}

/** Reasons without the sentence, for exact comparison. */
function why(r: ImpactReport, base: string): Omit<Reason, "detail">[] {
  const b = r.bases.find((x) => x.name === base);
  assert.ok(b, `base ${base} is listed`);
  return b.reasons.map(({ detail: _, ...rest }) => rest);
}

function details(r: ImpactReport, base: string): string[] {
  return r.bases.find((x) => x.name === base)!.reasons.map((x) => x.detail);
}

const NOTHING = { bases: [], runtimes: [] };
const NO_RUNTIMES = { added: [], removed: [], rebuilt: [], renamed: [] };

const DOCKERFILE = `ARG CUDA_VERSION=12.6.3
FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-devel-ubuntu22.04 AS builder
ARG TORCH_VER
COPY install.sh /install.sh
RUN /install.sh "\${TORCH_VER}"

FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-runtime-ubuntu22.04 AS base
COPY --from=builder /opt /opt

FROM ubuntu:24.04 AS extras
RUN echo extras > /extras

FROM base AS tools
COPY --from=extras /extras /extras
`;

const MATRIX = `bases:
  - { name: turing, context: ctx, dockerfile: docker/Dockerfile.base, target: base, cuda: "12.6.3", args: { TORCH_VER: "2.7.1", CUDA_ARCH_LIST: "7.5" } }
  - { name: ampere, context: ctx, dockerfile: docker/Dockerfile.base, target: base, cuda: "12.6.3", args: { TORCH_VER: "2.7.1", CUDA_ARCH_LIST: "8.0" } }
  - { name: hopper, context: ctx, dockerfile: docker/Dockerfile.base, target: base, cuda: "12.8.1", args: { TORCH_VER: "2.8.0", CUDA_ARCH_LIST: "9.0" } }
  - { name: tools, context: ctx, dockerfile: docker/Dockerfile.base, target: tools, cuda: "12.6.3", args: { TORCH_VER: "2.7.1", CUDA_ARCH_LIST: "8.0" } }
runtimes:
  - { name: turing-app, base: turing, context: app, dockerfile: docker/Dockerfile.runtime }
  - { name: ampere-app, base: ampere, context: app, dockerfile: docker/Dockerfile.runtime }
  - { name: hopper-app, base: hopper, context: app, dockerfile: docker/Dockerfile.runtime }
  - { name: tools-app, base: tools, context: app, dockerfile: docker/Dockerfile.runtime }
`;

const FILES = {
  "strata.yaml": MATRIX,
  "docker/Dockerfile.base": DOCKERFILE,
  "docker/Dockerfile.base.dockerignore": "*.md\nnotes/\n",
  "docker/Dockerfile.runtime": RUNTIME_DOCKERFILE,
  "ctx/install.sh": "#!/bin/sh\necho install torch $1\n",
  "ctx/requirements.txt": "numpy\n",
  "ctx/README.md": "the base context\n",
  "ctx/notes/todo.txt": "later\n",
  "app/main.py": "print('hi')\n",
};

describe("strata impact: where path matching fails", () => {
  test("no change: nothing listed, nothing to rebuild", () => {
    const dir = repo(FILES);
    const r = impact(dir);
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.rebuild, NOTHING);
    assert.deepEqual(r.runtimes, NO_RUNTIMES);
  });

  test("a script copied into every base rebuilds all of them, each naming the file", () => {
    const dir = repo(FILES);
    write(dir, { "ctx/install.sh": "#!/bin/sh\necho install torch $1 --fast\n" });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["ampere", "hopper", "tools", "turing"]);
    for (const b of ["ampere", "hopper", "tools", "turing"]) assert.deepEqual(why(r, b), [{ kind: "file", path: "ctx/install.sh" }]);
    assert.match(details(r, "ampere")[0], /ctx\/install\.sh modified/);
    assert.deepEqual(r.rebuild, { bases: ["ampere", "hopper", "tools", "turing"], runtimes: ["turing-app", "ampere-app", "hopper-app", "tools-app"] });
    assert.deepEqual(r.runtimes, { ...NO_RUNTIMES, rebuilt: ["turing-app", "ampere-app", "hopper-app", "tools-app"] });
    assert.deepEqual(r.bases.find((b) => b.name === "hopper")!.runtimes, ["hopper-app"]);
  });

  test("the executable bit of a context file is part of the identity", () => {
    const dir = repo(FILES);
    chmodSync(join(dir, "ctx/install.sh"), 0o755);
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["ampere", "hopper", "tools", "turing"]);
    assert.deepEqual(why(r, "turing"), [{ kind: "file", path: "ctx/install.sh" }]);
    // ... and a committed executable bit reads back from the revision as it is in the working tree.
    commit(dir, "chmod");
    assert.deepEqual(impact(dir).bases, []);
  });

  test("an edit in a file the context excludes rebuilds nothing", () => {
    const dir = repo(FILES);
    write(dir, { "ctx/README.md": "edited\n", "ctx/notes/todo.txt": "edited\n", "app/main.py": "print('bye')\n" });
    const r = impact(dir);
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.rebuild, NOTHING);
  });

  test("a .dockerignore change that lets a file in rebuilds with kind dockerignore, naming the file", () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base.dockerignore": "*.md\n" });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["ampere", "hopper", "tools", "turing"]);
    assert.deepEqual(why(r, "ampere"), [{ kind: "dockerignore", path: "ctx/notes/todo.txt" }]);
    assert.match(details(r, "ampere")[0], /ctx\/notes\/todo\.txt now enters the context: docker\/Dockerfile\.base\.dockerignore changed/);
  });

  test("a .dockerignore change that keeps a file out now is reported as leaving the context", () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base.dockerignore": "*.md\nnotes/\nrequirements.txt\n" });
    const r = impact(dir);
    assert.deepEqual(why(r, "turing"), [{ kind: "dockerignore", path: "ctx/requirements.txt" }]);
    assert.match(details(r, "turing")[0], /leaves the context/);
  });

  test("a .dockerignore change that changes nothing effective rebuilds nothing", () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base.dockerignore": "# docs and notes stay out\n*.md\nnotes/\n*.tmp\n" });
    assert.deepEqual(impact(dir).bases, []);
  });

  test("a new file in the context is kind file, not dockerignore", () => {
    const dir = repo(FILES);
    write(dir, { "ctx/patches/fix.patch": "--- a\n" });
    const r = impact(dir);
    assert.deepEqual(why(r, "tools"), [{ kind: "file", path: "ctx/patches/fix.patch" }]);
    assert.match(details(r, "tools")[0], /added to the context/);
  });

  test("a Dockerfile stage used only by another target rebuilds only the bases whose target uses it", () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base": DOCKERFILE.replace("RUN echo extras > /extras", "RUN echo more extras > /extras") });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["tools"]);
    assert.deepEqual(why(r, "tools"), [{ kind: "dockerfile", path: "docker/Dockerfile.base" }]);
    assert.match(details(r, "tools")[0], /stage 'extras' \(line 10\) changed, used by target 'tools'/);
    assert.deepEqual(r.rebuild, { bases: ["tools"], runtimes: ["tools-app"] });
  });

  test("a stage every target uses rebuilds them all, naming the stage; a comment rebuilds nothing", () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base": DOCKERFILE.replace("COPY --from=builder /opt /opt", "COPY --from=builder /opt /opt\nENV X=1") });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["ampere", "hopper", "tools", "turing"]);
    assert.match(details(r, "turing")[0], /stage 'base' \(line 7\) changed/);
    write(dir, { "docker/Dockerfile.base": `# a comment\n${DOCKERFILE}` });
    assert.deepEqual(impact(dir).bases, []);
  });

  test("a build-arg change rebuilds that base only, with the arg and both values", () => {
    const dir = repo(FILES);
    write(dir, { "strata.yaml": MATRIX.replace('TORCH_VER: "2.7.1", CUDA_ARCH_LIST: "8.0" } }\n  - { name: hopper', 'TORCH_VER: "2.7.2", CUDA_ARCH_LIST: "8.0" } }\n  - { name: hopper') });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["ampere"]);
    assert.deepEqual(why(r, "ampere"), [{ kind: "arg", arg: "TORCH_VER", old: "2.7.1", new: "2.7.2" }]);
    assert.deepEqual(r.rebuild, { bases: ["ampere"], runtimes: ["ampere-app"] });
  });

  test("a platforms change rebuilds that base and its runtime", () => {
    const dir = repo(FILES);
    write(dir, { "strata.yaml": MATRIX.replace('CUDA_ARCH_LIST: "9.0" } }', 'CUDA_ARCH_LIST: "9.0" }, platforms: [linux/amd64, linux/arm64] }') });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["hopper"]);
    assert.deepEqual(why(r, "hopper"), [{ kind: "platforms", old: "linux/amd64", new: "linux/amd64,linux/arm64" }]);
    assert.deepEqual(r.runtimes.rebuilt, ["hopper-app"]);
    assert.match(r.runtimeReasons["hopper-app"].join(";"), /base 'hopper' changes identity.*platforms linux\/amd64 → linux\/amd64,linux\/arm64/);
  });

  test("a target change names both targets (and the stages the new target adds)", () => {
    const dir = repo(FILES);
    write(dir, { "strata.yaml": MATRIX.replace("name: turing, context: ctx, dockerfile: docker/Dockerfile.base, target: base", "name: turing, context: ctx, dockerfile: docker/Dockerfile.base, target: tools") });
    const r = impact(dir);
    assert.deepEqual(sets(r).changed, ["turing"]);
    assert.deepEqual(why(r, "turing").map((x) => x.kind), ["target", "dockerfile", "dockerfile"]);
    assert.deepEqual(why(r, "turing")[0], { kind: "target", old: "base", new: "tools" });
    assert.match(details(r, "turing").join("\n"), /stage 'extras' \(line 10\) is now used by target 'tools'/);
  });

  test("a base added and a base removed, with their runtimes", () => {
    const dir = repo(FILES);
    const matrix = MATRIX.replace(/  - \{ name: turing, context.*\n/, "")
      .replace("  - { name: turing-app, base: turing, context: app, dockerfile: docker/Dockerfile.runtime }\n", "")
      .replace("runtimes:\n", '  - { name: blackwell, context: ctx, dockerfile: docker/Dockerfile.base, target: base, cuda: "12.8.1", args: { TORCH_VER: "2.8.0", CUDA_ARCH_LIST: "12.0" } }\nruntimes:\n  - { name: blackwell-app, base: blackwell, context: app, dockerfile: docker/Dockerfile.runtime }\n');
    write(dir, { "strata.yaml": matrix });
    const r = impact(dir);
    assert.deepEqual({ added: sets(r).added, removed: sets(r).removed, changed: sets(r).changed }, { added: ["blackwell"], removed: ["turing"], changed: [] });
    assert.deepEqual(why(r, "blackwell"), [{ kind: "added" }]);
    assert.deepEqual(why(r, "turing"), [{ kind: "removed" }]);
    const turing = r.bases.find((b) => b.name === "turing")!;
    assert.equal(turing.newTag, null);
    assert.match(turing.oldTag!, /^turing-[0-9a-f]{12}$/);
    assert.deepEqual(r.bases.find((b) => b.name === "blackwell")!.runtimes, ["blackwell-app"]);
    assert.deepEqual(r.runtimes, { added: ["blackwell-app"], removed: ["turing-app"], rebuilt: [], renamed: [] });
    assert.deepEqual(r.rebuild, { bases: ["blackwell"], runtimes: ["blackwell-app"] });
  });

  test("a renamed base is renamed, no rebuild; its runtime is not rebuilt; a renamed runtime likewise", () => {
    const dir = repo(FILES);
    write(dir, {
      "strata.yaml": MATRIX.replace("name: ampere, context", "name: ampere-sm80, context")
        .replace("base: ampere,", "base: ampere-sm80,")
        .replace("name: hopper-app", "name: hopper-serve"),
    });
    const r = impact(dir);
    assert.deepEqual(sets(r).renamed, ["ampere-sm80"]);
    const b = r.bases[0];
    assert.equal(b.renamedFrom, "ampere");
    assert.equal(b.oldTag!.slice(-12), b.newTag!.slice(-12), "same identity");
    assert.deepEqual(b.runtimes, []);
    assert.deepEqual(why(r, "ampere-sm80"), [{ kind: "matrix", old: "ampere", new: "ampere-sm80" }]);
    assert.deepEqual(r.runtimes, { added: [], removed: [], rebuilt: [], renamed: [{ from: "hopper-app", to: "hopper-serve" }] });
    assert.deepEqual(r.rebuild, NOTHING);
  });

  test("a renamed base whose contents also change is removed + added (no identity to pair it by)", () => {
    const dir = repo(FILES);
    write(dir, { "strata.yaml": MATRIX.replace("name: ampere, context", "name: ampere2, context").replace("base: ampere,", "base: ampere2,").replace('CUDA_ARCH_LIST: "8.0" } }\n  - { name: hopper', 'CUDA_ARCH_LIST: "8.0;8.6" } }\n  - { name: hopper') });
    const r = impact(dir);
    assert.deepEqual({ added: sets(r).added, removed: sets(r).removed }, { added: ["ampere2"], removed: ["ampere"] });
    assert.deepEqual(r.runtimes.rebuilt, ["ampere-app"]);
    assert.match(r.runtimeReasons["ampere-app"].join(";"), /moved from base 'ampere' to 'ampere2'/);
  });

  test("--head REV compares two commits; the working tree is then ignored", () => {
    const dir = repo(FILES);
    const first = git(dir, "rev-parse", "HEAD");
    write(dir, { "ctx/requirements.txt": "numpy\ntorch\n" });
    commit(dir, "deps");
    write(dir, { "ctx/install.sh": "uncommitted\n" });
    const r = impact(dir, { base: first, head: "HEAD" });
    assert.equal(r.base, first);
    assert.equal(r.head, "HEAD");
    for (const b of ["ampere", "hopper", "tools", "turing"]) assert.deepEqual(why(r, b), [{ kind: "file", path: "ctx/requirements.txt" }]);
  });

  test("the default base is the merge-base with main", () => {
    const dir = repo(FILES);
    git(dir, "checkout", "-q", "-b", "feature");
    write(dir, { "ctx/requirements.txt": "numpy\ntorch\n" });
    commit(dir, "deps");
    git(dir, "checkout", "-q", "main");
    write(dir, { "app/main.py": "main moved on\n" });
    commit(dir, "main");
    git(dir, "checkout", "-q", "feature");
    const res = computeImpact({ cwd: dir, matrix: "strata.yaml" });
    assert.equal(res.baseSha, git(dir, "merge-base", "HEAD", "main"));
    assert.deepEqual(sets(res.report).changed, ["ampere", "hopper", "tools", "turing"]);
  });

  test("a matrix in a subdirectory reaching outside it (context ../shared) reads the whole revision", () => {
    const dir = repo({
      "images/strata.yaml": `bases:\n  - { name: one, context: ../shared, dockerfile: Dockerfile, target: base }\n`,
      "images/Dockerfile": "FROM ubuntu:24.04 AS base\nCOPY . /s\n",
      "shared/lib.sh": "v1\n",
    });
    write(dir, { "shared/lib.sh": "v2\n" });
    const r = impact(dir, { matrix: "images/strata.yaml" });
    assert.deepEqual(why(r, "one"), [{ kind: "file", path: "../shared/lib.sh" }]);
  });
});

describe("strata impact on the 457-entry LocalAI matrix", () => {
  const JSON_FILE = "backend-matrix-master-linux.json";
  function localai(): { dir: string; entries: Record<string, string>[] } {
    const dir = mkdtempSync(join(tmpdir(), "strata-impact-localai-"));
    dirs.push(dir);
    cpSync(FIXTURES, dir, { recursive: true });
    git(dir, "-c", "init.defaultBranch=main", "init", "-q");
    commit(dir, "fixture");
    return { dir, entries: JSON.parse(readFileSync(join(dir, JSON_FILE), "utf8")) };
  }
  const edit = (dir: string, entries: Record<string, string>[], i: number, field: string, value: string) => {
    const copy = entries.map((e) => ({ ...e }));
    copy[i][field] = value;
    writeFileSync(join(dir, JSON_FILE), JSON.stringify(copy, null, 1) + "\n");
  };
  const OLD_BASE = "python-l4t-12-0-2204-nvcr.io-nvidia-l4t-jetpack-r36.4.0";
  const NEW_BASE = "python-l4t-12-8-2204-nvcr.io-nvidia-l4t-jetpack-r36.4.0";

  test("a key field of one consumer among 457 (committed): exactly one new base and that one runtime", () => {
    const { dir, entries } = localai();
    assert.equal(entries.length, 457);
    assert.equal(entries[0]["tag-suffix"], "-nvidia-l4t-diffusers");
    edit(dir, entries, 0, "cuda-minor-version", "8");
    commit(dir, "cuda 12.8 for l4t diffusers");
    const r = impact(dir, { base: "HEAD~1", head: "HEAD", matrix: "strata-master.yaml" });
    assert.deepEqual(sets(r).added, [NEW_BASE]);
    assert.deepEqual(r.bases.map((b) => b.name), [NEW_BASE], `the old base keeps 15 consumers and its identity: ${OLD_BASE}`);
    assert.deepEqual(why(r, NEW_BASE), [{ kind: "added" }, { kind: "matrix", old: OLD_BASE, new: NEW_BASE }]);
    assert.match(details(r, NEW_BASE)[1], /consumer 'nvidia-l4t-diffusers' moved here from base '.*' \(cudaMinor: '0' → '8'\)/);
    assert.deepEqual(r.runtimes, { added: [], removed: [], rebuilt: ["nvidia-l4t-diffusers"], renamed: [] });
    assert.deepEqual(r.rebuild, { bases: [NEW_BASE], runtimes: ["nvidia-l4t-diffusers"] });
  });

  test("a consumer field outside the key that the base does not use: that runtime only, no base", () => {
    const { dir, entries } = localai();
    edit(dir, entries, 0, "backend", "diffusers-next");
    const r = impact(dir, { matrix: "strata-master.yaml" });
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.rebuild, { bases: [], runtimes: ["nvidia-l4t-diffusers"] });
    assert.deepEqual(r.runtimeReasons["nvidia-l4t-diffusers"], ["build arg BACKEND: diffusers → diffusers-next"]);
  });

  test("a consumer field strata does not map (runs-on) changes nothing at all", () => {
    const { dir, entries } = localai();
    edit(dir, entries, 0, "runs-on", "ubuntu-24.04-arm-large");
    const r = impact(dir, { matrix: "strata-master.yaml" });
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.rebuild, NOTHING);
    assert.deepEqual(r.runtimes, NO_RUNTIMES);
  });

  test("a consumer moving into an existing base: no base rebuild unless its platforms change", () => {
    const { dir, entries } = localai();
    // nvidia-l4t-diffusers (python, l4t 12.0) → the cpu python base on ubuntu 24.04, which already exists.
    const copy = entries.map((e) => ({ ...e }));
    Object.assign(copy[0], { "build-type": "", "cuda-major-version": "", "cuda-minor-version": "", "base-image": "ubuntu:24.04", "ubuntu-version": "2404" });
    writeFileSync(join(dir, JSON_FILE), JSON.stringify(copy, null, 1) + "\n");
    const r = impact(dir, { matrix: "strata-master.yaml" });
    // python-cpu-2404 already builds for amd64 and arm64, so it keeps its identity; the old base keeps arm64 too.
    assert.deepEqual(r.bases, []);
    assert.deepEqual(r.runtimes.rebuilt, ["nvidia-l4t-diffusers"]);
    assert.match(r.runtimeReasons["nvidia-l4t-diffusers"][0], /moved from base 'python-l4t-12-0-.*' to 'python-cpu-2404-ubuntu-24.04' \(buildType: 'l4t' → 'cpu', cudaMajor: '12' → '', cudaMinor: '0' → '', ubuntu: '2204' → '2404', osImage: 'nvcr.io\/nvidia\/l4t-jetpack:r36.4.0' → 'ubuntu:24.04'\)/);
  });

  test("the shared GPU SDK script rebuilds every base that copies it", () => {
    const { dir } = localai();
    write(dir, { "bases/install-gpu-sdk.sh": readFileSync(join(dir, "bases/install-gpu-sdk.sh"), "utf8") + "# pin\n" });
    const r = impact(dir, { matrix: "strata-master.yaml" });
    assert.equal(sets(r).changed.length, 45, "every base's context is bases/");
    for (const b of r.bases) assert.deepEqual(b.reasons.map((x) => [x.kind, x.path]), [["file", "bases/install-gpu-sdk.sh"]]);
    assert.equal(r.rebuild.runtimes.length, 457);
  });
});

describe("strata impact CLI", () => {
  async function run(cwd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
    const prev = process.cwd();
    const out: string[] = [];
    const err: string[] = [];
    const ow = process.stdout.write.bind(process.stdout);
    const ew = process.stderr.write.bind(process.stderr);
    process.chdir(cwd);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      const code = await impactCommand(args);
      return { code, out: out.join(""), err: err.join("") };
    } finally {
      process.stdout.write = ow;
      process.stderr.write = ew;
      process.chdir(prev);
    }
  }

  test("--json prints one object with exactly the contract's fields; exit 0 with something to rebuild", async () => {
    const dir = repo(FILES);
    write(dir, { "ctx/requirements.txt": "numpy\ntorch\n" });
    const { code, out } = await run(dir, ["--base", "HEAD", "--json"]);
    assert.equal(code, 0);
    const j = JSON.parse(out);
    assert.deepEqual(Object.keys(j), ["base", "head", "bases", "runtimes", "rebuild", "shards", "forecast"]);
    assert.equal(j.forecast.headline, "this change rebuilds 4 bases: no history to forecast from");
    delete j.forecast;
    assert.equal(j.head, "worktree");
    assert.deepEqual(Object.keys(j.bases[0]), ["name", "change", "oldTag", "newTag", "renamedFrom", "reasons", "runtimes"]);
    assert.deepEqual(Object.keys(j.runtimes), ["added", "removed", "rebuilt", "renamed"]);
    assert.deepEqual(j.rebuild.bases, ["ampere", "hopper", "tools", "turing"]);
    assert.deepEqual(j, JSON.parse(JSON.stringify(impactJson(impact(dir)))));
  });

  test("the human table names bases, tags and reasons; exit 0", async () => {
    const dir = repo(FILES);
    write(dir, { "docker/Dockerfile.base": DOCKERFILE.replace("RUN echo extras > /extras", "RUN echo more > /extras") });
    const { code, out } = await run(dir, ["--base", "HEAD"]);
    assert.equal(code, 0);
    assert.match(out, /Rebuild: 1 base\(s\), 1 runtime\(s\)/);
    assert.match(out, /BASE\s+CHANGE\s+OLD TAG\s+NEW TAG\s+RUNTIMES/);
    assert.match(out, /tools\s+changed\s+tools-[0-9a-f]{12}\s+tools-[0-9a-f]{12}\s+tools-app/);
    assert.match(out, /\[dockerfile\] docker\/Dockerfile\.base: stage 'extras'/);
  });

  test("nothing changed: exit 0 and says so", async () => {
    const dir = repo(FILES);
    const { code, out } = await run(dir, ["--base", "HEAD"]);
    assert.equal(code, 0);
    assert.match(out, /nothing to rebuild/);
  });

  test("an invalid matrix at a revision: exit 1, naming the revision and the file at it", async () => {
    const dir = repo({ ...FILES, "strata.yaml": MATRIX.replace("base: hopper,", "base: hoper,") });
    git(dir, "tag", "broken");
    write(dir, { "strata.yaml": MATRIX });
    const { code, err } = await run(dir, ["--base", "broken"]);
    assert.equal(code, 1);
    assert.match(err, /^broken:strata\.yaml:\d+:\d+: error: runtime 'hopper-app' names base 'hoper'/m);
    assert.match(err, /invalid at broken/);
    commit(dir, "fixed");
    write(dir, { "strata.yaml": "bases: 3\n" });
    const wt = await run(dir, ["--base", "HEAD"]);
    assert.equal(wt.code, 1);
    assert.match(wt.err, /invalid at the working tree/);
  });

  test("usage and git errors: exit 2", async () => {
    const dir = repo(FILES);
    assert.equal((await run(dir, ["--bogus"])).code, 2);
    const unknown = await run(dir, ["--base", "no-such-rev"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /unknown revision 'no-such-rev'/);
    const notRepo = mkdtempSync(join(tmpdir(), "strata-impact-norepo-"));
    dirs.push(notRepo);
    const nr = await run(notRepo, ["--base", "HEAD"]);
    assert.equal(nr.code, 2);
    assert.match(nr.err, /not in a git repository/);
    const missing = await run(dir, ["--base", "HEAD", "--matrix", "nope.yaml"]);
    assert.equal(missing.code, 2);
    assert.match(missing.err, /exists at neither/);
    const help = await run(dir, ["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.out, /Exit status:\n  0 .*\n  1 .*\n  2 /);
  });

  test("a matrix new at head: everything added, with a note", async () => {
    const dir = repo({ "README.md": "x\n" });
    write(dir, FILES);
    const { code, out, err } = await run(dir, ["--base", "HEAD", "--json"]);
    assert.equal(code, 0);
    assert.match(err, /does not exist at HEAD: every entry is added/);
    assert.deepEqual(JSON.parse(out).rebuild.bases, ["ampere", "hopper", "tools", "turing"]);
  });
});

describe("materialize", () => {
  test("writes a revision's files with their executable bit and symlinks, and only under the subdirectory", () => {
    const dir = repo({ "a/run.sh": "#!/bin/sh\n", "a/data.txt": "d\n", "b/other.txt": "o\n" });
    chmodSync(join(dir, "a/run.sh"), 0o755);
    spawnSync("ln", ["-s", "data.txt", join(dir, "a/link")]);
    const sha = commit(dir, "modes");
    const out = mkdtempSync(join(tmpdir(), "strata-impact-mat-"));
    dirs.push(out);
    const written = materialize(dir, sha, "a", out);
    assert.deepEqual([...written].sort(), ["a/data.txt", "a/link", "a/run.sh"]);
    assert.equal(readFileSync(join(out, "a/link"), "utf8"), "d\n");
    assert.ok(spawnSync("test", ["-x", join(out, "a/run.sh")]).status === 0);
    assert.ok(spawnSync("test", ["-x", join(out, "a/data.txt")]).status !== 0);
  });
});
