// `strata attest` without an engine: the package-database scan of layers (whiteouts, hostile tar entries, limits),
// the parsers, the SPDX / SLSA / in-toto / OCI documents, the input files, gc's choice of attestations to delete,
// and the generated workflows' attest steps. The real-engine round trip is test/engine-attest.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { parse } from "yaml";
import { dockerfileFacts, parsePushedRef, scanLayerStream, targetsFromBakeMetadata, targetsFromOutputs } from "../cli/attest.ts";
import {
  applyLayers,
  artifactManifest,
  attestationTag,
  buildRunFromEnv,
  classifyEntry,
  emptyChanges,
  normalisePath,
  packagesOf,
  parseApkInstalled,
  parseDpkgStatus,
  parsePythonMetadata,
  provenancePredicate,
  SCAN_LIMITS,
  sha256,
  spdxDocument,
  statement,
  type BuildFacts,
  type LayerChanges,
} from "../cli/attestation.ts";
import { attestationsOfDeleted, orphanAttestations, type BaseEntry } from "../cli/gc.ts";
import { DIGEST_TAG_FILTER, lifecycleRules, mutableRuntimeTagFilters } from "../components/registry.ts";
import { loadMatrix } from "../matrix/load.ts";
import { expiredImages } from "./support/ecr-lifecycle.ts";
import { generateWorkflows, WORKFLOW_FILES } from "../workflows/generate.ts";
import { FIXTURES, noStackTrace, strata } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------------------------
// A tar writer for fixtures (ustar headers by hand, so hostile entries can be written too).

function header(name: string, size: number, type: string, linkname = ""): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s.slice(0, len), off, "latin1");
  put(name, 0, 100);
  put("0000644\0", 100, 8);
  put("0000000\0", 108, 8);
  put("0000000\0", 116, 8);
  put(size.toString(8).padStart(11, "0") + "\0", 124, 12);
  put("00000000000\0", 136, 12);
  put("        ", 148, 8);
  put(type, 156, 1);
  put(linkname, 157, 100);
  put("ustar\0", 257, 6);
  put("00", 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return h;
}

type Entry = { name: string; body?: string | Buffer; type?: string; link?: string };

function tar(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? "");
    parts.push(header(e.name, body.length, e.type ?? "0", e.link), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

async function* chunks(data: Buffer, size = 700): AsyncIterable<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

const budget = () => ({ bytes: SCAN_LIMITS.totalBytes, files: SCAN_LIMITS.metadataFiles });
async function scan(entries: Entry[], gzip = true): Promise<LayerChanges> {
  const data = gzip ? gzipSync(tar(entries)) : tar(entries);
  const r = await scanLayerStream(chunks(data), "layer", budget());
  assert.equal(r.digest, sha256(data), "the scan digests what it read");
  return r.changes;
}

const DPKG = `Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u14
Description: GNU C Library
 continuation line: Version: 9.9

Package: removed-pkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: python3-distro
Status: install ok installed
Architecture: all
Version: 1:1.8.0-1
`;
const metadata = (name: string, version: string) => `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\nSummary: x\n\nVersion: 0.0-from-the-description\n`;
const SITE = "usr/lib/python3/dist-packages";

describe("the image's package databases, layer by layer", () => {
  test("dpkg, apk and Python metadata are read; whiteouts and opaque directories of upper layers remove them", async () => {
    const lower = await scan([
      { name: "./", type: "5" },
      { name: "./var/lib/dpkg/status", body: DPKG },
      { name: "./etc/os-release", body: 'ID=debian\nVERSION_ID="12"\n' },
      { name: `./${SITE}/distro-1.8.0.dist-info/METADATA`, body: metadata("distro", "1.8.0") },
      { name: `./${SITE}/blinker-1.5.dist-info/METADATA`, body: metadata("blinker", "1.5") },
      { name: `./${SITE}/PyYAML-6.0.egg-info/PKG-INFO`, body: metadata("PyYAML", "6.0") },
      { name: "usr/local/lib/python3.11/site-packages/Flash_Attn-2.7.4.dist-info/METADATA", body: metadata("flash_attn", "2.7.4.post1") },
      { name: "opt/venv/lib/python3.11/site-packages/torch-2.5.1.dist-info/METADATA", body: metadata("torch", "2.5.1+cu124") },
    ]);
    const upper = await scan(
      [
        { name: `${SITE}/.wh.blinker-1.5.dist-info` },
        { name: "opt/venv/lib/python3.11/site-packages/.wh..wh..opq" },
        { name: "opt/venv/lib/python3.11/site-packages/numpy-2.1.0.dist-info/METADATA", body: metadata("numpy", "2.1.0") },
        { name: "lib/apk/db/installed", body: "P:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\n" },
      ],
      false,
    );
    const { packages, distro } = packagesOf(applyLayers([lower, upper]));
    assert.deepEqual(distro, { id: "debian", versionId: "12" });
    assert.deepEqual(
      packages.map((p) => p.purl),
      [
        "pkg:apk/debian/busybox@1.36.1-r29?distro=12",
        "pkg:apk/debian/musl@1.2.5-r0?arch=x86_64&distro=12",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12",
        "pkg:deb/debian/python3-distro@1%3A1.8.0-1?arch=all&distro=debian-12",
        "pkg:pypi/distro@1.8.0",
        "pkg:pypi/flash-attn@2.7.4.post1",
        "pkg:pypi/numpy@2.1.0",
        "pkg:pypi/pyyaml@6.0",
      ],
    );
    assert.equal(packages.find((p) => p.name === "libc6")!.version, "2.36-9+deb12u14", "a continuation line is not a field");
  });

  test("a symlink over a dist-info hides it; a directory entry merges; a hard link copies a file of the layer", async () => {
    const lower = await scan([{ name: `${SITE}/a-1.dist-info/METADATA`, body: metadata("a", "1") }, { name: `${SITE}/b-1.dist-info/METADATA`, body: metadata("b", "1") }]);
    const upper = await scan([
      { name: `${SITE}/a-1.dist-info`, type: "2", link: "/elsewhere" },
      { name: `${SITE}/b-1.dist-info/`, type: "5" },
      { name: "var/lib/dpkg/status", body: DPKG },
      { name: "var/lib/dpkg/status.d/base", type: "1", link: "var/lib/dpkg/status" },
    ]);
    const fs = applyLayers([lower, upper]);
    assert.deepEqual([...fs.keys()].sort(), [`${SITE}/b-1.dist-info/METADATA`, "var/lib/dpkg/status", "var/lib/dpkg/status.d/base"]);
  });

  test("hostile entries: paths out of the root are ignored, a whiteout cannot climb out, oversized files are skipped", async () => {
    assert.equal(normalisePath("../../var/lib/dpkg/status"), null);
    assert.equal(normalisePath("./a/./b/../c"), "a/c");
    assert.equal(normalisePath("a\0b"), null);
    const saved = SCAN_LIMITS.databaseBytes;
    SCAN_LIMITS.databaseBytes = 1000;
    try {
      const lower = await scan([{ name: "var/lib/dpkg/status", body: DPKG }]);
      const upper = await scan([
        { name: "../../../var/lib/dpkg/status", body: "Package: evil\nStatus: install ok installed\nVersion: 6.6.6\n" },
        { name: "tmp/../../.wh.var" },
        { name: "var/lib/dpkg/status.d/huge", body: `Package: huge\nVersion: 1\n${"x".repeat(2000)}` },
        { name: `${SITE}/big-1.dist-info/METADATA`, body: metadata("big", "1") + "d".repeat(200_000) },
        { name: `${SITE}/bad-1.dist-info/METADATA`, body: "Name: bad\nVersion: 1\n\n" },
        { name: `${SITE}/inj-1.dist-info/METADATA`, body: "Name: inj\nect\nVersion: 1; rm -rf /\n" },
      ]);
      assert.ok(upper.notes.some((n) => /outside the image root/.test(n)), upper.notes.join("; "));
      assert.ok(upper.notes.some((n) => /skipped \/var\/lib\/dpkg\/status\.d\/huge/.test(n)));
      assert.equal(upper.files.get(`${SITE}/big-1.dist-info/METADATA`)!.length, SCAN_LIMITS.metadataBytes, "only the head of a long METADATA is kept");
      const { packages } = packagesOf(applyLayers([lower, upper]));
      assert.deepEqual(packages.map((p) => `${p.name}@${p.version}`).sort(), ["bad@1", "big@1", "libc6@2.36-9+deb12u14", "python3-distro@1:1.8.0-1"]);
    } finally {
      SCAN_LIMITS.databaseBytes = saved;
    }
  });

  test("a layer that is not a tar (or a corrupt gzip) is an error naming the layer, not a stack trace", async () => {
    const gz = gzipSync(tar([{ name: "var/lib/dpkg/status", body: DPKG }]));
    gz[gz.length - 6] ^= 0xff;
    await assert.rejects(scanLayerStream(chunks(gz), "img: layer sha256:abc", budget()), /img: layer sha256:abc: not a readable layer/);
    await assert.rejects(scanLayerStream(chunks(gzipSync(Buffer.from("just text, no tar ".repeat(100)))), "img: layer x", budget()), /not a readable layer/);
  });

  test("the buffered total and the number of Python metadata files are bounded", async () => {
    const data = tar(Array.from({ length: 5 }, (_, i) => ({ name: `${SITE}/p${i}-1.dist-info/METADATA`, body: metadata(`p${i}`, "1") })));
    await assert.rejects(scanLayerStream(chunks(data), "img", { bytes: 1 << 20, files: 3 }), /more than \d+ Python metadata files/);
    await assert.rejects(scanLayerStream(chunks(data), "img", { bytes: 100, files: 10 }), /package databases larger than/);
  });

  test("classifyEntry reads only package databases", () => {
    const c = emptyChanges();
    assert.equal(classifyEntry(c, "usr/bin/python3", "File"), null);
    assert.equal(classifyEntry(c, "var/lib/dpkg/status.d/x.md5sums", "File"), null);
    assert.equal(classifyEntry(c, "var/lib/dpkg/status", "File")?.kind, "dpkg");
    assert.equal(classifyEntry(c, "usr/lib/python3.11/site-packages/six-1.16.egg-info", "File")?.kind, "python");
  });
});

describe("package database parsers", () => {
  test("dpkg: only installed packages with well-formed names and versions", () => {
    const pkgs = parseDpkgStatus(`${DPKG}\nPackage: Bad Name\nVersion: 1\n\nPackage: nover\n`, "/var/lib/dpkg/status", { id: "ubuntu", versionId: "22.04" });
    assert.deepEqual(pkgs.map((p) => p.purl), ["pkg:deb/ubuntu/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=ubuntu-22.04", "pkg:deb/ubuntu/python3-distro@1%3A1.8.0-1?arch=all&distro=ubuntu-22.04"]);
  });
  test("Python: name and version from the first header block, PEP 503 names in the purl", () => {
    assert.deepEqual(parsePythonMetadata(metadata("Flash_Attn", "2.7.4"), "/m"), { type: "pypi", name: "Flash_Attn", version: "2.7.4", location: "/m", purl: "pkg:pypi/flash-attn@2.7.4" });
    assert.equal(parsePythonMetadata("Name: x\n", "/m"), null);
  });
  test("apk: P/V/A fields", () => {
    assert.deepEqual(parseApkInstalled("P:musl\nV:1.2.5-r0\nA:x86_64\n", "/lib/apk/db/installed").map((p) => p.purl), ["pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64"]);
  });
});

// ---------------------------------------------------------------------------------------------------------------

const subject = { name: "127.0.0.1:5000/strata/bases", digest: `sha256:${"ab".repeat(32)}`, mediaType: "application/vnd.oci.image.manifest.v1+json", size: 1234, platform: "linux/amd64" };

describe("documents", () => {
  test("SPDX 2.3: the image DESCRIBED, CONTAINS each package, valid SPDX ids", () => {
    const { packages } = packagesOf(new Map([["var/lib/dpkg/status", Buffer.from(DPKG)]]));
    const doc = spdxDocument(subject, packages, new Date(0)) as { packages: { SPDXID: string; name: string }[]; relationships: { relationshipType: string; relatedSpdxElement: string }[]; creationInfo: { created: string } };
    assert.equal(doc.creationInfo.created, "1970-01-01T00:00:00Z");
    assert.deepEqual(doc.packages.map((p) => p.name), [subject.name, "libc6", "python3-distro"]);
    for (const p of doc.packages) assert.match(p.SPDXID, /^SPDXRef-[A-Za-z0-9.-]+$/);
    assert.equal(doc.relationships.filter((r) => r.relationshipType === "CONTAINS").length, 2);
    assert.equal(doc.relationships.find((r) => r.relationshipType === "DESCRIBES")!.relatedSpdxElement, "SPDXRef-Image");
  });

  test("in-toto statement in an OCI 1.1 artifact whose subject is the image; tags never collide with cosign's", () => {
    const st = statement(subject, "sbom", { x: 1 });
    assert.deepEqual(st.subject, [{ name: subject.name, digest: { sha256: "ab".repeat(32) } }]);
    const m = artifactManifest(subject, "provenance", { digest: "sha256:1", size: 2 }, { mediaType: "application/vnd.oci.empty.v1+json", digest: "sha256:2", size: 2 }, new Date(0));
    assert.equal(m.artifactType, "application/vnd.in-toto+json");
    assert.deepEqual(m.subject, { mediaType: subject.mediaType, digest: subject.digest, size: subject.size });
    assert.equal(m.layers[0].annotations["in-toto.io/predicate-type"], "https://slsa.dev/provenance/v1");
    assert.equal(attestationTag(subject.digest, "sbom"), `sha256-${"ab".repeat(32)}.spdx`);
    assert.equal(attestationTag(subject.digest, "provenance"), `sha256-${"ab".repeat(32)}.provenance`);
    for (const kind of ["sbom", "provenance"] as const) assert.doesNotMatch(attestationTag(subject.digest, kind), /\.(sig|att|sbom)$/);
  });

  test("SLSA provenance: build definition, base by digest, source commit, builder and run from the GitHub env", () => {
    const facts: BuildFacts = {
      kind: "runtime",
      name: "app",
      dockerfile: "docker/Dockerfile.runtime",
      target: "runtime",
      context: ".",
      buildArgs: { BASE_IMAGE: `r/b:t@${subject.digest}`, A: "1" },
      platforms: ["linux/amd64"],
      dockerfileText: { globals: "ARG BASE_IMAGE", stages: [{ index: 0, name: "runtime", text: "FROM ${BASE_IMAGE} AS runtime" }] },
      base: { name: "b", ref: `r/b:t@${subject.digest}`, digest: subject.digest },
      upstream: [],
      source: { repository: "https://github.com/acme/m", commit: "c0ffee", ref: "refs/tags/v1" },
    };
    const env = { GITHUB_WORKFLOW_REF: "acme/m/.github/workflows/w.yml@refs/tags/v1", GITHUB_REPOSITORY: "acme/m", GITHUB_RUN_ID: "7", GITHUB_RUN_ATTEMPT: "3" };
    const p = provenancePredicate(facts, buildRunFromEnv(env, new Date(0)), "linux/amd64") as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.equal(p.runDetails.builder.id, "https://github.com/acme/m/.github/workflows/w.yml@refs/tags/v1");
    assert.equal(p.runDetails.metadata.invocationId, "https://github.com/acme/m/actions/runs/7/attempts/3");
    assert.deepEqual(Object.keys(p.buildDefinition.externalParameters.buildArgs), ["A", "BASE_IMAGE"]);
    assert.deepEqual(p.buildDefinition.resolvedDependencies.map((d: { uri: string }) => d.uri), ["git+https://github.com/acme/m@refs/tags/v1", "pkg:docker/r/b:t?platform=linux%2Famd64"]);
    assert.equal(buildRunFromEnv({}, new Date(0)).builderId, "urn:strata:local");
  });

  test("Dockerfile facts: the stages the target runs, FROM images with build args substituted, digests from the lock", () => {
    const df = "ARG CUDA=12.6.3\nARG OS\nFROM nvidia/cuda:${CUDA}-devel AS builder\nRUN make\nFROM nvidia/cuda:${CUDA}-runtime AS base\nCOPY --from=builder /o /o\nFROM alpine@sha256:" + "c".repeat(64) + " AS unused\n";
    const locked = `sha256:${"d".repeat(64)}`;
    const at = { file: "Dockerfile", line: 5, col: 1 };
    const lock = [{ ref: "nvidia/cuda:12.8.0-runtime", platforms: ["linux/amd64"], at, digest: `sha256:${"e".repeat(64)}`, platformDigests: { "linux/amd64": locked } }];
    const f = dockerfileFacts(df, { dockerfile: "Dockerfile", target: "base", args: { CUDA: "12.8.0" }, platforms: ["linux/amd64"], locked: lock });
    assert.equal(f.text.globals, "ARG CUDA=12.6.3\nARG OS");
    assert.deepEqual(f.text.stages.map((s) => s.name), ["builder", "base"]);
    assert.deepEqual(f.upstream, [
      { uri: "pkg:docker/nvidia/cuda:12.8.0-devel?platform=linux%2Famd64", name: "FROM nvidia/cuda:12.8.0-devel" },
      { uri: "pkg:docker/nvidia/cuda:12.8.0-runtime?platform=linux%2Famd64", name: "FROM nvidia/cuda:12.8.0-runtime", digest: { sha256: "d".repeat(64) } },
    ]);
    // An index's provenance (every platform) takes the digest the tag resolved to.
    const all = dockerfileFacts(df, { dockerfile: "Dockerfile", target: "base", args: { CUDA: "12.8.0" }, platforms: ["linux/amd64", "linux/arm64"], locked: lock });
    assert.deepEqual(all.upstream[1], { uri: "pkg:docker/nvidia/cuda:12.8.0-runtime", name: "FROM nvidia/cuda:12.8.0-runtime", digest: { sha256: "e".repeat(64) } });
    assert.deepEqual(dockerfileFacts(df, { dockerfile: "Dockerfile", target: "unused", args: {}, platforms: ["linux/amd64"] }).upstream, [
      { uri: "pkg:docker/alpine?platform=linux%2Famd64", name: `FROM alpine@sha256:${"c".repeat(64)}`, digest: { sha256: "c".repeat(64) } },
    ]);
  });
});

describe("inputs", () => {
  const d = `sha256:${"e".repeat(64)}`;
  test("image references must be digest-pinned, with a registry host", () => {
    assert.deepEqual(parsePushedRef(`localhost:5000/strata/bases:b-123@${d}`), { host: "localhost:5000", repo: "strata/bases", digest: d });
    assert.equal(parsePushedRef("localhost:5000/strata/bases:b-123"), null);
    assert.equal(parsePushedRef(`strata@${d}`), null);
  });
  test("stack outputs: bases.*.ref and runtimes.*.ref; a bad field is named", () => {
    const out = targetsFromOutputs({ bases: { cu: { ref: `h:1/s/bases:cu-1@${d}` } }, runtimes: { app: { ref: `h:1/s/runtimes:app-v1@${d}` } }, baseRefs: { cu: `h:1/s/bases:cu-1@${d}` } }, "out.json");
    assert.deepEqual(out.targets.map((t) => `${t.kind}:${t.name}:${t.repo}`), ["base:cu:s/bases", "runtime:app:s/runtimes"]);
    assert.throws(() => targetsFromOutputs({ runtimes: { app: { ref: "h:1/s/runtimes:app" } } }, "out.json"), /^Error: out\.json: runtimes\.app\.ref: 'h:1\/s\/runtimes:app' is not a digest-pinned/);
    assert.throws(() => targetsFromOutputs([], "out.json"), /out\.json: \(top level\)/);
  });
  test("bake metadata: base-* and runtime-* targets with their pushed digest", () => {
    const t = targetsFromBakeMetadata({ "runtime-app": { "containerimage.digest": d, "image.name": "h:1/s/runtimes:app-v1,h:1/s/runtimes:app-main" }, "buildx.build.warnings": [] }, "m.json");
    assert.deepEqual(t, [{ host: "h:1", repo: "s/runtimes", digest: d, kind: "runtime", name: "app" }]);
    assert.throws(() => targetsFromBakeMetadata({ "base-x": { "image.name": "h/s/bases:x" } }, "m.json"), /m\.json: base-x: no containerimage\.digest/);
  });
  test("the CLI: --help, a usage error, and a bad outputs file exit cleanly without a stack trace", () => {
    const help = strata(["attest", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--pushed FILE/);
    const bad = strata(["attest", "localhost:5000/strata/bases:x"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not a digest-pinned image reference/);
    const dir = mkdtempSync(join(tmpdir(), "strata-attest-"));
    writeFileSync(join(dir, "o.json"), '{"bases": {"x": {"ref": 3}}}');
    const file = strata(["attest", "--outputs", join(dir, "o.json")]);
    assert.equal(file.code, 1);
    assert.match(file.stderr, /o\.json: bases\.x\.ref: missing or not a string/);
    assert.match(file.stderr, /nothing was pushed/);
    noStackTrace(file.stderr);
    const none = strata(["attest", "--outputs", join(dir, "o.json"), "--only", "everything"]);
    assert.equal(none.code, 2);
  });
});

describe("gc and attestations", () => {
  const hex = (c: string) => c.repeat(64);
  const base = (tag: string, digest: string, children: string[] = []): BaseEntry => ({ tag, digest, layerSets: [], blobs: children.map((c) => ({ digest: c, size: 1 })), created: null });
  test("attestations and referrers indexes of deleted bases go, with their platform manifests'; kept ones stay", () => {
    const bases = [base("old-000000000001", `sha256:${hex("a")}`, [`sha256:${hex("b")}`, `sha256:${hex("c")}`]), base("cur-000000000002", `sha256:${hex("d")}`, [`sha256:${hex("c")}`])];
    const decisions = [
      { tag: "old-000000000001", digest: `sha256:${hex("a")}`, action: "delete" as const, why: "" },
      { tag: "cur-000000000002", digest: `sha256:${hex("d")}`, action: "keep" as const, why: "" },
    ];
    const tags = [`sha256-${hex("a")}`, `sha256-${hex("a")}.provenance`, `sha256-${hex("b")}.spdx`, `sha256-${hex("b")}`, `sha256-${hex("a")}.sig`, `sha256-${hex("c")}.spdx`, `sha256-${hex("d")}.spdx`, `sha256-${hex("9")}.spdx`];
    assert.deepEqual(attestationsOfDeleted(tags, bases, decisions), [`sha256-${hex("a")}`, `sha256-${hex("a")}.provenance`, `sha256-${hex("b")}.spdx`, `sha256-${hex("b")}`, `sha256-${hex("a")}.sig`]);
  });
});

describe("attestation tags and the ECR repository rules", () => {
  const d = `sha256:${"7".repeat(64)}`;
  const tags = [attestationTag(d, "sbom"), attestationTag(d, "provenance"), d.replace(":", "-")];
  test("every attestation tag is mutable on ECR (re-attesting moves it), in bases and in runtimes", () => {
    const wildcard = (f: string) => new RegExp(`^${f.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
    const runtimes = mutableRuntimeTagFilters(["{name}-{version}"], { defaultBranch: "main", release: { version: "v1.0.0", branch: "main", sha: "abcdef0" } });
    for (const t of tags) {
      assert.ok(wildcard(DIGEST_TAG_FILTER).test(t), t);
      assert.ok(runtimes.some((f) => wildcard(f).test(t)), `runtimes: ${t}`);
      assert.ok(t.length <= 128, "an OCI tag is at most 128 characters");
    }
  });
  test("no lifecycle rule selects a tagged attestation, however old; the same artifact untagged would expire", () => {
    const rules = lifecycleRules({ untaggedExpiryDays: 1, pullRequestExpiryDays: 1 });
    const old = new Date(0);
    const now = new Date(Date.UTC(2100, 0, 1));
    const images = tags.map((t, i) => ({ digest: `sha256:${String(i).repeat(64)}`, tags: [t], pushedAt: old }));
    assert.equal(expiredImages(rules, images, now).size, 0);
    assert.equal(expiredImages(rules, images.map((i) => ({ ...i, tags: [] })), now).size, images.length);
    assert.equal(expiredImages(rules, [{ digest: "x", tags: ["pr-7-app"], pushedAt: old }], now).get("x")?.rulePriority, 2, "the model does expire what the rules name");
  });
});

describe("gc and orphaned attestations", () => {
  test("an attestation whose image is gone (expired by a lifecycle rule) is an orphan; one of an image still there is not", async () => {
    const hex = (c: string) => c.repeat(64);
    const bases: BaseEntry[] = [{ tag: "cur-000000000002", digest: `sha256:${hex("d")}`, layerSets: [], blobs: [{ digest: `sha256:${hex("c")}`, size: 1 }], created: null }];
    const asked: string[] = [];
    const exists = async (d: string) => (asked.push(d), d === `sha256:${hex("e")}`);
    const tags = [`sha256-${hex("d")}.spdx`, `sha256-${hex("c")}`, `sha256-${hex("e")}.provenance`, `sha256-${hex("f")}.spdx`, `sha256-${hex("f")}`, "cur-000000000002"];
    assert.deepEqual(await orphanAttestations(tags, bases, exists), [`sha256-${hex("f")}.spdx`, `sha256-${hex("f")}`]);
    assert.deepEqual(asked, [`sha256:${hex("e")}`, `sha256:${hex("f")}`], "the registry is asked once per unknown subject, never about inspected bases");
  });
});

describe("generated workflows attest what they push", () => {
  const plan = loadMatrix(join(FIXTURES, "strata-master.yaml"));
  const opts = { stack: "prod", matrix: "strata.yaml" };
  const steps = (file: string, o = opts) => parse(generateWorkflows(plan, o)[file]).jobs["build-1"].steps as { name?: string; run?: string }[];
  const attestAfter = (list: { name?: string; run?: string }[], pushStep: RegExp) => {
    const i = list.findIndex((s) => pushStep.test(s.name ?? ""));
    assert.ok(i >= 0, "the push step");
    // Only a runtime shard's check that it built FROM the verified bases may come between.
    const after = list[i + 1]?.name === "The runtimes were built FROM the verified bases" ? i + 2 : i + 1;
    const next = list[after];
    assert.match(next.name ?? "", /^Attest the pushed/, "the attest step comes right after the push");
    assert.match(next.run!, /npx strata attest .*--outputs "\$RUNNER_TEMP\/strata-outputs\.json"/);
    assert.match(next.run!, /--pushed "\$RUNNER_TEMP\/strata-attestations\.txt"/);
    return { push: list[i].run!, attest: next.run! };
  };
  test("base shard jobs: the shard stack's outputs, bases only", () => {
    const { attest } = attestAfter(steps(WORKFLOW_FILES.bases), /^pulumi up \(shard stack/);
    assert.match(attest, /pulumi stack output --stack "\$\{STRATA_STACK\}-base-\$\{STRATA_BASE\}" --json > "\$RUNNER_TEMP\/strata-outputs\.json"/);
    assert.match(attest, /--only bases/);
  });
  test("runtime jobs: the bake metadata of the push, the base from STRATA_BASE_REFS", () => {
    const { push, attest } = attestAfter(steps(WORKFLOW_FILES.runtimes), /^Build FROM the published base/);
    assert.match(push, /docker buildx bake -f bake\.json "runtime-\$STRATA_RUNTIME" --metadata-file "\$RUNNER_TEMP\/strata-bake-metadata\.json"/);
    assert.match(attest, /jq -n --argjson refs "\$BASE_REFS" '\{baseRefs: \$refs\}'/);
    assert.match(attest, /--bake-metadata "\$RUNNER_TEMP\/strata-bake-metadata\.json" --only runtimes/);
  });
  test("runtime shard jobs: the runtime shard stack's outputs, runtimes only", () => {
    const { attest } = attestAfter(steps(WORKFLOW_FILES.runtimes, { ...opts, runtimeShardSize: 10 } as typeof opts), /^pulumi up \(runtime shard stack/);
    assert.match(attest, /pulumi stack output --stack "\$\{STRATA_STACK\}-runtimes-\$\{STRATA_SHARD#runtimes-\}" --json/);
    assert.match(attest, /--only runtimes/);
  });
});
