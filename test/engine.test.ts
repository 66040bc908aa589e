// Integration test on a real Docker engine (see test/engine/harness.ts, .ci/engine-deps.sh):
// strata's bake file builds the bases, pushes them and their registry cache, builds each runtime
// FROM its base pinned by digest, rebuilds from the registry cache after a local wipe with identical
// digests, and rebuilds only what a changed build arg touches.
//
// Known engine behaviour (dockerd 26.1.5 / BuildKit 0.13 via the docker driver, containerd store): when
// runtimes of different bases start with an identical `COPY app/ /app/` followed by a RUN, that RUN misses
// the registry cache at random after wipeLocal() (about one target in two), so the fixture's runtime runs
// its RUN before the COPY. docker/Dockerfile.runtime (COPY . /app, then RUN pip install) has that pattern.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
import { parseDocument } from "yaml";
import type { BakeFile } from "../cli/bake.ts";
import { MANIFEST_TYPES } from "../cli/registry.ts";
import { buildPythonImage, engineFor, REPO_ROOT, run } from "./engine/harness.ts";

const FIXTURE = join(REPO_ROOT, "test/fixtures/engine");
const MATRIX = join(FIXTURE, "strata.yaml");
const CLI = join(REPO_ROOT, "bin/strata.mjs");
/** Fixed timestamps (image config `created`, history) so identical builds give identical digests. */
const SOURCE_DATE_EPOCH = "0";

// ------------------------------------------------------------------------------------------
// The bake file, as `strata bake` writes it.

/** `docker buildx bake --metadata-file` output: per target, at least the pushed digest. */
type BakeMetadata = Record<string, { "containerimage.digest"?: string; "image.name"?: string } | string>;

async function writeBakeFile(registry: string, matrixPath: string, out: string, pinFile?: string): Promise<BakeFile> {
  const args = [CLI, "bake", "--matrix", matrixPath, "--registry", registry, "--out", out, ...(pinFile ? ["--pin", pinFile] : [])];
  const r = await run(process.execPath, args, { cwd: REPO_ROOT, env: process.env, timeoutMs: 60_000 });
  assert.equal(r.code, 0, `node ${args.map((a) => relative(REPO_ROOT, a) || a).join(" ")} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(await readFile(out, "utf8")) as BakeFile;
}

function readMetadata(file: string): BakeMetadata {
  return JSON.parse(readFileSync(file, "utf8")) as BakeMetadata;
}

function digestOf(meta: BakeMetadata, targetName: string): string {
  const m = meta[targetName];
  const d = typeof m === "object" ? m["containerimage.digest"] : undefined;
  assert.match(d ?? "", /^sha256:[0-9a-f]{64}$/, `bake metadata has no containerimage.digest for ${targetName}: ${JSON.stringify(m)}`);
  return d!;
}

/** The registry cache ref a target reads (and must also write). */
function cacheRef(bake: BakeFile, target: string): string {
  const from = bake.target[target]?.["cache-from"] ?? [];
  assert.equal(from.length, 1, `${target} cache-from: ${JSON.stringify(from)}`);
  const m = /^type=registry,ref=([^,]+)$/.exec(from[0]);
  assert.ok(m, `${target} cache-from is not a plain registry cache: ${from[0]}`);
  return m[1];
}

/** Checks a bake file against the CLI contract. */
function checkBakeShape(bake: BakeFile, registry: string, bases: string[], runtimes: string[]): void {
  assert.deepEqual(new Set(bake.group.bases?.targets), new Set(bases.map((b) => `base-${b}`)), "group 'bases'");
  assert.deepEqual(new Set(bake.group.runtimes?.targets), new Set(runtimes.map((r) => `runtime-${r}`)), "group 'runtimes'");
  // `default` holds at least the bases (the CLI builds runtimes only in their own, pinned, step).
  const def = new Set(bake.group.default?.targets);
  for (const b of bases) assert.ok(def.has(`base-${b}`) || def.has("bases"), `group 'default' does not contain base-${b}`);
  const esc = registry.replace(/[.]/g, "\\.");
  const cacheRefs = new Set<string>();
  const checkCache = (target: string, kind: string, name: string) => {
    const t = bake.target[target];
    const ref = cacheRef(bake, target);
    assert.match(ref, new RegExp(`^${esc}/strata/cache:([a-z0-9._-]*-)?${kind}-${name}$`), `${target} cache ref`);
    assert.ok(!cacheRefs.has(ref), `${target} shares its cache ref ${ref} with another target`);
    cacheRefs.add(ref);
    assert.equal(t["cache-to"].length, 1, `${target} cache-to`);
    for (const part of [`ref=${ref}`, "type=registry", "mode=max", "image-manifest=true", "oci-mediatypes=true"])
      assert.ok(t["cache-to"][0].split(",").includes(part), `${target} cache-to lacks ${part}: ${t["cache-to"][0]}`);
    assert.deepEqual(t.output, ["type=registry"], `${target} output`);
  };
  for (const b of bases) {
    const t = bake.target[`base-${b}`];
    assert.ok(t, `bake file has no target base-${b}`);
    assert.equal(t.tags.length, 1, `base-${b} tags`);
    assert.match(t.tags[0], new RegExp(`^${esc}/strata/bases:${b}-[0-9a-f]{12}$`), `base-${b} tag`);
    assert.equal(t.target, "base");
    checkCache(`base-${b}`, "base", b);
  }
  for (const r of runtimes) {
    const t = bake.target[`runtime-${r}`];
    assert.ok(t, `bake file has no target runtime-${r}`);
    assert.ok(t.tags.length >= 1 && t.tags.every((x) => x.startsWith(`${registry}/strata/runtimes:${r}-`)), `runtime-${r} tags: ${t.tags}`);
    assert.ok(t.args.BASE_IMAGE?.startsWith(`${registry}/strata/bases:`), `runtime-${r} BASE_IMAGE: ${t.args.BASE_IMAGE}`);
    checkCache(`runtime-${r}`, "runtime", r);
  }
}

// ------------------------------------------------------------------------------------------
// Build output (--progress=plain): which steps ran and which came from cache.

interface Step {
  id: number;
  name: string;
  cached: boolean;
  done: boolean;
}

function parseSteps(out: string): Step[] {
  const steps = new Map<number, Step>();
  for (const line of out.split("\n")) {
    const m = /^#(\d+) (.*)$/.exec(line.trimEnd());
    if (!m) continue;
    const id = Number(m[1]);
    let s = steps.get(id);
    if (!s) steps.set(id, (s = { id, name: m[2], cached: false, done: false }));
    if (m[2] === "CACHED") s.cached = true;
    if (m[2].startsWith("DONE")) s.done = true;
  }
  return [...steps.values()];
}

/** RUN steps of one bake target, e.g. `[base-alpha builder 4/4] RUN ...`. */
function runSteps(steps: Step[], target: string): Step[] {
  return steps.filter((s) => s.name.startsWith(`[${target} `) && / RUN /.test(s.name));
}

// ------------------------------------------------------------------------------------------
// Registry HTTP API.

const MANIFEST_ACCEPT = MANIFEST_TYPES.join(", ");

interface Manifest {
  mediaType?: string;
  config: { digest: string; mediaType: string };
  layers: { digest: string; mediaType: string }[];
}

async function tagsList(registry: string, repo: string): Promise<string[]> {
  const r = await fetch(`http://${registry}/v2/${repo}/tags/list`);
  assert.equal(r.status, 200, `GET /v2/${repo}/tags/list: HTTP ${r.status} ${await r.clone().text()}`);
  return ((await r.json()) as { tags: string[] | null }).tags ?? [];
}

async function getManifest(registry: string, repo: string, ref: string): Promise<{ digest: string; manifest: Manifest }> {
  const r = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const body = await r.text();
  assert.equal(r.status, 200, `GET /v2/${repo}/manifests/${ref}: HTTP ${r.status} ${body}`);
  const manifest = JSON.parse(body) as Manifest;
  assert.ok(Array.isArray(manifest.layers), `${repo}:${ref} is not a single-platform image manifest: ${body.slice(0, 300)}`);
  return { digest: r.headers.get("docker-content-digest") ?? "", manifest };
}

async function getBlob(registry: string, repo: string, digest: string): Promise<Buffer> {
  const r = await fetch(`http://${registry}/v2/${repo}/blobs/${digest}`);
  assert.equal(r.status, 200, `GET blob ${repo}@${digest}: HTTP ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

/** Names of the entries in a (gzipped) tar layer. */
function tarNames(layer: Buffer): string[] {
  const tar = layer[0] === 0x1f && layer[1] === 0x8b ? gunzipSync(layer) : layer;
  const names: string[] = [];
  let paxPath: string | undefined;
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, b: number) => h.subarray(a, b).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(str(124, 136).trim() || "0", 8);
    const type = String.fromCharCode(h[156]);
    const body = tar.subarray(off + 512, off + 512 + size);
    if (type === "x") {
      paxPath = /\d+ path=([^\n]*)\n/.exec(body.toString("utf8"))?.[1];
    } else if (type !== "g") {
      const prefix = str(345, 500);
      names.push((paxPath ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100))).replace(/^\.?\//, ""));
      paxPath = undefined;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

// ------------------------------------------------------------------------------------------


test("strata bases and runtimes on a real Docker engine: push, pin by digest, registry cache, reproducible digests", { timeout: 300_000 }, async (t) => {
  const started = await engineFor(t, "strata-engine-test-");
  if (!started) return;
  const { engine, work } = started;
  const reg = engine.registry;
  t.diagnostic(`engine up in ${engine.startMs} ms: ${JSON.stringify(engine.versions)}; registry ${reg}`);

  const bake = async (file: string, group: string, meta: string) => {
    const t0 = Date.now();
    const r = await engine.docker(["buildx", "bake", "-f", file, group, "--metadata-file", meta, "--progress=plain"], {
      cwd: REPO_ROOT,
      env: { SOURCE_DATE_EPOCH },
      timeoutMs: 240_000,
    });
    const ms = Date.now() - t0;
    // BuildKit writes progress to stderr
    const out = r.stderr + r.stdout;
    await writeFile(meta.replace(/\.json$/, ".log"), out);
    assert.equal(r.code, 0, `docker buildx bake -f ${file} ${group} failed (exit ${r.code}):\n${out.slice(-6000)}\n${engine.logs(20)}`);
    return { out, ms, steps: parseSteps(out), meta: readMetadata(meta) };
  };
  const timings: Record<string, number> = { engineStart: engine.startMs };

  // ---- bake files from the matrix
  const bake1 = join(work, "bake.json");
  const plan1 = await writeBakeFile(reg, MATRIX, bake1);
  checkBakeShape(plan1, reg, ["alpha", "beta"], ["app-alpha", "app-beta"]);
  const baseTag = (b: BakeFile, name: string) => b.target[`base-${name}`].tags[0];

  // ---- (a) cold build of the bases, pushed to the registry with their cache
  const cold = await bake(bake1, "bases", join(work, "meta-bases-1.json"));
  timings.coldBases = cold.ms;
  const baseDigest1: Record<string, string> = {};
  const baseManifest: Record<string, Manifest> = {};
  await t.test("(a) bases are built and pushed with their registry cache", async () => {
    const tags = await tagsList(reg, "strata/bases");
    for (const name of ["alpha", "beta"]) {
      const ref = baseTag(plan1, name);
      const tag = ref.split(":").pop()!;
      assert.ok(tags.includes(tag), `registry strata/bases has no tag ${tag}: ${tags}`);
      const { digest, manifest } = await getManifest(reg, "strata/bases", tag);
      baseDigest1[name] = digestOf(cold.meta, `base-${name}`);
      assert.equal(digest, baseDigest1[name], `registry digest of ${tag} differs from bake metadata`);
      baseManifest[name] = manifest;
      // The builder RUN really ran on the cold build.
      const runs = runSteps(cold.steps, `base-${name}`);
      assert.ok(runs.length >= 1, `no RUN step of base-${name} in the build output`);
      assert.ok(runs.every((s) => s.done && !s.cached), `cold build of base-${name} took RUN steps from cache: ${JSON.stringify(runs)}`);
      // Slim base: the builder's artefacts are there, its intermediate objects are not.
      const files = new Set<string>();
      for (const l of manifest.layers) for (const n of tarNames(await getBlob(reg, "strata/bases", l.digest))) files.add(n);
      for (const f of ["opt/strata/greeting", "opt/strata/greeting.sum", "bin/busybox"]) assert.ok(files.has(f), `base ${name} lacks /${f}`);
      assert.ok(![...files].some((f) => f.startsWith("work/")), `base ${name} contains builder files: ${[...files].filter((f) => f.startsWith("work/"))}`);
      const config = JSON.parse((await getBlob(reg, "strata/bases", manifest.config.digest)).toString("utf8")) as {
        created?: string;
        config?: { Env?: string[] };
      };
      assert.ok(config.config?.Env?.includes(`STRATA_GREETING=hello-${name}`), `base ${name} Env: ${config.config?.Env}`);
      assert.equal(config.created, "1970-01-01T00:00:00Z", `base ${name} config.created (SOURCE_DATE_EPOCH not applied?)`);
    }
    const cacheTags = await tagsList(reg, "strata/cache");
    for (const c of ["base-alpha", "base-beta"].map((x) => cacheRef(plan1, x).split(":").pop()!))
      assert.ok(cacheTags.includes(c), `registry cache strata/cache has no tag ${c}: ${cacheTags}`);
  });

  // ---- (b) runtimes FROM their base pinned by digest
  const bake2 = join(work, "bake-pinned.json");
  const plan2 = await writeBakeFile(reg, MATRIX, bake2, join(work, "meta-bases-1.json"));
  checkBakeShape(plan2, reg, ["alpha", "beta"], ["app-alpha", "app-beta"]);
  const rt1 = await bake(bake2, "runtimes", join(work, "meta-runtimes-1.json"));
  timings.coldRuntimes = rt1.ms;
  const rtDigest1: Record<string, string> = {};
  await t.test("(b) runtimes are built FROM their base by digest and pushed", async () => {
    const tags = await tagsList(reg, "strata/runtimes");
    for (const [rt, base] of [["app-alpha", "alpha"], ["app-beta", "beta"]] as const) {
      const pinned = plan2.target[`runtime-${rt}`].args.BASE_IMAGE;
      assert.equal(pinned, `${baseTag(plan1, base)}@${baseDigest1[base]}`, `runtime-${rt} BASE_IMAGE is not pinned to the pushed base digest`);
      assert.ok(rt1.out.includes(`FROM ${pinned}`), `build output of runtime-${rt} has no 'FROM ${pinned}' step`);
      const runs = runSteps(rt1.steps, `runtime-${rt}`);
      assert.ok(runs.length >= 1 && runs.every((s) => s.done && !s.cached), `runtime-${rt} RUN steps on the cold build: ${JSON.stringify(runs)}`);
      rtDigest1[rt] = digestOf(rt1.meta, `runtime-${rt}`);
      for (const ref of plan2.target[`runtime-${rt}`].tags) {
        const tag = ref.split(":").pop()!;
        assert.ok(tags.includes(tag), `registry strata/runtimes has no tag ${tag}: ${tags}`);
        const { digest, manifest } = await getManifest(reg, "strata/runtimes", tag);
        assert.equal(digest, rtDigest1[rt], `registry digest of runtimes:${tag} differs from bake metadata`);
        // Built FROM the base: the base's layers, in order, are the runtime's first layers.
        const baseLayers = baseManifest[base].layers.map((l) => l.digest);
        assert.deepEqual(manifest.layers.slice(0, baseLayers.length).map((l) => l.digest), baseLayers, `runtime ${rt} does not start with base ${base}'s layers`);
        assert.ok(manifest.layers.length > baseLayers.length, `runtime ${rt} adds no layer`);
        const files = new Set<string>();
        for (const l of manifest.layers.slice(baseLayers.length)) for (const n of tarNames(await getBlob(reg, "strata/runtimes", l.digest))) files.add(n);
        for (const f of ["app/run.sh", "app/selftest.txt"]) assert.ok(files.has(f), `runtime ${rt} lacks /${f}`);
      }
    }
    const cacheTags = await tagsList(reg, "strata/cache");
    for (const c of ["runtime-app-alpha", "runtime-app-beta"].map((x) => cacheRef(plan2, x).split(":").pop()!))
      assert.ok(cacheTags.includes(c), `registry cache strata/cache has no tag ${c}: ${cacheTags}`);
  });

  // ---- (c) + (d) wipe everything local; rebuild from the registry cache, same digests
  await engine.wipeLocal();
  let warmBaseMeta: BakeMetadata = {};
  let warmRuntimeMeta: BakeMetadata = {};
  await t.test("(c) after wiping local images and build cache, the rebuild takes its steps from the registry cache", async () => {
    const images = (await engine.docker(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])).stdout.trim().split("\n");
    assert.deepEqual(images, [engine.tinyImage], "local images after wipeLocal()");
    const du = await engine.docker(["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert.match(du.stdout, /^Build Cache 0$/m, `build cache after wipeLocal(): ${du.stdout}`);

    const warmBases = await bake(bake1, "bases", join(work, "meta-bases-2.json"));
    const warmRuntimes = await bake(bake2, "runtimes", join(work, "meta-runtimes-2.json"));
    warmBaseMeta = warmBases.meta;
    warmRuntimeMeta = warmRuntimes.meta;
    timings.cachedBases = warmBases.ms;
    timings.cachedRuntimes = warmRuntimes.ms;
    for (const [b, target] of [[warmBases, "base-alpha"], [warmBases, "base-beta"], [warmRuntimes, "runtime-app-alpha"], [warmRuntimes, "runtime-app-beta"]] as const) {
      const runs = runSteps(b.steps, target);
      assert.ok(runs.length >= 1, `no RUN step of ${target} in the rebuild output:\n${b.out.slice(-3000)}`);
      assert.ok(runs.every((s) => s.cached), `${target}: RUN steps not CACHED after wipe: ${JSON.stringify(runs.filter((s) => !s.cached))}`);
      const ref = cacheRef(target.startsWith("base-") ? plan1 : plan2, target);
      assert.ok(b.out.includes(`importing cache manifest from ${ref}`), `${target} did not import its registry cache ${ref}`);
    }
  });

  await t.test("(d) identical rebuilds give identical digests", () => {
    for (const b of ["alpha", "beta"]) assert.equal(digestOf(warmBaseMeta, `base-${b}`), baseDigest1[b], `base-${b} digest changed on an identical rebuild`);
    for (const r of ["app-alpha", "app-beta"]) assert.equal(digestOf(warmRuntimeMeta, `runtime-${r}`), rtDigest1[r], `runtime-${r} digest changed on an identical rebuild`);
  });

  // ---- (e) a changed build arg on alpha: new alpha base + runtime, beta untouched
  await t.test("(e) changing alpha's build arg rebuilds alpha and its runtime only", async () => {
    // A copy of the fixture (inside the copy, as the matrix's repository must hold its contexts), one arg changed.
    const changedDir = join(work, "changed");
    await cp(FIXTURE, changedDir, { recursive: true });
    const doc = parseDocument(await readFile(MATRIX, "utf8"));
    doc.setIn(["bases", 0, "args", "GREETING"], "hello-alpha-2");
    assert.equal(doc.getIn(["bases", 0, "name"]), "alpha");
    const changedMatrix = join(changedDir, "strata.yaml");
    await writeFile(changedMatrix, doc.toString());

    const bake3 = join(work, "bake-changed.json");
    const plan3 = await writeBakeFile(reg, changedMatrix, bake3);
    checkBakeShape(plan3, reg, ["alpha", "beta"], ["app-alpha", "app-beta"]);
    assert.notEqual(baseTag(plan3, "alpha"), baseTag(plan1, "alpha"), "alpha's tag must change with its build args");
    assert.equal(baseTag(plan3, "beta"), baseTag(plan1, "beta"), "beta's tag must not change");

    const b3 = await bake(bake3, "bases", join(work, "meta-bases-3.json"));
    timings.changedBases = b3.ms;
    const alphaRuns = runSteps(b3.steps, "base-alpha");
    assert.ok(alphaRuns.length >= 1 && alphaRuns.every((s) => s.done && !s.cached), `base-alpha builder should have run: ${JSON.stringify(alphaRuns)}`);
    const betaRuns = runSteps(b3.steps, "base-beta");
    assert.ok(betaRuns.length >= 1 && betaRuns.every((s) => s.cached), `base-beta should be all cached: ${JSON.stringify(betaRuns)}`);
    const alpha3 = digestOf(b3.meta, "base-alpha");
    assert.notEqual(alpha3, baseDigest1.alpha, "alpha's digest must change");
    assert.equal(digestOf(b3.meta, "base-beta"), baseDigest1.beta, "beta's digest must not change");
    const baseTags = await tagsList(reg, "strata/bases");
    for (const ref of [baseTag(plan1, "alpha"), baseTag(plan3, "alpha"), baseTag(plan1, "beta")])
      assert.ok(baseTags.includes(ref.split(":").pop()!), `registry strata/bases lacks ${ref}: ${baseTags}`);

    const bake4 = join(work, "bake-changed-pinned.json");
    const plan4 = await writeBakeFile(reg, changedMatrix, bake4, join(work, "meta-bases-3.json"));
    assert.equal(plan4.target["runtime-app-alpha"].args.BASE_IMAGE, `${baseTag(plan3, "alpha")}@${alpha3}`);
    assert.equal(plan4.target["runtime-app-beta"].args.BASE_IMAGE, `${baseTag(plan1, "beta")}@${baseDigest1.beta}`);
    const r4 = await bake(bake4, "runtimes", join(work, "meta-runtimes-3.json"));
    timings.changedRuntimes = r4.ms;
    const appAlphaRuns = runSteps(r4.steps, "runtime-app-alpha");
    assert.ok(appAlphaRuns.length >= 1 && appAlphaRuns.every((s) => s.done && !s.cached), `runtime-app-alpha should have been rebuilt: ${JSON.stringify(appAlphaRuns)}`);
    const appBetaRuns = runSteps(r4.steps, "runtime-app-beta");
    assert.ok(appBetaRuns.length >= 1 && appBetaRuns.every((s) => s.cached), `runtime-app-beta should be all cached: ${JSON.stringify(appBetaRuns)}`);
    assert.notEqual(digestOf(r4.meta, "runtime-app-alpha"), rtDigest1["app-alpha"], "runtime-app-alpha digest must change");
    assert.equal(digestOf(r4.meta, "runtime-app-beta"), rtDigest1["app-beta"], "runtime-app-beta digest must not change");
  });

  const ratio = (timings.coldBases + timings.coldRuntimes) / Math.max(1, timings.cachedBases + timings.cachedRuntimes);
  t.diagnostic(`timings ms: ${JSON.stringify(timings)}; cold/cached ratio ${ratio.toFixed(1)}`);
});

// ------------------------------------------------------------------------------------------
// Forecast, GPU gate and base GC on the same real engine and loopback registry.

/** Runs the strata CLI in `cwd`. */
async function strata(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...env }, timeoutMs: 120_000 });
}

async function mustStrata(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await strata(args, cwd, env);
  assert.equal(r.code, 0, `strata ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** Every blob and child manifest an image references (for the space GC frees). */
async function blobsOf(registry: string, repo: string, tag: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const visit = async (ref: string) => {
    const r = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
    assert.equal(r.status, 200, `GET ${repo}:${ref}`);
    const body = Buffer.from(await r.arrayBuffer());
    out.set(r.headers.get("docker-content-digest")!, body.length);
    const m = JSON.parse(body.toString()) as { manifests?: { digest: string }[]; config?: { digest: string; size: number }; layers?: { digest: string; size: number }[] };
    for (const child of m.manifests ?? []) await visit(child.digest);
    for (const d of [m.config, ...(m.layers ?? [])]) if (d) out.set(d.digest, d.size);
  };
  await visit(tag);
  return out;
}

test("forecast from real build records, the GPU gate's CPU side, and base GC on the loopback registry", { timeout: 600_000 }, async (t) => {
  const started = await engineFor(t, "strata-engine-ops-");
  if (!started) return;
  const { engine, work } = started;
  const reg = engine.registry;

  // A git repository holding the fixture project; each release edits its matrix.
  const repo = join(work, "repo");
  await run("cp", ["-r", FIXTURE, repo]);
  const git = async (...args: string[]) => {
    const r = await run("git", ["-c", "user.name=strata", "-c", "user.email=strata@example.invalid", ...args], { cwd: repo });
    assert.equal(r.code, 0, `git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };
  await git("init", "-q", "-b", "main");
  const matrixFile = join(repo, "strata.yaml");
  const setArgs = async (changes: Record<number, string>, extra: unknown[] = []) => {
    const doc = parseDocument(await readFile(join(FIXTURE, "strata.yaml"), "utf8"));
    for (const [i, greeting] of Object.entries(changes)) doc.setIn(["bases", Number(i), "args", "GREETING"], greeting);
    for (const b of extra) doc.addIn(["bases"], doc.createNode(b));
    await writeFile(matrixFile, doc.toString());
  };

  /** Builds one bake target with the plain progress log, as the generated workflow does; returns log and times. */
  const buildTarget = async (bakeFile: string, target: string, tag: string, epoch = SOURCE_DATE_EPOCH) => {
    const startedAt = new Date().toISOString();
    const r = await engine.docker(["buildx", "bake", "-f", bakeFile, target, "--progress=plain", "--metadata-file", join(work, `meta-${tag}.json`)], { cwd: repo, env: { SOURCE_DATE_EPOCH: epoch }, timeoutMs: 240_000 });
    const log = r.stderr + r.stdout;
    assert.equal(r.code, 0, `bake ${target} failed:\n${log.slice(-4000)}`);
    const logFile = join(work, `build-${tag}.log`);
    await writeFile(logFile, log);
    return { startedAt, finishedAt: new Date().toISOString(), logFile, meta: readMetadata(join(work, `meta-${tag}.json`)) };
  };
  const records: { base: string; wallSeconds: number; cachedSteps: number | null; totalSteps: number | null }[] = [];
  /** A release: build and record every base, then the runtimes FROM them, tagged with the version. */
  const release = async (version: string) => {
    const bakeFile = join(work, `bake-${version}.json`);
    await mustStrata(["bake", "--matrix", "strata.yaml", "--registry", reg, "--version", version, "--out", bakeFile], repo);
    const metas: BakeMetadata = {};
    for (const base of ["alpha", "beta"]) {
      const b = await buildTarget(bakeFile, `base-${base}`, `${version}-${base}`);
      Object.assign(metas, b.meta);
      const out = JSON.parse(await mustStrata(["record", "--matrix", "strata.yaml", "--base", base, "--registry", `${reg}/strata`, "--started-at", b.startedAt, "--finished-at", b.finishedAt, "--build-log", b.logFile, "--json"], repo)) as { record: (typeof records)[number] };
      records.push(out.record);
    }
    await writeFile(join(work, `meta-${version}.json`), JSON.stringify(metas));
    const pinned = join(work, `bake-${version}-pinned.json`);
    await mustStrata(["bake", "--matrix", "strata.yaml", "--registry", reg, "--version", version, "--pin", join(work, `meta-${version}.json`), "--out", pinned], repo);
    const r = await engine.docker(["buildx", "bake", "-f", pinned, "runtimes", "--progress=plain"], { cwd: repo, env: { SOURCE_DATE_EPOCH }, timeoutMs: 240_000 });
    assert.equal(r.code, 0, `runtimes ${version}: ${r.stderr.slice(-3000)}`);
    const check = JSON.parse(await mustStrata(["check", "--matrix", "strata.yaml", "--json"], repo)) as { bases: { name: string; tag: string }[] };
    return Object.fromEntries(check.bases.map((b) => [b.name, b.tag]));
  };

  // v1: alpha1 + beta1; v2: alpha2 (beta1 shared); v3: alpha3 (beta1 shared again).
  await setArgs({});
  const v1 = await release("v1");
  await setArgs({ 0: "hello-alpha-2" });
  const v2 = await release("v2");
  await setArgs({ 0: "hello-alpha-3" });
  const v3 = await release("v3");
  await git("add", "-A");
  await git("commit", "-qm", "v3");
  assert.equal(v1.beta, v3.beta);
  assert.notEqual(v1.alpha, v2.alpha);

  await t.test("build records: a real build's wall time and cached steps, read back from the cache repository", async () => {
    const alpha = records.filter((r) => r.base === "alpha");
    const beta = records.filter((r) => r.base === "beta");
    assert.equal(alpha.length, 3);
    // Each alpha build ran its builder (3 s sleep): not fully cached, and at least 3 s.
    for (const r of alpha) {
      assert.ok(r.wallSeconds >= 3, `alpha build took ${r.wallSeconds} s`);
      assert.ok(r.totalSteps! >= 3 && r.cachedSteps! < r.totalSteps!, `alpha steps ${r.cachedSteps}/${r.totalSteps}`);
    }
    // beta's v2 and v3 builds were identical to v1's: every step from cache.
    assert.ok(beta[0].cachedSteps! < beta[0].totalSteps!, `beta v1: ${JSON.stringify(beta[0])}`);
    for (const r of beta.slice(1)) assert.equal(r.cachedSteps, r.totalSteps, `beta rebuild: ${JSON.stringify(r)}`);
    const m = await getManifestAny(reg, "strata/cache", "buildrecord-alpha");
    assert.equal(m.config.mediaType, "application/vnd.strata.build-records.v1+json");
    const ledger = JSON.parse((await getBlob(reg, "strata/cache", m.config.digest)).toString()) as { records: { wallSeconds: number }[] };
    assert.deepEqual(ledger.records.map((r) => r.wallSeconds), alpha.map((r) => r.wallSeconds));
  });

  await t.test("strata impact forecasts a change from those records, each number with its basis", async () => {
    // v4: alpha and beta change; gamma is new on the same Dockerfile; delta is new on a Dockerfile nobody built.
    await writeFile(join(repo, "Dockerfile.other"), (await readFile(join(repo, "Dockerfile.base"), "utf8")).replace("sleep 3", "sleep 1"));
    await setArgs({ 0: "hello-alpha-4", 1: "hello-beta-4" }, [
      { name: "gamma", context: ".", dockerfile: "Dockerfile.base", target: "base", platforms: ["linux/amd64"], args: { OS_IMAGE: "strata-test/tiny:1", GREETING: "hello-gamma" } },
      { name: "delta", context: ".", dockerfile: "Dockerfile.other", target: "base", platforms: ["linux/amd64"], args: { OS_IMAGE: "strata-test/tiny:1", GREETING: "hello-delta" } },
    ]);
    const text = await mustStrata(["impact", "--base", "HEAD", "--matrix", "strata.yaml", "--history-registry", `${reg}/strata`], repo);
    t.diagnostic(text.slice(text.indexOf("Forecast:")));
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const alphaMedian = median(records.filter((r) => r.base === "alpha").map((r) => r.wallSeconds));
    assert.match(text, new RegExp(`^  alpha: about ${alphaMedian} s, about \\$0\\.\\d+ on spot / \\$0\\.\\d+ on-demand\\n    from 3 earlier builds of this base \\(median ${alphaMedian} s\\)\\n    price: g6\\.4xlarge at \\$0\\.60/h spot, \\$1\\.3/h on-demand, 1 GPU \\(default price table\\)$`, "m"));
    assert.match(text, /^ {4}from 1 earlier build of this base \(median \d+ s\); 2 fully cached builds left out$/m);
    assert.match(text, /^ {2}gamma: about \d+ s.*\n {4}from base `alpha` \(same Dockerfile, different GREETING\): median of 3 builds, \d+ s$/m);
    assert.match(text, /^ {2}delta: no history$/m);
    assert.match(text, /^Forecast: this change rebuilds 4 bases: about 0\.\d+ GPU-hours \(\d+ s of builds\), about \$0\.\d+ on spot \(\$0\.\d+ on-demand\); not counted, no history: delta$/m);
    const json = JSON.parse(await mustStrata(["impact", "--base", "HEAD", "--matrix", "strata.yaml", "--history-registry", `${reg}/strata`, "--json"], repo)) as { forecast: { bases: { name: string; seconds: number | null; basisKind: string; from: string | null }[] } };
    const f = Object.fromEntries(json.forecast.bases.map((b) => [b.name, b]));
    assert.equal(f.alpha.seconds, alphaMedian);
    assert.deepEqual([f.alpha.basisKind, f.beta.basisKind, f.gamma.basisKind, f.delta.basisKind], ["history", "history", "similar", "none"]);
    assert.equal(f.gamma.from, "alpha");
    assert.equal(f.delta.seconds, null);

    // plan --recorded: the stack recorded v3's bases; the matrix now wants v4's.
    const recorded = Object.fromEntries(Object.entries(v3).map(([name, tag]) => [name, { tag }]));
    await writeFile(join(work, "recorded.json"), JSON.stringify(recorded));
    const explained = await mustStrata(["plan", "--matrix", "strata.yaml", "--recorded", join(work, "recorded.json"), "--history-registry", `${reg}/strata`], repo);
    assert.match(explained, /^Forecast: this change rebuilds 4 bases: /m);
    assert.match(explained, /^ {4}from 3 earlier builds of this base \(median \d+ s\)$/m);
  });
  await git("checkout", "-q", "--", "strata.yaml");
  await rm(join(repo, "Dockerfile.other"), { force: true });

  await t.test("GPU gate: the workflow's local build is not pushed; the generated smoke test's CPU side runs in a container", async () => {
    // The base workflow's gate build: the bake target into the local store under a candidate tag, nothing pushed.
    const bakeFile = join(work, "bake-gate.json");
    await mustStrata(["bake", "--matrix", "strata.yaml", "--registry", reg, "--out", bakeFile], repo);
    const before = await tagsList(reg, "strata/bases");
    const r = await engine.docker(["buildx", "bake", "-f", bakeFile, "base-alpha", "--progress=plain", "--set", "base-alpha.platform=linux/amd64", "--set", "base-alpha.output=type=docker", "--set", "base-alpha.tags=strata-gate/alpha:candidate"], { cwd: repo, env: { SOURCE_DATE_EPOCH }, timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.equal((await engine.docker(["image", "inspect", "strata-gate/alpha:candidate"])).code, 0, "candidate image is in the local store");
    assert.deepEqual(await tagsList(reg, "strata/bases"), before, "the gate build pushed nothing");

    // The smoke tests of the real default matrix (torch, CUDA 12.6, arch list, flash-attention on ampere; none on turing).
    const gateImage = "strata-test/python:1";
    await buildPythonImage(engine, gateImage, { "/opt/fake": join(REPO_ROOT, "test/fixtures/gate") });
    for (const base of ["ampere", "turing"]) await mustStrata(["smoke", "--matrix", "strata.yaml", "--base", base, "--out", join(work, `smoke-${base}.py`)], REPO_ROOT);
    await mkdir(join(work, "gate"), { recursive: true });
    /** The generated workflow's docker run (without --gpus: there is no GPU here), with extra script arguments. */
    const gate = async (base: string, env: Record<string, string>, args: string[]) => {
      await rm(join(work, "gate", "report.json"), { force: true });
      const envArgs = Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
      const res = await engine.docker(["run", "--rm", "--network", "none", ...envArgs, "-v", `${join(work, `smoke-${base}.py`)}:/strata-smoke.py:ro`, "-v", `${join(work, "gate")}:/gate`, "--entrypoint", "sh", gateImage, "-c", `exec "$(command -v python3 || command -v python)" /strata-smoke.py --report /gate/report.json ${args.join(" ")}`], { timeoutMs: 60_000 });
      const report = JSON.parse(await readFile(join(work, "gate", "report.json"), "utf8")) as { passed: boolean; failed: string[]; checks: { id: string; state: string; detail: string }[] };
      return { ...res, report, state: Object.fromEntries(report.checks.map((c) => [c.id, c.state])) };
    };
    const fake = { PYTHONPATH: "/opt/fake" };
    const ok = await gate("ampere", fake, ["--cpu-only"]);
    assert.equal(ok.code, 0, ok.stderr + ok.stdout);
    assert.deepEqual(ok.state, {
      "nvidia-smi": "skipped", "torch-import": "passed", "torch-cuda-version": "passed", "matmul-cpu": "passed", "torch-sees-gpu": "skipped",
      "torch-arch-list": "skipped", "matmul-gpu": "skipped", "flash-attn-import": "passed", "flash-attn-call": "skipped",
    });
    const wrongCuda = await gate("ampere", { ...fake, FAKE_TORCH_CUDA: "11.8" }, ["--cpu-only"]);
    assert.equal(wrongCuda.code, 1);
    assert.deepEqual(wrongCuda.report.failed, ["torch-cuda-version"]);
    assert.match(wrongCuda.stderr, /strata GPU gate FAILED for base ampere: torch-cuda-version/);
    assert.match(wrongCuda.report.checks.find((c) => c.id === "torch-cuda-version")!.detail, /torch\.version\.cuda is 11\.8, the base's CUDA is 12\.6/);
    const badMatmul = await gate("ampere", { ...fake, FAKE_TORCH_BAD_MATMUL: "1" }, ["--cpu-only"]);
    assert.deepEqual(badMatmul.report.failed, ["matmul-cpu"]);
    const noTorch = await gate("ampere", {}, ["--cpu-only"]);
    assert.deepEqual(noTorch.report.failed, ["torch-import"]);
    assert.equal(noTorch.state["flash-attn-import"], "skipped");
    // The whole gate, as the workflow runs it, on a machine without a GPU: it fails, naming the checks.
    const noGpu = await gate("ampere", fake, []);
    assert.equal(noGpu.code, 1);
    assert.deepEqual(noGpu.report.failed, ["nvidia-smi", "torch-sees-gpu"]);
    assert.equal(noGpu.state["torch-arch-list"], "skipped");
    const turing = await gate("turing", fake, ["--cpu-only"]);
    assert.equal(turing.code, 0);
    assert.ok(!("flash-attn-import" in turing.state), "turing declares no FA_VER: no flash-attention check");
  });

  await t.test("strata gc deletes exactly the bases nothing uses (dry run first), with their build cache", async () => {
    // Orphans from a matrix of their own: 'old' (old, unused), 'held' (an open pull request uses it), 'young' (recent).
    const orphans = join(work, "orphans.yaml");
    const base = (name: string) => ({ name, context: "repo", dockerfile: "repo/Dockerfile.base", target: "base", platforms: ["linux/amd64"], args: { OS_IMAGE: "strata-test/tiny:1", GREETING: `hello-${name}` } });
    await writeFile(orphans, JSON.stringify({ version: 1, bases: ["old", "held", "young"].map(base), runtimes: [] }));
    const orphanBake = join(work, "bake-orphans.json");
    await mustStrata(["bake", "--matrix", orphans, "--registry", reg, "--out", orphanBake], repo);
    await buildTarget(orphanBake, "base-old", "old");
    await buildTarget(orphanBake, "base-held", "held");
    await buildTarget(orphanBake, "base-young", "young", String(Math.floor(Date.now() / 1000)));
    const orphanTags = Object.fromEntries(((JSON.parse(await mustStrata(["check", "--matrix", orphans, "--json"], repo)) as { bases: { name: string; tag: string }[] }).bases).map((b) => [b.name, b.tag]));
    await writeFile(join(work, "in-use.txt"), `${orphanTags.held}\n`);

    const allBases = [v1.alpha, v2.alpha, v3.alpha, v1.beta, orphanTags.old, orphanTags.held, orphanTags.young];
    assert.deepEqual(new Set(await tagsList(reg, "strata/bases")), new Set(allBases));
    const expectDeleted = [v1.alpha, orphanTags.old];
    // Space: blobs of the deleted images that no kept base and no runtime references.
    const kept = new Set<string>();
    for (const tag of allBases.filter((x) => !expectDeleted.includes(x))) for (const d of (await blobsOf(reg, "strata/bases", tag)).keys()) kept.add(d);
    for (const tag of await tagsList(reg, "strata/runtimes")) for (const d of (await blobsOf(reg, "strata/runtimes", tag)).keys()) kept.add(d);
    let freeBytes = 0;
    const freed = new Map<string, number>();
    for (const tag of expectDeleted) for (const [d, n] of await blobsOf(reg, "strata/bases", tag)) if (!kept.has(d)) freed.set(d, n);
    for (const n of freed.values()) freeBytes += n;
    assert.ok(freeBytes > 0);

    const gcArgs = ["gc", "--matrix", "strata.yaml", "--registry", `${reg}/strata`, "--keep-releases", "2", "--min-age-days", "7", "--in-use", join(work, "in-use.txt")];
    const dry = JSON.parse(await mustStrata([...gcArgs, "--json"], repo)) as { decisions: { tag: string; action: string; why: string }[]; releases: string[]; freeBytes: number; cacheTags: string[] };
    const action = Object.fromEntries(dry.decisions.map((d) => [d.tag, d]));
    assert.deepEqual(dry.decisions.filter((d) => d.action === "delete").map((d) => d.tag).sort(), [...expectDeleted].sort());
    assert.deepEqual(dry.releases, ["v3", "v2"]);
    assert.match(action[v3.alpha].why, /current matrix/);
    assert.match(action[v2.alpha].why, /^used by release v2 \(runtimes:app-alpha-v2\)$/);
    assert.match(action[orphanTags.held].why, /open pull request/);
    assert.match(action[orphanTags.young].why, /^0 day\(s\) old, younger than 7$/);
    assert.equal(dry.freeBytes, freeBytes);
    assert.deepEqual(dry.cacheTags, ["cache-base-old"]);
    const text = await mustStrata(gcArgs, repo);
    t.diagnostic(text);
    assert.match(text, /dry run/);
    assert.match(text, new RegExp(`^  DELETE  ${v1.alpha}  unused: not in the matrix, no kept release or open pull request uses it; \\d+ day\\(s\\) old$`, "m"));
    assert.match(text, /^Would free about [\d.]+ KiB \(blobs no kept image references\): 2 base tag\(s\), 0 attestation\(s\), 1 cache tag\(s\)\. Run with --apply to delete them\.$/m);
    assert.deepEqual(new Set(await tagsList(reg, "strata/bases")), new Set(allBases), "a dry run deletes nothing");

    await mustStrata([...gcArgs, "--apply"], repo);
    assert.deepEqual(new Set(await tagsList(reg, "strata/bases")), new Set(allBases.filter((x) => !expectDeleted.includes(x))));
    const cacheTags = await tagsList(reg, "strata/cache");
    assert.ok(!cacheTags.includes("cache-base-old"), `cache-base-old is gone: ${cacheTags}`);
    for (const c of ["cache-base-alpha", "cache-base-beta", "cache-base-held", "cache-base-young", "buildrecord-alpha"]) assert.ok(cacheTags.includes(c), `${c} is kept: ${cacheTags}`);
    // Kept bases still pull; every runtime is untouched.
    for (const tag of allBases.filter((x) => !expectDeleted.includes(x))) await getManifestAny(reg, "strata/bases", tag);
    assert.equal((await tagsList(reg, "strata/runtimes")).length, 6);
    const again = JSON.parse(await mustStrata([...gcArgs, "--json"], repo)) as { decisions: { action: string }[] };
    assert.equal(again.decisions.filter((d) => d.action === "delete").length, 0, "a second run finds nothing to delete");
  });
});

/** A manifest of any single-image media type (the ledger artifact too). */
async function getManifestAny(registry: string, repo: string, ref: string): Promise<Manifest> {
  const r = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const body = await r.text();
  assert.equal(r.status, 200, `GET /v2/${repo}/manifests/${ref}: HTTP ${r.status} ${body}`);
  return JSON.parse(body) as Manifest;
}
