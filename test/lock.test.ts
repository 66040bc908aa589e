import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { computeImpact } from "../cli/impact.ts";
import { bakeFile } from "../cli/bake.ts";
import { credentialsFor, RegistryClient, RegistryError, resolveTag } from "../cli/registry.ts";
import { DockerfileInfo } from "../matrix/dockerfile.ts";
import { loadMatrix } from "../matrix/load.ts";
import { contextKey, expandArgs, formatLock, frontendBuildArgs, lockFileFor, lockStatus, namedContexts, parseImageRef, readLock, upstreamImages, type LockFile } from "../matrix/lock.ts";
import { BASE_DOCKERFILE, cleanup, noStackTrace, problemsOf, SIMPLE_MATRIX, simpleProject, strata } from "./helpers.ts";

const dirs: string[] = [];
after(() => dirs.forEach(cleanup));
const D = (c: string) => `sha256:${c.repeat(64)}`;

const DEVEL = "nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04";
const RUNTIME = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04";

function lockOf(images: Record<string, [string, Record<string, string>]>): LockFile {
  return { version: 1, images: Object.fromEntries(Object.entries(images).map(([ref, [digest, platforms]]) => [ref, { digest, platforms }])) };
}

function projectWith(files: Record<string, string> = {}, matrix = SIMPLE_MATRIX): string {
  const dir = simpleProject(matrix, files);
  dirs.push(dir);
  return dir;
}

describe("image references", () => {
  test("Docker Hub short names normalise; other registries keep their host; invalid references are refused", () => {
    assert.deepEqual(parseImageRef("nvidia/cuda:12"), { domain: "docker.io", apiHost: "registry-1.docker.io", repository: "nvidia/cuda", tag: "12", digest: undefined, familiar: "nvidia/cuda:12" });
    assert.equal(parseImageRef("ubuntu")?.repository, "library/ubuntu");
    assert.equal(parseImageRef("ubuntu")?.familiar, "ubuntu:latest");
    assert.equal(parseImageRef("docker.io/library/ubuntu:22.04")?.familiar, "ubuntu:22.04");
    assert.equal(parseImageRef("index.docker.io/nvidia/cuda:12")?.familiar, "nvidia/cuda:12");
    const local = parseImageRef("127.0.0.1:5000/upstream/cuda:12")!;
    assert.deepEqual([local.apiHost, local.repository, local.familiar], ["127.0.0.1:5000", "upstream/cuda", "127.0.0.1:5000/upstream/cuda:12"]);
    assert.equal(parseImageRef("nvcr.io/nvidia/l4t-jetpack:r36.4.0")?.apiHost, "nvcr.io");
    assert.equal(parseImageRef(`alpine:3@${D("a")}`)?.digest, D("a"));
    for (const bad of ["", "Nvidia/cuda:12", "nvidia/cuda:", "nvidia/cuda:-x", "x@sha256:12", ":12", "a//b"]) assert.equal(parseImageRef(bad), undefined, bad);
  });

  test("the named-context key is the short name without :latest, as BuildKit looks it up", () => {
    assert.equal(contextKey("ubuntu:latest"), "ubuntu");
    assert.equal(contextKey("nvidia/cuda:12"), "nvidia/cuda:12");
    assert.deepEqual(namedContexts([{ ref: "ubuntu:latest", platforms: ["linux/amd64"], at: { file: "f", line: 1, col: 1 }, digest: D("1") }, { ref: "x/y:1", platforms: [], at: { file: "f", line: 1, col: 1 } }]), {
      ubuntu: `docker-image://docker.io/library/ubuntu:latest@${D("1")}`,
    });
  });
});

describe("build-arg substitution", () => {
  const scope = new Map([["A", "1"], ["E", ""]]);
  test("${X}, $X, defaults and alternatives expand as BuildKit expands them; unset is empty", () => {
    assert.equal(expandArgs("x:${A}-$A", scope), "x:1-1");
    assert.equal(expandArgs("${B:-d}|${E:-d}|${E-d}|${A:+alt}|${B:+alt}|${B}", scope), "d|d||alt||");
    assert.equal(expandArgs("${B:-${A}}", scope), "1");
    assert.equal(expandArgs("\\$A", scope), "$A");
  });

  test("a hostile FROM (a megabyte of unclosed ${X:-) is refused in linear time, as a problem at its line", () => {
    const info = new DockerfileInfo(`ARG X=\${"\${X:-".repeat(50_000)}\nFROM \${"\${X:-".repeat(200_000)}\n`);
    const { images, problems } = upstreamImages(info, { dockerfile: "Dockerfile", args: {}, platforms: ["linux/amd64"] });
    assert.deepEqual(images, []);
    assert.equal(problems.length, 1);
    assert.equal(problems[0].line, 2);
    assert.ok(problems[0].message.length < 500, "the message quotes the line clipped");
  });
});

describe("upstream images of a build", () => {
  const at = (df: string, opts: Partial<Parameters<typeof upstreamImages>[1]> = {}) => upstreamImages(new DockerfileInfo(df), { dockerfile: "Dockerfile", args: {}, platforms: ["linux/amd64"], ...opts });

  test("the matrix's args override ARG defaults; only global ARGs reach FROM", () => {
    const { images, problems } = at(BASE_DOCKERFILE, { target: "base", args: { CUDA_VERSION: "12.8.1", TORCH_VER: "x" } });
    assert.deepEqual(problems, []);
    assert.deepEqual(images.map((i) => [i.ref, i.platforms, i.at.line]), [
      ["nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04", ["linux/amd64"], 2],
      ["nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04", ["linux/amd64"], 5],
    ]);
    assert.deepEqual(at(BASE_DOCKERFILE, { target: "base" }).images.map((i) => i.ref), [DEVEL, RUNTIME], "ARG defaults without args");
    const stageArg = at("FROM img:${TAG}\nARG TAG=1\n", { args: { TAG: "2" } });
    assert.equal(stageArg.images[0]?.ref, undefined, "a stage ARG does not reach its FROM: 'img:' is no reference");
    assert.match(stageArg.problems[0].message, /'img:\$\{TAG\}' gives 'img:' for linux\/amd64, which is not an image reference/);
  });

  test("per platform: TARGETARCH substitutes per platform, --platform=$BUILDPLATFORM is the runners' linux/amd64", () => {
    const df = "FROM --platform=$BUILDPLATFORM golang:1.22 AS tools\nFROM base/os:${TARGETARCH} AS out\nCOPY --from=tools /x /x\n";
    const { images } = at(df, { platforms: ["linux/amd64", "linux/arm64"] });
    assert.deepEqual(images.map((i) => [i.ref, i.platforms]), [
      ["base/os:amd64", ["linux/amd64"]],
      ["base/os:arm64", ["linux/arm64"]],
      ["golang:1.22", ["linux/amd64"]],
    ]);
  });

  test("stage names, scratch, digest-pinned references, a runtime's BASE_IMAGE and stages the target does not run are left out; COPY --from an image counts", () => {
    const df = [
      "ARG BASE_IMAGE",
      "FROM alpine:3@" + D("a") + " AS pinned",
      "FROM python:3.12 AS wheels",
      "FROM unused/image:1 AS unused",
      "FROM ${BASE_IMAGE} AS runtime",
      "COPY --from=wheels /w /w",
      "COPY --from=pinned /p /p",
      "COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /bin/uv",
      "RUN --mount=type=bind,from=busybox:1.36,target=/bb true",
      "FROM scratch AS final",
      "COPY --from=runtime / /",
    ].join("\n");
    const { images, problems } = at(df, { target: "final", trusted: ["BASE_IMAGE"] });
    assert.deepEqual(problems, []);
    assert.deepEqual(images.map((i) => i.ref), ["busybox:1.36", "ghcr.io/astral-sh/uv:0.5", "python:3.12"]);
    assert.deepEqual(images.find((i) => i.ref === "ghcr.io/astral-sh/uv:0.5")?.at.line, 8);
  });

  test("the # syntax= frontend is an upstream image of the builder's platform, pinned through BUILDKIT_SYNTAX, not a named context", () => {
    const df = "# syntax=docker/dockerfile:1\nFROM python:3.12\n";
    const { images, pinned, problems } = at(df, { platforms: ["linux/arm64"] });
    assert.deepEqual(problems, []);
    assert.deepEqual(pinned, []);
    assert.deepEqual(images.map((i) => [i.ref, i.platforms, i.frontend ?? false, i.at.line]), [
      ["docker/dockerfile:1", ["linux/amd64"], true, 1],
      ["python:3.12", ["linux/arm64"], false, 2],
    ]);
    const locked = images.map((i) => ({ ...i, digest: D(i.frontend ? "f" : "b") }));
    assert.deepEqual(frontendBuildArgs(locked), { BUILDKIT_SYNTAX: `docker.io/docker/dockerfile:1@${D("f")}` });
    assert.deepEqual(Object.keys(namedContexts(locked)), ["python:3.12"]);
    assert.deepEqual(frontendBuildArgs(images), {}, "an unlocked frontend stays as the Dockerfile names it");
    // A frontend the Dockerfile pins itself needs no lock; a directive that names no image is a problem at line 1.
    assert.deepEqual(at(`# syntax=docker/dockerfile:1@${D("c")}\nFROM scratch\n`).pinned, [`docker/dockerfile:1@${D("c")}`]);
    assert.deepEqual(at("# syntax=Not An Image\nFROM scratch\n").problems.map((p) => p.line), [1]);
  });
});

describe("the lock file", () => {
  const required = new Map([
    [DEVEL, ["linux/amd64", "linux/arm64"]],
    [RUNTIME, ["linux/amd64"]],
  ]);

  test("stale when the matrix needs a ref or platform it lacks, or it holds ones no longer needed", () => {
    const current = lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2"), "linux/arm64": D("3") }], [RUNTIME]: [D("4"), { "linux/amd64": D("4") }] });
    assert.deepEqual(lockStatus(current, required), { missing: [], extra: [] });
    assert.deepEqual(lockStatus(undefined, required), { missing: [DEVEL, RUNTIME], extra: [] });
    const stale = lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("4"), { "linux/amd64": D("4"), "linux/ppc64le": D("5") }], "old/image:1": [D("6"), { "linux/amd64": D("6") }] });
    assert.deepEqual(lockStatus(stale, required), { missing: [`${DEVEL} (linux/arm64)`], extra: [`${RUNTIME} (linux/ppc64le)`, "old/image:1"] });
  });

  test("is written in one deterministic order", () => {
    const a = lockOf({ "z/z:1": [D("1"), { "linux/arm64": D("2"), "linux/amd64": D("3") }], "a/a:1": [D("4"), { "linux/amd64": D("4") }] });
    const text = formatLock(a);
    assert.deepEqual(Object.keys(JSON.parse(text).images), ["a/a:1", "z/z:1"]);
    assert.deepEqual(Object.keys(JSON.parse(text).images["z/z:1"].platforms), ["linux/amd64", "linux/arm64"]);
    assert.equal(formatLock(JSON.parse(text)), text);
    assert.ok(text.endsWith("}\n"));
    assert.equal(lockFileFor("deploy/gpu.yml"), join("deploy", "gpu.lock.json"));
    assert.equal(lockFileFor("strata.yaml"), "strata.lock.json");
  });

  test("a bad lock file is an error at file:line:col (or the field) saying to re-run strata lock", () => {
    const dir = projectWith();
    const file = join(dir, "strata.lock.json");
    writeFileSync(file, `{\n  "version": 1,\n  "images": {\n    "${DEVEL}": {\n      "digest": "sha256:abc",\n      "platforms": { "linux/amd64": "${D("1")}" }\n    }\n  }\n}\n`);
    let [p] = problemsOf(() => readLock(file));
    assert.deepEqual([p.line, p.col], [5, 17]);
    assert.match(p.message, /lock file: 'digest' must be a sha256 digest/);
    assert.match(p.fix, /strata lock/);
    writeFileSync(file, `{ "version": 1, "images": { "Nvidia/Cuda": { "digest": "${D("1")}", "platforms": { "linux/amd64": "${D("1")}" } } }, "extra": 1 }`);
    const ps = problemsOf(() => readLock(file));
    assert.ok(ps.some((q) => /unknown key 'extra'/.test(q.message)), JSON.stringify(ps));
    assert.ok(ps.some((q) => /not an image reference in its short form/.test(q.message)), JSON.stringify(ps));
    writeFileSync(file, "{ not json");
    [p] = problemsOf(() => readLock(file));
    assert.equal(p.line, 1);
    writeFileSync(file, " ".repeat((4 << 20) + 1));
    [p] = problemsOf(() => readLock(file));
    assert.match(p.message, /larger than strata reads/);
  });

  test("loaded with the matrix: builds and the identity use the locked digests of the platforms built", () => {
    const dir = projectWith();
    const matrix = join(dir, "strata.yaml");
    const unlocked = loadMatrix(matrix);
    assert.deepEqual(unlocked.lock && { exists: unlocked.lock.exists, missing: unlocked.lock.missing }, { exists: false, missing: [DEVEL, RUNTIME] });
    const write = (lock: LockFile) => writeFileSync(join(dir, "strata.lock.json"), formatLock(lock));
    write(lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] }));
    const locked = loadMatrix(matrix);
    assert.deepEqual(locked.lock && [locked.lock.exists, locked.lock.missing, locked.lock.extra], [true, [], []]);
    const base = locked.bases[0];
    assert.notEqual(base.tag, unlocked.bases[0].tag, "locking changes the identity");
    assert.deepEqual(base.inputs.upstream, { [DEVEL]: { digest: D("1"), platforms: { "linux/amd64": D("2") } }, [RUNTIME]: { digest: D("3"), platforms: { "linux/amd64": D("4") } } });
    const bake = bakeFile(locked, { basesRepository: "r/b", runtimesRepository: "r/r", cacheRepository: "r/c", release: { version: "v", branch: "main", sha: "0000000" } });
    assert.deepEqual(bake.target["base-ampere"].contexts, { [DEVEL]: `docker-image://docker.io/nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04@${D("1")}`, [RUNTIME]: `docker-image://docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04@${D("3")}` });
    assert.equal(bake.target["runtime-app"].contexts, undefined, "a runtime's BASE_IMAGE is pinned by strata, not by the lock");
    // A re-published tag whose amd64 image is unchanged (only the index moved) builds the same content.
    write(lockOf({ [DEVEL]: [D("9"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] }));
    assert.equal(loadMatrix(matrix).bases[0].tag, base.tag);
    write(lockOf({ [DEVEL]: [D("9"), { "linux/amd64": D("8") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] }));
    assert.notEqual(loadMatrix(matrix).bases[0].tag, base.tag);
    // A lock lacking one image: that one is built by tag, the other stays pinned.
    write(lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }] }));
    const partial = loadMatrix(matrix);
    assert.deepEqual(partial.lock?.missing, [RUNTIME]);
    assert.deepEqual(Object.keys(partial.bases[0].inputs.upstream ?? {}), [DEVEL]);
  });
});

describe("strata lock --check", () => {
  const lockText = formatLock(lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] }));

  test("exit 1 without a lock, naming the file, the refs and the fix; check warns in one line", () => {
    const dir = projectWith();
    const r = strata(["lock", "--check"], dir);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `strata lock --check: there is no lock file strata.lock.json for strata.yaml; its 2 upstream image(s) would be built by tag:\n  not locked: ${DEVEL}\n  not locked: ${RUNTIME}\n  fix: run \`strata lock\` and commit strata.lock.json\n`);
    const c = strata(["check"], dir);
    assert.equal(c.code, 0);
    assert.equal(c.stderr, "strata: warning: no lock file strata.lock.json: 2 upstream image(s) are built by tag; run `strata lock` and commit strata.lock.json\n");
    const p = strata(["plan"], dir);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stderr.match(/no lock file strata\.lock\.json: 2 upstream image\(s\) are built by tag; run `strata lock` and commit strata\.lock\.json/g)?.length, 1, p.stderr);
  });

  test("exit 0 when current; exit 1 when stale, naming what is missing and what is no longer used", () => {
    const dir = projectWith({ "strata.lock.json": lockText });
    const ok = strata(["lock", "--check"], dir);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /strata\.lock\.json is current \(2 upstream image\(s\)\)/);
    assert.equal(strata(["check"], dir).stderr, "");
    writeFileSync(join(dir, "strata.yaml"), SIMPLE_MATRIX.replace('cuda: "12.6.3"', 'cuda: "12.8.1"'));
    const stale = strata(["lock", "--check"], dir);
    assert.equal(stale.code, 1);
    assert.match(stale.stderr, /strata\.lock\.json is stale for strata\.yaml:\n  not locked: nvidia\/cuda:12\.8\.1-cudnn-devel-ubuntu22\.04\n  not locked: nvidia\/cuda:12\.8\.1-cudnn-runtime-ubuntu22\.04\n  no longer used: nvidia\/cuda:12\.6\.3-cudnn-devel-ubuntu22\.04\n/);
    assert.match(stale.stderr, /fix: run `strata lock` and commit strata\.lock\.json\n$/);
    assert.match(strata(["check"], dir).stderr, /^strata: warning: strata\.lock\.json is stale \(not locked: .*; no longer used: .*\); run `strata lock` and commit strata\.lock\.json$/m);
  });

  test("a bad lock file exits 1 at file:line:col; a FROM without a reference exits 1 at its Dockerfile line; no stack traces", () => {
    const dir = projectWith({ "strata.lock.json": lockText.replace(`"${D("2")}"`, "12") });
    const r = strata(["lock", "--check"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^strata\.lock\.json:7:24: error: lock file: 'linux\/amd64' must be a string, not number 12/m);
    noStackTrace(r.stderr);
    const bad = projectWith({ "docker/Dockerfile.base": BASE_DOCKERFILE.replace("ARG CUDA_VERSION=12.6.3\n", "ARG CUDA_VERSION\n").replace("${CUDA_VERSION}-cudnn-devel", "${CUDA_VERSION}:devel") }, SIMPLE_MATRIX.replace('    cuda: "12.6.3"\n', ""));
    const f = strata(["lock"], bad);
    assert.equal(f.code, 1);
    assert.match(f.stderr, /^docker\/Dockerfile\.base:2:1: error: 'nvidia\/cuda:\$\{CUDA_VERSION\}:devel-ubuntu22\.04' gives 'nvidia\/cuda::devel-ubuntu22\.04' for linux\/amd64, which is not an image reference/m);
    noStackTrace(f.stderr);
  });

  test("a matrix without upstream images needs no lock: check and write both say so and exit 0", () => {
    const dir = projectWith({ "docker/Dockerfile.base": "FROM scratch AS base\nCOPY requirements.txt /\n" });
    const c = strata(["lock", "--check"], dir);
    assert.deepEqual([c.code, c.stdout], [0, "strata lock --check: strata.yaml uses no upstream image to lock\n"]);
    const w = strata(["lock"], dir);
    assert.deepEqual([w.code, w.stdout], [0, "strata lock: strata.yaml uses no upstream image to lock; nothing was written\n"]);
    assert.equal(strata(["check"], dir).stderr, "");
  });

  test("an unreachable registry: the error names the image and the registry, nothing is written", async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const df = `FROM 127.0.0.1:${port}/upstream/cuda:12 AS base\n`;
    const dir = projectWith({ "docker/Dockerfile.base": df });
    const r = strata(["lock"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^strata lock: 127\\.0\\.0\\.1:${port}/upstream/cuda:12: registry 127\\.0\\.0\\.1:${port}: GET \/v2\/upstream\/cuda\/manifests\/12: fetch failed \\(ECONNREFUSED\\)`, "m"));
    assert.match(r.stderr, /strata\.lock\.json was not written/);
    noStackTrace(r.stderr);
  });
});

/** A loopback registry that demands an anonymous Bearer token, serving one index (fault injection: sizes). */
async function tokenRegistry(): Promise<{ host: string; requests: string[]; index: Record<string, unknown>; close: () => Promise<void> }> {
  const requests: string[] = [];
  const amd = D("a");
  const arm = D("b");
  const index = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: amd, size: 1, platform: { os: "linux", architecture: "amd64" } },
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: arm, size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: D("c"), size: 1, platform: { os: "unknown", architecture: "unknown" }, annotations: { "vnd.docker.reference.type": "attestation-manifest" } },
    ],
  };
  const body = Buffer.from(JSON.stringify(index));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push(`${req.method} ${req.url} ${req.headers.authorization ?? "-"}`);
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (req.url?.startsWith("/token")) {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: "anon" }));
      return;
    }
    if (req.headers.authorization !== "Bearer anon") {
      res.writeHead(401, { "www-authenticate": `Bearer realm="http://${host}/token",service="test",scope="repository:upstream/cuda:pull"` }).end();
      return;
    }
    if (req.url === "/v2/upstream/cuda/manifests/12") {
      const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
      res.writeHead(200, { "content-type": index.mediaType, "docker-content-digest": digest, "content-length": String(body.length) }).end(req.method === "HEAD" ? undefined : body);
      return;
    }
    if (req.url === "/v2/upstream/cuda/manifests/huge") {
      res.writeHead(200, { "content-type": index.mediaType });
      res.end(Buffer.alloc((4 << 20) + 10, 32));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, requests, index, close: () => new Promise((r) => server.close(() => r())) };
}


describe("registry credentials from the docker config", () => {
  test("an auths entry, else the credential helper it names (credHelpers, then credsStore); a failing helper or an identity token gives none", () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-creds-"));
    dirs.push(dir);
    const bin = join(dir, "bin");
    mkdirSync(bin);
    // A stand-in for a real store (osxkeychain, desktop, ecr-login): the docker credential-helper protocol.
    writeFileSync(
      join(bin, "docker-credential-fake"),
      '#!/bin/sh\n[ "$1" = get ] || exit 2\nread -r url\necho "$url" >> "$HELPER_LOG"\ncase "$url" in\n  ghcr.io) echo \'{"ServerURL":"ghcr.io","Username":"octo","Secret":"s3cret"}\' ;;\n  token.example) echo \'{"Username":"<token>","Secret":"refresh"}\' ;;\n  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n',
      { mode: 0o755 },
    );
    const config = (c: object) => writeFileSync(join(dir, "config.json"), JSON.stringify(c));
    const env = { PATH: `${bin}:/usr/bin:/bin`, DOCKER_CONFIG: dir, HELPER_LOG: join(dir, "helper.log") };
    config({ auths: { "ghcr.io": {}, "quay.io": { auth: Buffer.from("q:pw").toString("base64") } }, credsStore: "fake" });
    assert.deepEqual(credentialsFor("quay.io", env), { username: "q", password: "pw" });
    assert.deepEqual(credentialsFor("ghcr.io", env), { username: "octo", password: "s3cret" });
    assert.equal(credentialsFor("nvcr.io", env), undefined, "the helper knows no such server");
    assert.equal(credentialsFor("token.example", env), undefined, "an identity token is no Basic credential");
    assert.match(readFileSync(env.HELPER_LOG, "utf8"), /^ghcr\.io$/m);
    config({ credHelpers: { "ghcr.io": "fake" }, credsStore: "missing-helper" });
    assert.deepEqual(credentialsFor("ghcr.io", env), { username: "octo", password: "s3cret" });
    assert.equal(credentialsFor("quay.io", env), undefined, "a helper that is not installed gives none, not an error");
    config({ credsStore: "../../bin/sh" });
    assert.equal(credentialsFor("ghcr.io", env), undefined, "a helper name that is not a plain name is never run");
  });
});

describe("resolving a tag through the distribution API", () => {
  test("anonymous Bearer token from the challenge; the index digest and each platform's; HEAD only when unchanged; bounded reads", async () => {
    const reg = await tokenRegistry();
    try {
      const client = new RegistryClient(reg.host, undefined);
      const got = await resolveTag(client, "upstream/cuda", "12", ["linux/amd64", "linux/arm64"]);
      assert.match(got.digest, /^sha256:[0-9a-f]{64}$/);
      assert.deepEqual(got.platforms, { "linux/amd64": D("a"), "linux/arm64": D("b") });
      assert.ok(reg.requests.some((r) => r.startsWith("GET /token?") && r.includes("scope=repository%3Aupstream%2Fcuda%3Apull")), reg.requests.join("\n"));
      assert.ok(reg.requests.includes("GET /v2/upstream/cuda/manifests/12 Bearer anon"));
      reg.requests.length = 0;
      assert.deepEqual(await resolveTag(client, "upstream/cuda", "12", ["linux/amd64"], got), { digest: got.digest, platforms: { "linux/amd64": D("a") } });
      assert.deepEqual(reg.requests, ["HEAD /v2/upstream/cuda/manifests/12 Bearer anon"], "an unchanged tag costs one HEAD");
      await assert.rejects(resolveTag(client, "upstream/cuda", "12", ["linux/ppc64le"]), (e: Error) => e instanceof RegistryError && /upstream\/cuda:12 has no linux\/ppc64le image \(it has linux\/amd64, linux\/arm64\/v8\)/.test(e.message));
      await assert.rejects(resolveTag(client, "upstream/cuda", "huge", ["linux/amd64"]), (e: Error) => e instanceof RegistryError && /larger than strata reads/.test(e.message));
      await assert.rejects(resolveTag(client, "upstream/cuda", "13", ["linux/amd64"]), (e: Error) => e instanceof RegistryError && /upstream\/cuda:13 does not exist/.test(e.message));
    } finally {
      await reg.close();
    }
  });
});

describe("strata impact names an upstream re-publish", () => {
  const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com", GIT_CONFIG_NOSYSTEM: "1", HOME: tmpdir() };
  const git = (dir: string, ...args: string[]) => {
    const r = spawnSync("git", args, { cwd: dir, env: GIT_ENV, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  };

  test("comparing the lock file at the two revisions, with short digests in words and full ones in old/new", () => {
    const old = lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] });
    const dir = projectWith({ "strata.lock.json": formatLock(old) });
    git(dir, "-c", "init.defaultBranch=main", "init", "-q");
    git(dir, "add", "-A");
    git(dir, "commit", "-qm", "locked");
    writeFileSync(join(dir, "strata.lock.json"), formatLock(lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("5"), { "linux/amd64": D("6") }] })));
    const { report } = computeImpact({ cwd: dir, base: "HEAD", matrix: "strata.yaml" });
    assert.deepEqual(report.rebuild, { bases: ["ampere"], runtimes: ["app"] });
    assert.deepEqual(report.bases[0].reasons, [{ kind: "upstream", image: RUNTIME, old: D("3"), new: D("5"), detail: `${RUNTIME}: sha256:333333333333 → sha256:555555555555` }]);
    const text = strata(["impact", "--base", "HEAD"], dir);
    assert.equal(text.code, 0, text.stderr);
    assert.ok(text.stdout.includes(`- [upstream] ${RUNTIME}: sha256:333333333333 → sha256:555555555555`), text.stdout);
    assert.equal(readFileSync(join(dir, "strata.lock.json"), "utf8").includes(D("5")), true);
  });
});

describe("generated workflows", () => {
  test("the PR check fails on a missing or stale lock; the weekly refresh runs strata lock and opens a PR with contents and pull-requests write only", async () => {
    const { parse } = await import("yaml");
    const { ACTIONS, generateWorkflows, LOCK_REFRESH_SCHEDULE, WORKFLOW_FILES } = await import("../workflows/generate.ts");
    const dir = projectWith();
    const files = generateWorkflows(loadMatrix(join(dir, "strata.yaml")), { stack: "prod", matrix: "deploy/gpu.yaml" });
    type Step = { name: string; run?: string; uses?: string; env?: Record<string, string> };
    const pr = parse(files[WORKFLOW_FILES.prCheck]) as { jobs: { check: { steps: Step[] } } };
    const names = pr.jobs.check.steps.map((s) => s.name);
    assert.ok(names.indexOf("Upstream lock is current") > names.indexOf("strata check"));
    assert.equal(pr.jobs.check.steps.find((s) => s.name === "Upstream lock is current")?.run, 'npx strata lock --check --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX"\n');
    const wf = parse(files[WORKFLOW_FILES.lockRefresh]) as { on: Record<string, unknown>; permissions: object; env: Record<string, string>; jobs: Record<string, { permissions: object; steps: Step[] }> };
    assert.deepEqual(wf.on, { schedule: [{ cron: LOCK_REFRESH_SCHEDULE }], workflow_dispatch: {} });
    assert.deepEqual(wf.permissions, {});
    assert.deepEqual(Object.keys(wf.jobs), ["refresh"]);
    assert.deepEqual(wf.jobs.refresh.permissions, { contents: "write", "pull-requests": "write" });
    assert.equal(wf.env.STRATA_LOCK, "deploy/gpu.lock.json");
    const steps = wf.jobs.refresh.steps;
    assert.deepEqual(steps.flatMap((s) => (s.uses ? [s.uses] : [])), [ACTIONS.checkout, ACTIONS.setupNode], "no other action than checkout and setup-node");
    assert.match(steps.find((s) => s.name === "strata lock")!.run!, /npx strata lock --stack "\$STRATA_STACK" --matrix "\$STRATA_MATRIX"/);
    const open = steps.find((s) => s.name === "Open or update the pull request")!;
    assert.equal(open.env?.GH_TOKEN, "${{ secrets.STRATA_LOCK_PR_TOKEN || github.token }}");
    assert.match(open.run!, /git diff --quiet -- "\$STRATA_LOCK"/);
    assert.match(open.run!, /git push --force origin "HEAD:refs\/heads\/\$BRANCH"/);
    assert.match(open.run!, /gh pr edit "\$pr" --body-file body\.md/);
    assert.match(open.run!, /gh pr create --head "\$BRANCH" --base "\$BASE"/);
    assert.match(open.run!, /set the secret STRATA_LOCK_PR_TOKEN/);
  });
});

describe("the Pulumi program", () => {
  test("the docker-build Image of a base gets a named context per locked upstream image; a runtime none for its base", async () => {
    const { runProgram } = await import("../cli/program.ts");
    const dir = projectWith({ "strata.lock.json": formatLock(lockOf({ [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] })) });
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const run = await runProgram({ stack: "dev", config: { "strata:matrix": "strata.yaml", "strata:registry": { kind: "local", address: "localhost:5000" }, "strata:release": { version: "v1" } } });
      const image = (name: string) => run.resources.find((r) => r.type === "docker-build:index:Image" && r.name === name)!.inputs as { context: { location: string; named?: Record<string, { location: string }> } };
      assert.deepEqual(image("base-ampere").context, {
        location: "app",
        named: {
          [DEVEL]: { location: `docker-image://docker.io/nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04@${D("1")}` },
          [RUNTIME]: { location: `docker-image://docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04@${D("3")}` },
        },
      });
      assert.deepEqual(image("runtime-app").context, { location: "app" });
    } finally {
      process.chdir(cwd);
    }
  });

  test("a locked # syntax= frontend reaches the docker-build Image as BUILDKIT_SYNTAX=<ref>@<digest>", async () => {
    const { runProgram } = await import("../cli/program.ts");
    const FRONTEND = "docker/dockerfile:1";
    const dir = projectWith({
      "docker/Dockerfile.base": `# syntax=${FRONTEND}\n${BASE_DOCKERFILE}`,
      "strata.lock.json": formatLock(lockOf({ [FRONTEND]: [D("5"), { "linux/amd64": D("6") }], [DEVEL]: [D("1"), { "linux/amd64": D("2") }], [RUNTIME]: [D("3"), { "linux/amd64": D("4") }] })),
    });
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const run = await runProgram({ stack: "dev", config: { "strata:matrix": "strata.yaml", "strata:registry": { kind: "local", address: "localhost:5000" }, "strata:release": { version: "v1" } } });
      const image = (name: string) => run.resources.find((r) => r.type === "docker-build:index:Image" && r.name === name)!.inputs as { buildArgs: Record<string, string>; context: { named?: Record<string, unknown> } };
      assert.equal(image("base-ampere").buildArgs.BUILDKIT_SYNTAX, `docker.io/docker/dockerfile:1@${D("5")}`);
      assert.deepEqual(Object.keys(image("base-ampere").context.named ?? {}).sort(), [DEVEL, RUNTIME]);
      assert.equal(image("runtime-app").buildArgs.BUILDKIT_SYNTAX, undefined, "the runtime's Dockerfile has no # syntax= line");
    } finally {
      process.chdir(cwd);
    }
  });
});
