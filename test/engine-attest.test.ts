// Real engine: a base and a runtime built and pushed through strata's bake export, attested by `strata attest`,
// and read back from the loopback registry the way tools look for attestations (referrers API, else the
// referrers tag schema), not through strata's code. Then the ECR lifecycle rules strata declares, applied to
// the registry's real content: no attestation of an image they keep may expire.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { lifecycleRules } from "../components/registry.ts";
import type { BakeFile } from "../cli/bake.ts";
import { loadMatrix } from "../matrix/load.ts";
import { buildPythonImage, ENGINE_CACHE, engineFor, REPO_ROOT, run, type Engine } from "./engine/harness.ts";
import { expiredImages, type StoredImage } from "./support/ecr-lifecycle.ts";

const FIXTURE = join(REPO_ROOT, "test/fixtures/attest");
const MATRIX = join(FIXTURE, "strata.yaml");
const CLI = join(REPO_ROOT, "bin/strata.mjs");
const OS_IMAGE = "strata-test/python-os:1";
const DIST = "/usr/lib/python3/dist-packages";
/** oras (Debian trixie's, unpacked by .ci/engine-deps.sh): an independent reader of referrers. */
const ORAS = process.env.STRATA_ORAS ?? join(ENGINE_CACHE, "root/usr/bin/oras");
const ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

interface Json {
  [k: string]: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function strata(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await run(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeoutMs: 180_000 });
  assert.equal(r.code, 0, `strata ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

async function getManifest(registry: string, repo: string, ref: string): Promise<{ digest: string; manifest: Json; status: number }> {
  const r = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { headers: { Accept: ACCEPT } });
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, digest: r.headers.get("docker-content-digest") ?? "", manifest: r.ok ? (JSON.parse(body.toString("utf8")) as Json) : {} };
}

async function getBlob(registry: string, repo: string, digest: string): Promise<Buffer> {
  const r = await fetch(`http://${registry}/v2/${repo}/blobs/${digest}`);
  assert.equal(r.status, 200, `GET blob ${repo}@${digest}`);
  return Buffer.from(await r.arrayBuffer());
}

/** The in-toto statements attached to `digest`, found as oras/regclient find them: referrers API, else tag schema. */
async function attestationsOf(registry: string, repo: string, digest: string): Promise<{ via: string; index: Json[]; statements: Record<string, Json>; artifacts: Json[] }> {
  const api = await fetch(`http://${registry}/v2/${repo}/referrers/${digest}`, { headers: { Accept: "application/vnd.oci.image.index.v1+json" } });
  let via = "referrers API";
  let index: Json[];
  if (api.status === 200) index = ((await api.json()) as Json).manifests;
  else {
    await api.body?.cancel();
    via = "referrers tag schema";
    const tagged = await getManifest(registry, repo, digest.replace(":", "-"));
    assert.equal(tagged.status, 200, `no referrers tag ${digest.replace(":", "-")} in ${repo}`);
    assert.equal(tagged.manifest.mediaType, "application/vnd.oci.image.index.v1+json");
    index = tagged.manifest.manifests;
  }
  const statements: Record<string, Json> = {};
  const artifacts: Json[] = [];
  for (const d of index.filter((x) => x.artifactType === "application/vnd.in-toto+json")) {
    const m = await getManifest(registry, repo, d.digest);
    assert.equal(m.status, 200, `referrer ${d.digest} listed but missing`);
    assert.equal(m.manifest.artifactType, "application/vnd.in-toto+json");
    assert.equal(m.manifest.subject?.digest, digest, `referrer ${d.digest} has another subject`);
    assert.equal(m.manifest.layers.length, 1);
    assert.equal(m.manifest.layers[0].mediaType, "application/vnd.in-toto+json");
    const predicateType = m.manifest.annotations["in-toto.io/predicate-type"];
    assert.equal(d.annotations?.["in-toto.io/predicate-type"], predicateType, "the referrers list carries the predicate type");
    const st = JSON.parse((await getBlob(registry, repo, m.manifest.layers[0].digest)).toString("utf8")) as Json;
    assert.equal(st._type, "https://in-toto.io/Statement/v1");
    assert.equal(st.predicateType, predicateType);
    assert.deepEqual(st.subject.map((s: Json) => s.digest.sha256), [digest.slice(7)], "statement subject is the image digest");
    assert.ok(!statements[predicateType], `two ${predicateType} referrers on ${digest}`);
    statements[predicateType] = st;
    artifacts.push({ digest: d.digest, ...m.manifest });
  }
  return { via, index, statements, artifacts };
}

/** Every manifest the registry stores, per repository, with its tags (read from the registry's storage). */
function storedImages(engine: Engine, repo: string): StoredImage[] {
  const root = join(engine.dir, "registry/docker/registry/v2/repositories", repo, "_manifests");
  const tags = new Map<string, string[]>();
  for (const tag of readdirSync(join(root, "tags"))) {
    const link = join(root, "tags", tag, "current/link");
    if (!existsSync(link)) continue;
    const d = readFileSync(link, "utf8").trim();
    tags.set(d, [...(tags.get(d) ?? []), tag]);
  }
  const pushedAt = new Date();
  return readdirSync(join(root, "revisions/sha256")).map((hex) => ({ digest: `sha256:${hex}`, tags: tags.get(`sha256:${hex}`) ?? [], pushedAt }));
}

/** dpkg status stanzas (of this machine) for the Debian packages whose files the OS image carries. */
function hostPackages(): { status: string; versions: Record<string, string> } {
  const owner = (path: string) => execFileSync("dpkg", ["-S", path], { encoding: "utf8" }).split(":")[0].trim();
  const names = [...new Set([owner(realpathSync("/usr/bin/python3")), "libc6", "python3-distro", "python3-blinker"])];
  const status = execFileSync("dpkg-query", ["-s", ...names], { encoding: "utf8" });
  const versions = Object.fromEntries(names.map((n) => [n, execFileSync("dpkg-query", ["-W", "-f", "${Version}", n], { encoding: "utf8" })]));
  return { status, versions };
}

function distVersion(name: string): string {
  const dir = readdirSync(DIST).find((d) => new RegExp(`^${name}-([^-]+)\\.dist-info$`).test(d));
  assert.ok(dir, `no ${name} dist-info in ${DIST}`);
  return /-([^-]+)\.dist-info$/.exec(dir)![1];
}

const hostReady = ["distro", "blinker"].every((p) => existsSync(join(DIST, p)));

test("strata attest: SBOM and provenance of a pushed base and runtime read back from the registry, and no lifecycle rule expires them", { timeout: 300_000 }, async (t) => {
  const started = await engineFor(t, "strata-attest-test-", hostReady ? undefined : `this machine lacks Debian's python3-distro and python3-blinker in ${DIST} (apt-get install python3-distro python3-blinker)`);
  if (!started) return;
  const { engine, work } = started;
  const reg = engine.registry;

  // The OS image: busybox + this machine's python3, a dpkg database of the Debian packages whose files it holds,
  // Debian's python3-distro and python3-blinker, and /etc/os-release.
  const host = hostPackages();
  const extra = join(work, "extra");
  await mkdir(join(extra, "var/lib/dpkg"), { recursive: true });
  await mkdir(join(extra, "etc"), { recursive: true });
  await mkdir(join(extra, DIST), { recursive: true });
  await writeFile(join(extra, "var/lib/dpkg/status"), host.status);
  await cp("/etc/os-release", join(extra, "etc/os-release"), { dereference: true });
  for (const d of readdirSync(DIST).filter((x) => /^(distro|blinker)([-.]|$)/.test(x))) await cp(join(DIST, d), join(extra, DIST, d), { recursive: true, dereference: true });
  await buildPythonImage(engine, OS_IMAGE, { "/": extra });

  const bake = async (file: string, group: string, meta: string) => {
    const r = await engine.docker(["buildx", "bake", "-f", file, group, "--metadata-file", meta, "--progress=plain"], { cwd: REPO_ROOT, env: { SOURCE_DATE_EPOCH: "0" }, timeoutMs: 240_000 });
    assert.equal(r.code, 0, `bake ${group} failed:\n${(r.stderr + r.stdout).slice(-4000)}`);
    return JSON.parse(await readFile(meta, "utf8")) as Json;
  };
  const plan = loadMatrix(MATRIX);
  const basePlan = plan.bases[0];

  // Bases through the bake export, then `strata attest --bake-metadata`.
  const bakeBases = join(work, "bake.json");
  await strata(["bake", "--matrix", MATRIX, "--registry", reg, "--out", bakeBases]);
  const baseMeta = join(work, "meta-bases.json");
  const baseDigest = (await bake(bakeBases, "bases", baseMeta))["base-pyos"]["containerimage.digest"] as string;
  const pushedFile = join(work, "pushed.txt");
  const baseOut = JSON.parse(await strata(["attest", "--matrix", MATRIX, "--bake-metadata", baseMeta, "--pushed", pushedFile, "--json"])).attestations as Json[];
  assert.deepEqual(baseOut.map((a) => a.kind).sort(), ["provenance", "sbom"]);

  // The runtime FROM the base by digest, attested from stack outputs (what `pulumi stack output --json` gives).
  const bakePinned = join(work, "bake-pinned.json");
  await strata(["bake", "--matrix", MATRIX, "--registry", reg, "--pin", baseMeta, "--out", bakePinned]);
  const pinned = JSON.parse(await readFile(bakePinned, "utf8")) as BakeFile;
  const baseRef = pinned.target["runtime-app-pyos"].args.BASE_IMAGE;
  const rtMeta = await bake(bakePinned, "runtimes", join(work, "meta-runtimes.json"));
  const rtDigest = rtMeta["runtime-app-pyos"]["containerimage.digest"] as string;
  const rtTag = pinned.target["runtime-app-pyos"].tags[0];
  const outputs = join(work, "outputs.json");
  await writeFile(outputs, JSON.stringify({ baseRefs: { pyos: baseRef }, runtimes: { "app-pyos": { base: "pyos", tags: [rtTag.split(":").pop()], ref: `${rtTag}@${rtDigest}` } } }));
  const env = { GITHUB_SERVER_URL: "https://github.com", GITHUB_REPOSITORY: "acme/models", GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567", GITHUB_REF: "refs/heads/main", GITHUB_WORKFLOW_REF: "acme/models/.github/workflows/strata-build-runtimes.yml@refs/heads/main", GITHUB_RUN_ID: "4242", GITHUB_RUN_ATTEMPT: "2" };
  const rtOut = JSON.parse(await strata(["attest", "--matrix", MATRIX, "--outputs", outputs, "--pushed", pushedFile, "--json"], env)).attestations as Json[];

  await t.test("the --pushed file lists every attestation artifact pushed, by digest", async () => {
    const lines = (await readFile(pushedFile, "utf8")).trim().split("\n");
    assert.deepEqual(lines, [...baseOut, ...rtOut].map((a) => a.ref));
    for (const l of lines) assert.match(l, new RegExp(`^${reg.replace(/\./g, "\\.")}/strata/(bases|runtimes)@sha256:[0-9a-f]{64}$`));
  });

  const expected = { deb: host.versions, pypi: { distro: distVersion("distro"), blinker: distVersion("blinker") } };
  const packagesIn = (sbom: Json) => {
    assert.equal(sbom.predicate.spdxVersion, "SPDX-2.3");
    const purls = sbom.predicate.packages.flatMap((p: Json) => (p.externalRefs ?? []).map((r: Json) => r.referenceLocator as string));
    return { purls, byName: new Map<string, string>(sbom.predicate.packages.map((p: Json) => [`${(p.externalRefs?.[0]?.referenceLocator ?? "").split("/")[0]}:${p.name}`, p.versionInfo])) };
  };

  await t.test("the base's SBOM lists its real Debian packages and Python packages with their versions", async () => {
    const found = await attestationsOf(reg, "strata/bases", baseDigest);
    t.diagnostic(`base attestations found through the ${found.via}`);
    const sbom = found.statements["https://spdx.dev/Document"];
    assert.ok(sbom, "no SPDX statement on the base");
    const { byName, purls } = packagesIn(sbom);
    for (const [name, version] of Object.entries(expected.deb)) assert.equal(byName.get(`pkg:deb:${name}`), version, `deb ${name}`);
    for (const [name, version] of Object.entries(expected.pypi)) assert.equal(byName.get(`pkg:pypi:${name}`), version, `pypi ${name}`);
    const osId = /^ID=(.*)$/m.exec(readFileSync("/etc/os-release", "utf8"))![1].replace(/"/g, "");
    assert.ok(purls.some((p: string) => p.startsWith(`pkg:deb/${osId}/python3-distro@`)), `deb purls name the OS (${osId})`);
    assert.ok(purls.includes(`pkg:pypi/distro@${expected.pypi.distro}`));
    assert.ok(!purls.some((p: string) => /pkg:deb\/[^/]+\/(bash|apt)@/.test(p)), "only packages of the image, not of this machine");
  });

  await t.test("the base's provenance records target, every build arg, the identity and the Dockerfile stages", async () => {
    const prov = (await attestationsOf(reg, "strata/bases", baseDigest)).statements["https://slsa.dev/provenance/v1"];
    assert.ok(prov, "no SLSA provenance on the base");
    const def = prov.predicate.buildDefinition;
    assert.equal(def.externalParameters.target, "base");
    assert.deepEqual(def.externalParameters.buildArgs, basePlan.args);
    assert.equal(def.externalParameters.platform, "linux/amd64");
    assert.deepEqual(def.internalParameters.identity, { hash: basePlan.hash, tag: basePlan.tag });
    assert.match(def.internalParameters.dockerfileText.stages[0].text, /^FROM \$\{OS_IMAGE\} AS base\n/);
    assert.ok(def.resolvedDependencies.some((d: Json) => d.uri === `pkg:docker/${OS_IMAGE}?platform=linux%2Famd64`), JSON.stringify(def.resolvedDependencies));
    assert.equal(prov.predicate.runDetails.builder.id, "urn:strata:local");
  });

  await t.test("the runtime's SBOM honours its whiteouts; its provenance names its base by digest and the workflow run", async () => {
    const found = await attestationsOf(reg, "strata/runtimes", rtDigest);
    const { byName } = packagesIn(found.statements["https://spdx.dev/Document"]);
    assert.equal(byName.get("pkg:pypi:distro"), expected.pypi.distro);
    assert.equal(byName.has("pkg:pypi:blinker"), false, "blinker was removed by the runtime's layer (whiteout), the SBOM must not list it");
    assert.equal(byName.get("pkg:deb:python3-blinker"), expected.deb["python3-blinker"], "the dpkg database still lists it (rm does not touch dpkg)");
    const prov = found.statements["https://slsa.dev/provenance/v1"].predicate;
    const def = prov.buildDefinition;
    assert.equal(def.externalParameters.target, "runtime");
    assert.equal(def.externalParameters.buildArgs.BASE_IMAGE, baseRef);
    assert.deepEqual(def.internalParameters.base, { name: "pyos", ref: baseRef, digest: baseDigest });
    assert.ok(def.resolvedDependencies.some((d: Json) => d.digest?.sha256 === baseDigest.slice(7)), "base digest among resolved dependencies");
    assert.ok(def.resolvedDependencies.some((d: Json) => d.digest?.gitCommit === env.GITHUB_SHA && d.uri === "git+https://github.com/acme/models@refs/heads/main"));
    assert.equal(prov.runDetails.builder.id, `https://github.com/${env.GITHUB_WORKFLOW_REF}`);
    assert.equal(prov.runDetails.metadata.invocationId, "https://github.com/acme/models/actions/runs/4242/attempts/2");
  });

  await t.test("oras discovers the attestations and fetches their statements", { skip: existsSync(ORAS) ? false : `no oras at ${ORAS} (run .ci/engine-deps.sh, or set STRATA_ORAS)` }, async () => {
    for (const [repo, digest] of [["strata/bases", baseDigest], ["strata/runtimes", rtDigest]] as const) {
      const r = await run(ORAS, ["discover", "--plain-http", "--format", "json", "--artifact-type", "application/vnd.in-toto+json", `${reg}/${repo}@${digest}`], { env: { ...process.env, HOME: work } });
      assert.equal(r.code, 0, `oras discover: ${r.stderr}`);
      const out = JSON.parse(r.stdout) as Json;
      const found = (out.manifests ?? out.referrers) as Json[];
      assert.deepEqual(found.map((d) => d.annotations["in-toto.io/predicate-type"]).sort(), ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]);
      const ours = await attestationsOf(reg, repo, digest);
      assert.deepEqual(new Set(found.map((d) => d.digest)), new Set(ours.artifacts.map((a) => a.digest)), "oras sees the artifacts the referrers list names");
      const sbom = ours.artifacts.find((a) => a.annotations["in-toto.io/predicate-type"] === "https://spdx.dev/Document")!;
      const blob = await run(ORAS, ["blob", "fetch", "--plain-http", "--output", "-", `${reg}/${repo}@${sbom.layers[0].digest}`], { env: { ...process.env, HOME: work } });
      assert.equal(blob.code, 0, `oras blob fetch: ${blob.stderr}`);
      const st = JSON.parse(blob.stdout) as Json;
      assert.equal(st.predicate.packages.find((p: Json) => p.name === "distro")?.versionInfo, distVersion("distro"));
    }
  });

  await t.test("re-attesting replaces the attestations instead of piling them up", async () => {
    await strata(["attest", "--matrix", MATRIX, `${reg}/strata/bases@${baseDigest}`]);
    const found = await attestationsOf(reg, "strata/bases", baseDigest);
    assert.equal(found.index.length, 2, `referrers of the base after re-attesting: ${JSON.stringify(found.index.map((d) => d.annotations))}`);
  });

  await t.test("a multi-platform index: its platform manifests get SBOM and provenance, the index a provenance", async () => {
    const m = await getManifest(reg, "strata/bases", baseDigest);
    const size = Buffer.byteLength(JSON.stringify(m.manifest));
    const raw = await fetch(`http://${reg}/v2/strata/bases/manifests/${baseDigest}`, { headers: { Accept: ACCEPT } });
    const child = { mediaType: raw.headers.get("content-type"), digest: baseDigest, size: Number(raw.headers.get("content-length") ?? size), platform: { os: "linux", architecture: "amd64" } };
    await raw.body?.cancel();
    const index = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [child] });
    const put = await fetch(`http://${reg}/v2/strata/bases/manifests/pyos-index`, { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.index.v1+json" }, body: index });
    assert.equal(put.status, 201, await put.text());
    const indexDigest = put.headers.get("docker-content-digest")!;
    const out = JSON.parse(await strata(["attest", "--matrix", MATRIX, "--json", `${reg}/strata/bases:pyos-index@${indexDigest}`])).attestations as Json[];
    assert.deepEqual(out.map((a) => `${a.kind}:${a.subject.split("@")[1] === indexDigest ? "index" : a.platform}`), ["sbom:linux/amd64", "provenance:linux/amd64", "provenance:index"]);
    const onIndex = await attestationsOf(reg, "strata/bases", indexDigest);
    assert.deepEqual(Object.keys(onIndex.statements), ["https://slsa.dev/provenance/v1"]);
    assert.deepEqual(onIndex.statements["https://slsa.dev/provenance/v1"].predicate.buildDefinition.externalParameters.platforms, ["linux/amd64"]);
    const onPlatform = await attestationsOf(reg, "strata/bases", baseDigest);
    assert.equal(onPlatform.statements["https://spdx.dev/Document"].predicate.packages.find((p: Json) => p.name === "distro")?.versionInfo, expected.pypi.distro);
    assert.equal(onPlatform.index.length, 2, "still one SBOM and one provenance on the platform manifest");
  });

  await t.test("ECR lifecycle rules, applied to the registry's content, expire no attestation of a kept image", async () => {
    const rules = lifecycleRules({ untaggedExpiryDays: 1, pullRequestExpiryDays: 14 });
    // Far in the future: every age limit has passed; only what a rule selects matters.
    const later = new Date(Date.now() + 100 * 365 * 86_400_000);
    for (const [repo, subject] of [["strata/bases", baseDigest], ["strata/runtimes", rtDigest]] as const) {
      const images = storedImages(engine, repo);
      const expired = expiredImages(rules, images, later);
      assert.ok(!expired.has(subject), `${repo}: the image itself expires`);
      const found = await attestationsOf(reg, repo, subject);
      const referrersIndex = (await getManifest(reg, repo, subject.replace(":", "-"))).digest;
      const mustStay = [...found.artifacts.map((a) => a.digest as string), referrersIndex];
      for (const d of mustStay) {
        assert.ok(images.some((i) => i.digest === d), `${repo}: ${d} is not in the registry's storage`);
        assert.ok(!expired.has(d), `${repo}: lifecycle rule '${expired.get(d)?.description}' would expire ${d}, an attestation of a kept image`);
      }
      // The check has teeth: the same artifacts without their tags (pushed by digest only) would expire.
      const untagged = images.map((i) => (mustStay.includes(i.digest) ? { ...i, tags: [] } : i));
      const wouldExpire = expiredImages(rules, untagged, later);
      for (const d of mustStay) assert.ok(wouldExpire.has(d), `${repo}: an untagged attestation ${d} is not selected by the untagged rule`);
      // What does expire is only what no tag holds: superseded referrers indexes and attestations.
      for (const d of expired.keys()) assert.equal(images.find((i) => i.digest === d)!.tags.length, 0);
    }
  });

  await t.test("strata gc deletes the attestations of the bases it deletes, and of a base that is gone; the kept base's stay", async () => {
    // Two more bases from a copy of the matrix with another build arg: one left for gc, one deleted outright
    // (what a lifecycle rule expiring it does), each attested first.
    const other = async (flavour: string) => {
      const dir = join(work, `matrix-${flavour}`);
      await cp(FIXTURE, dir, { recursive: true });
      await writeFile(join(dir, "strata.yaml"), (await readFile(MATRIX, "utf8")).replace('FLAVOUR: "attest"', `FLAVOUR: "${flavour}"`));
      const file = join(dir, "strata.yaml");
      const bakeFile = join(work, `bake-${flavour}.json`);
      await strata(["bake", "--matrix", file, "--registry", reg, "--out", bakeFile]);
      const meta = join(work, `meta-${flavour}.json`);
      const digest = (await bake(bakeFile, "bases", meta))["base-pyos"]["containerimage.digest"] as string;
      await strata(["attest", "--matrix", file, "--bake-metadata", meta]);
      return { digest, tag: (JSON.parse(await readFile(bakeFile, "utf8")) as BakeFile).target["base-pyos"].tags[0].split(":").pop()! };
    };
    const unused = await other("unused");
    const gone = await other("gone");
    assert.notEqual(unused.digest, baseDigest);
    // A runtime is attested only with the base it was really built FROM.
    const wrong = join(work, "outputs-wrong.json");
    await writeFile(wrong, JSON.stringify({ baseRefs: { pyos: `${reg}/strata/bases:${unused.tag}@${unused.digest}` }, runtimes: { "app-pyos": { ref: `${rtTag}@${rtDigest}` } } }));
    const refused = await run(process.execPath, [CLI, "attest", "--matrix", MATRIX, "--outputs", wrong], { cwd: REPO_ROOT, env: process.env, timeoutMs: 120_000 });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /is not built FROM its base .*the base's layers are not its first layers/);
    assert.match(refused.stderr, /nothing was pushed/);
    assert.doesNotMatch(refused.stderr, /^\s+at /m);
    const del = await fetch(`http://${reg}/v2/strata/bases/manifests/${gone.digest}`, { method: "DELETE" });
    assert.equal(del.status, 202, "deleting the 'gone' base");
    const tagsOf = (d: string) => [`sha256-${d.slice(7)}`, `sha256-${d.slice(7)}.spdx`, `sha256-${d.slice(7)}.provenance`];
    const gc = JSON.parse(await strata(["gc", "--matrix", MATRIX, "--registry", `${reg}/strata`, "--apply", "--json"])) as { decisions: { tag: string; action: string }[]; attestations: string[] };
    assert.deepEqual(gc.decisions.filter((d) => d.action === "delete").map((d) => d.tag), [unused.tag]);
    assert.deepEqual(new Set(gc.attestations), new Set([...tagsOf(unused.digest), ...tagsOf(gone.digest)]));
    const left = ((await (await fetch(`http://${reg}/v2/strata/bases/tags/list`)).json()) as { tags: string[] }).tags;
    for (const t of [...tagsOf(unused.digest), ...tagsOf(gone.digest)]) assert.ok(!left.includes(t), `${t} is still there`);
    for (const t of tagsOf(baseDigest)) assert.ok(left.includes(t), `the kept base's ${t} was deleted`);
    const kept = await attestationsOf(reg, "strata/bases", baseDigest);
    assert.equal(kept.index.length, 2, "the kept base's attestations read back after gc");

    // A runtime that is gone (a branch tag moved on, the old image expired untagged) leaves its attestations in the
    // runtimes repository: gc lists them, and deletes them only when asked to (--runtime-orphans).
    // A distribution registry lists a repository with no tags left as `tags: null`.
    const runtimeTags = async () => ((await (await fetch(`http://${reg}/v2/strata/runtimes/tags/list`)).json()) as { tags: string[] | null }).tags ?? [];
    for (const t of tagsOf(rtDigest)) assert.ok((await runtimeTags()).includes(t), `the runtime's ${t} is there`);
    assert.equal((await fetch(`http://${reg}/v2/strata/runtimes/manifests/${rtDigest}`, { method: "DELETE" })).status, 202, "deleting the runtime");
    const listed = JSON.parse(await strata(["gc", "--matrix", MATRIX, "--registry", `${reg}/strata`, "--apply", "--json"])) as { runtimeOrphans: string[] };
    assert.deepEqual(new Set(listed.runtimeOrphans), new Set(tagsOf(rtDigest)));
    for (const t of tagsOf(rtDigest)) assert.ok((await runtimeTags()).includes(t), `--apply alone leaves the runtime orphan ${t}`);
    const swept = JSON.parse(await strata(["gc", "--matrix", MATRIX, "--registry", `${reg}/strata`, "--apply", "--runtime-orphans", "--json"])) as { deleted: string[] };
    for (const t of tagsOf(rtDigest)) assert.ok(swept.deleted.includes(`strata/runtimes:${t}`), JSON.stringify(swept.deleted));
    const after = await runtimeTags();
    for (const t of tagsOf(rtDigest)) assert.ok(!after.includes(t), `${t} is still there`);
  });
});
