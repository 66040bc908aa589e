// The upstream lock on a real Docker engine and the loopback registry (see test/engine/harness.ts): an "upstream"
// image is published, `strata lock` pins it, a base built through the bake export uses the locked content, a
// re-publish of the upstream tag changes nothing until the lock is refreshed, and `strata impact` then names the
// re-publish as the base's reason to rebuild. Also: which named-context key BuildKit matches for a FROM.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import type { BakeFile } from "../cli/bake.ts";
import { MANIFEST_TYPES } from "../cli/registry.ts";
import { engineFor, REPO_ROOT, run } from "./engine/harness.ts";

const CLI = join(REPO_ROOT, "bin/strata.mjs");
const MANIFEST_ACCEPT = MANIFEST_TYPES.join(", ");

interface Manifest {
  manifests?: { digest: string; platform?: { os: string; architecture: string } }[];
  layers?: { digest: string }[];
}

async function manifest(registry: string, repo: string, ref: string): Promise<{ digest: string; manifest: Manifest }> {
  const r = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const body = await r.text();
  assert.equal(r.status, 200, `GET ${repo}:${ref}: HTTP ${r.status} ${body}`);
  return { digest: r.headers.get("docker-content-digest") ?? "", manifest: JSON.parse(body) as Manifest };
}

/** The layers of the linux/amd64 image behind a tag or digest (through its index, if it has one). */
async function amd64Layers(registry: string, repo: string, ref: string): Promise<{ manifestDigest: string; layers: string[] }> {
  const top = await manifest(registry, repo, ref);
  if (!top.manifest.manifests) return { manifestDigest: top.digest, layers: (top.manifest.layers ?? []).map((l) => l.digest) };
  const child = top.manifest.manifests.find((m) => m.platform?.os === "linux" && m.platform.architecture === "amd64");
  assert.ok(child, `${repo}:${ref} has no linux/amd64 image: ${JSON.stringify(top.manifest)}`);
  const m = await manifest(registry, repo, child.digest);
  return { manifestDigest: child.digest, layers: (m.manifest.layers ?? []).map((l) => l.digest) };
}


test("upstream lock on a real engine: lock, build by the locked digest, re-publish, keep the old digest, re-lock, impact names it", { timeout: 300_000 }, async (t) => {
  const started = await engineFor(t, "strata-engine-lock-");
  if (!started) return;
  const { engine, work } = started;
  const reg = engine.registry;
  const upstream = `${reg}/upstream/cuda`;

  const docker = async (args: string[], cwd = work) => {
    const r = await engine.docker(args, { cwd, env: { SOURCE_DATE_EPOCH: "0" }, timeoutMs: 180_000 });
    assert.equal(r.code, 0, `docker ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}\n${engine.logs(10)}`);
    return r.stderr + r.stdout;
  };
  /** Publishes the upstream image `upstream:12` with `release` in /etc/upstream-release. */
  const publish = async (release: string) => {
    const dir = join(work, `upstream-${release}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "release"), `${release}\n`);
    await writeFile(join(dir, "Dockerfile"), `FROM ${engine.tinyImage}\nCOPY release /etc/upstream-release\n`);
    await docker(["buildx", "build", "--progress=plain", "--provenance=false", "--output", `type=image,name=${upstream}:12,push=true`, dir]);
    return amd64Layers(reg, "upstream/cuda", "12");
  };
  const strata = (args: string[]) => run(process.execPath, [CLI, ...args], { cwd: repo, env: { ...process.env, STRATA_DEBUG: "" }, timeoutMs: 120_000 });
  const mustStrata = async (args: string[]) => {
    const r = await strata(args);
    assert.equal(r.code, 0, `strata ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
    return r;
  };
  const git = async (...args: string[]) => {
    const r = await run("git", args, { cwd: repo, env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com" } });
    assert.equal(r.code, 0, `git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };

  // A project whose base starts FROM the upstream image through build args (registry and tag both substituted).
  const repo = join(work, "repo");
  await mkdir(repo);
  await writeFile(
    join(repo, "strata.yaml"),
    ["version: 1", "bases:", "  - name: gpu", "    context: base", "    dockerfile: base/Dockerfile", "    target: base", "    platforms: [linux/amd64]", `    args: { UPSTREAM: "${upstream}", GREETING: "hello" }`, ""].join("\n"),
  );
  await mkdir(join(repo, "base"));
  await writeFile(join(repo, "base/Dockerfile"), "ARG UPSTREAM=upstream.invalid/cuda\nARG UPSTREAM_TAG=12\nFROM ${UPSTREAM}:${UPSTREAM_TAG} AS base\nARG GREETING\nRUN echo $GREETING > /greeting\n");
  await git("init", "-q", "-b", "main");

  const v1 = await publish("v1");
  const top1 = await manifest(reg, "upstream/cuda", "12");
  const tag1 = top1.digest;
  t.diagnostic(`upstream v1 is ${top1.manifest.manifests ? "an index" : "a single manifest"}: ${tag1}`);
  const lockFile = join(repo, "strata.lock.json");
  const ref = `${upstream}:12`;

  await t.test("lock --check fails without a lock, naming the file, the image and the fix", async () => {
    const r = await strata(["lock", "--check"]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /no lock file strata\.lock\.json for strata\.yaml/);
    assert.ok(r.stderr.includes(`not locked: ${ref}`), r.stderr);
    assert.match(r.stderr, /fix: run `strata lock` and commit strata\.lock\.json/);
  });

  await t.test("strata lock writes the tag's digest and the linux/amd64 manifest digest", async () => {
    await mustStrata(["lock"]);
    const lock = JSON.parse(readFileSync(lockFile, "utf8")) as { version: number; images: Record<string, { digest: string; platforms: Record<string, string> }> };
    assert.deepEqual(lock, { version: 1, images: { [ref]: { digest: tag1, platforms: { "linux/amd64": v1.manifestDigest } } } });
    assert.equal((await mustStrata(["lock", "--check"])).code, 0);
  });
  await git("add", "-A");
  await git("commit", "-qm", "lock v1");
  const rev1 = await git("rev-parse", "HEAD");

  const bakeBases = async (name: string) => {
    const file = join(work, `${name}.json`);
    await mustStrata(["bake", "--registry", reg, "--out", file]);
    const bake = JSON.parse(await readFile(file, "utf8")) as BakeFile;
    const meta = join(work, `${name}-meta.json`);
    const out = await docker(["buildx", "bake", "-f", file, "bases", "--metadata-file", meta, "--progress=plain"], repo);
    const digest = (JSON.parse(await readFile(meta, "utf8")) as Record<string, { "containerimage.digest": string }>)["base-gpu"]["containerimage.digest"];
    const tag = bake.target["base-gpu"].tags[0];
    return { bake, out, tag, layers: (await amd64Layers(reg, "strata/bases", digest)).layers };
  };

  const first = await bakeBases("bake-1");
  await t.test("the bake file maps the FROM to the locked digest, and the base is built on the locked content", () => {
    assert.deepEqual(first.bake.target["base-gpu"].contexts, { [ref]: `docker-image://${ref}@${tag1}` });
    assert.deepEqual(first.layers.slice(0, v1.layers.length), v1.layers, "the base starts with the upstream v1 layers");
  });

  // The re-publish comes as an image index (as NVIDIA publishes): the amd64 image and an attestation entry.
  const pushed = await publish("v2");
  const child = await fetch(`http://${reg}/v2/upstream/cuda/manifests/${pushed.manifestDigest}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const childType = child.headers.get("content-type")!;
  const childSize = (await child.arrayBuffer()).byteLength;
  const index = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      { mediaType: childType, digest: pushed.manifestDigest, size: childSize, annotations: { "vnd.docker.reference.digest": pushed.manifestDigest, "vnd.docker.reference.type": "attestation-manifest" }, platform: { os: "unknown", architecture: "unknown" } },
      { mediaType: childType, digest: pushed.manifestDigest, size: childSize, platform: { os: "linux", architecture: "amd64" } },
    ],
  };
  const put = await fetch(`http://${reg}/v2/upstream/cuda/manifests/12`, { method: "PUT", headers: { "Content-Type": index.mediaType }, body: JSON.stringify(index) });
  assert.equal(put.status, 201, `PUT index: HTTP ${put.status} ${await put.text()}`);
  const v2 = await amd64Layers(reg, "upstream/cuda", "12");
  assert.equal(v2.manifestDigest, pushed.manifestDigest);
  const tag2 = (await manifest(reg, "upstream/cuda", "12")).digest;
  assert.notEqual(tag2, tag1, "the re-publish moved the tag");
  assert.notDeepEqual(v2.layers, v1.layers);
  await engine.wipeLocal();

  await t.test("after the upstream re-publishes its tag, a build with the old lock still uses the old digest", async () => {
    assert.equal((await strata(["lock", "--check"])).code, 0, "lock --check is offline: the lock still covers the matrix");
    const again = await bakeBases("bake-2");
    assert.equal(again.tag, first.tag, "the base identity does not move with the upstream tag");
    assert.deepEqual(again.layers.slice(0, v1.layers.length), v1.layers, "still the upstream v1 layers");
    assert.deepEqual(again.layers, first.layers);
  });

  await t.test("without the lock the same build takes what the tag points to now (the lock is what pins it)", async () => {
    const saved = await readFile(lockFile, "utf8");
    await rm(lockFile);
    try {
      const r = await strata(["check"]);
      assert.equal(r.code, 0);
      assert.match(r.stderr, /warning: no lock file strata\.lock\.json: 1 upstream image\(s\) are built by tag; run `strata lock` and commit strata\.lock\.json/);
      const byTag = await bakeBases("bake-by-tag");
      assert.equal(byTag.bake.target["base-gpu"].contexts, undefined);
      assert.deepEqual(byTag.layers.slice(0, v2.layers.length), v2.layers, "by tag: the upstream v2 layers");
    } finally {
      await writeFile(lockFile, saved);
    }
  });

  await t.test("re-lock: the new digest, a new base identity built on v2, and impact names the re-publish", async () => {
    const r = await mustStrata(["lock"]);
    const lock = JSON.parse(readFileSync(lockFile, "utf8")) as { images: Record<string, { digest: string; platforms: Record<string, string> }> };
    assert.deepEqual(lock.images[ref], { digest: tag2, platforms: { "linux/amd64": v2.manifestDigest } }, "the index digest, and the amd64 manifest's");
    assert.notEqual(tag2, v2.manifestDigest);
    assert.ok(r.stdout.includes(`re-published: ${ref}: ${tag1.slice(0, 19)} → ${tag2.slice(0, 19)}`), r.stdout);
    const third = await bakeBases("bake-3");
    assert.notEqual(third.tag, first.tag, "the base's identity tag changes with the locked upstream digest");
    assert.deepEqual(third.layers.slice(0, v2.layers.length), v2.layers);
    const impact = await mustStrata(["impact", "--base", rev1, "--json"]);
    const report = JSON.parse(impact.stdout) as { bases: { name: string; change: string; oldTag: string; newTag: string; reasons: { kind: string; detail: string; image?: string; old?: string; new?: string }[] }[] };
    assert.equal(report.bases.length, 1);
    const gpu = report.bases[0];
    assert.equal(gpu.change, "changed");
    assert.equal(gpu.oldTag.split(":").pop(), first.tag.split(":").pop());
    assert.equal(gpu.newTag, third.tag.split(":").pop());
    assert.deepEqual(gpu.reasons, [{ kind: "upstream", image: ref, old: tag1, new: tag2, detail: `${ref}: ${tag1.slice(0, 19)} → ${tag2.slice(0, 19)}` }]);
    const text = await mustStrata(["impact", "--base", rev1]);
    assert.ok(text.stdout.includes(`- [upstream] ${ref}: ${tag1.slice(0, 19)} → ${tag2.slice(0, 19)}`), text.stdout);
  });

  await t.test("BuildKit replaces FROM docker.io/library/x:1 (and COPY --from=x:1) by a named context keyed x:1 (or the full name), not by one for another tag", async () => {
    const dir = join(work, "keys");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), "FROM docker.io/library/strata-offline:1\nRUN cat /etc/upstream-release > /seen\n");
    // Docker Hub is unreachable here: the build succeeds only if the named context replaced the FROM.
    const out = await docker(["buildx", "build", "--progress=plain", "--build-context", `strata-offline:1=docker-image://${upstream}:12@${tag1}`, "--output", "type=cacheonly", dir]);
    assert.ok(out.includes(`${upstream}:12@${tag1}`), out.slice(-2000));
    const full = await engine.docker(["buildx", "build", "--progress=plain", "--build-context", `docker.io/library/strata-offline:1=docker-image://${upstream}:12@${tag1}`, "--output", "type=cacheonly", dir], { cwd: work, timeoutMs: 120_000 });
    assert.equal(full.code, 0, `the fully qualified key is normalised to the same name:\n${full.stderr.slice(-2000)}`);
    // COPY --from an image goes through the same named contexts.
    const copy = join(work, "keys-copy");
    await mkdir(copy, { recursive: true });
    await writeFile(join(copy, "Dockerfile"), `FROM ${engine.tinyImage}\nCOPY --from=strata-offline:1 /etc/upstream-release /seen\n`);
    await docker(["buildx", "build", "--progress=plain", "--build-context", `strata-offline:1=docker-image://${upstream}:12@${tag1}`, "--output", "type=cacheonly", copy]);
    const other = await engine.docker(["buildx", "build", "--progress=plain", "--build-context", `strata-offline:2=docker-image://${upstream}:12@${tag1}`, "--output", "type=cacheonly", dir], { cwd: work, timeoutMs: 120_000 });
    assert.notEqual(other.code, 0, "a context for another tag does not replace the FROM (the build then needs Docker Hub, which is unreachable)");
  });
  await t.test("the # syntax= frontend is locked too: builds take it by the locked digest through BUILDKIT_SYNTAX, a re-publish changes nothing until re-lock", async () => {
    const frontend = `${reg}/upstream/frontend`;
    const publishFrontend = async (release: string) => {
      const dir = join(work, `frontend-${release}`);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "release"), `${release}\n`);
      await writeFile(join(dir, "Dockerfile"), `FROM ${engine.tinyImage}\nCOPY release /etc/frontend-release\n`);
      await docker(["buildx", "build", "--progress=plain", "--provenance=false", "--output", `type=image,name=${frontend}:1,push=true`, dir]);
      return (await manifest(reg, "upstream/frontend", "1")).digest;
    };
    const f1 = await publishFrontend("v1");
    const proj = join(work, "frontend-project");
    await mkdir(join(proj, "base"), { recursive: true });
    await writeFile(join(proj, "strata.yaml"), ["version: 1", "bases:", "  - name: fe", "    context: base", "    dockerfile: base/Dockerfile", "    platforms: [linux/amd64]", ""].join("\n"));
    await writeFile(join(proj, "base/Dockerfile"), `# syntax=${frontend}:1\nFROM scratch\nCOPY Dockerfile /Dockerfile\n`);
    const inProj = (args: string[]) => run(process.execPath, [CLI, ...args], { cwd: proj, env: { ...process.env, STRATA_DEBUG: "" }, timeoutMs: 120_000 });
    const lockIn = async () => {
      const r = await inProj(["lock"]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(join(proj, "strata.lock.json"), "utf8")) as { images: Record<string, { digest: string; platforms: Record<string, string> }> };
    };
    const lock1 = await lockIn();
    assert.deepEqual(Object.keys(lock1.images), [`${frontend}:1`]);
    assert.equal(lock1.images[`${frontend}:1`].digest, f1);
    assert.deepEqual(Object.keys(lock1.images[`${frontend}:1`].platforms), ["linux/amd64"], "the frontend runs on the builder: linux/amd64");
    const bakeIn = async (name: string) => {
      const file = join(work, `${name}.json`);
      const r = await inProj(["bake", "--registry", reg, "--out", file]);
      assert.equal(r.code, 0, r.stderr);
      return { file, bake: JSON.parse(await readFile(file, "utf8")) as BakeFile };
    };
    /** Builds the base; the stand-in frontend is no Dockerfile frontend, so the build fails once BuildKit has resolved and run it. */
    const buildLog = async (file: string) => {
      const r = await engine.docker(["buildx", "bake", "-f", file, "bases", "--progress=plain"], { cwd: proj, timeoutMs: 120_000 });
      assert.notEqual(r.code, 0, "the stand-in frontend cannot build anything");
      return r.stderr + r.stdout;
    };
    const b1 = await bakeIn("fe-bake-1");
    assert.equal(b1.bake.target["base-fe"].args.BUILDKIT_SYNTAX, `${frontend}:1@${f1}`);
    assert.equal(b1.bake.target["base-fe"].contexts, undefined, "the frontend is no named context");
    assert.ok((await buildLog(b1.file)).includes(`docker-image://${frontend}:1@${f1}`), "BuildKit ran the frontend at the locked digest");

    const f2 = await publishFrontend("v2");
    assert.notEqual(f2, f1);
    const again = await buildLog(b1.file);
    assert.ok(again.includes(`docker-image://${frontend}:1@${f1}`) && !again.includes(f2), "after a re-publish the old lock still runs the old frontend");

    const lock2 = await lockIn();
    assert.equal(lock2.images[`${frontend}:1`].digest, f2);
    const b2 = await bakeIn("fe-bake-2");
    assert.equal(b2.bake.target["base-fe"].args.BUILDKIT_SYNTAX, `${frontend}:1@${f2}`);
    assert.notEqual(b2.bake.target["base-fe"].tags[0], b1.bake.target["base-fe"].tags[0], "the base's identity covers the locked frontend");
  });
  assert.ok(existsSync(lockFile));
});
