import { createHash } from "node:crypto";
import { posix } from "node:path";

/**
 * The documents `strata attest` attaches to a pushed image, built from plain data (pure, no I/O): the image's final
 * filesystem as far as package databases go (layers applied in order, whiteouts honoured), an SPDX 2.3 SBOM of its
 * OS and Python packages, a SLSA v1 provenance of its build, each wrapped in an in-toto Statement v1 and carried
 * by an OCI 1.1 artifact manifest whose `subject` is the image.
 */

// ---------------------------------------------------------------------------------------------------------------
// Package databases in a layer

/** Limits on what a scan buffers; an image beyond them is refused or the file skipped, with a note. */
export const SCAN_LIMITS = {
  /** Largest package database file read (dpkg status on a CUDA devel image is a few MiB). */
  databaseBytes: 64 << 20,
  /** Bytes of a Python METADATA/PKG-INFO kept: the headers come first, the long description is not needed. */
  metadataBytes: 64 << 10,
  /** Python metadata files per image. */
  metadataFiles: 100_000,
  /** Everything buffered across an image's layers. */
  totalBytes: 512 << 20,
};

export type FileKind = "dpkg" | "dpkg-status.d" | "apk" | "os-release" | "python";

/** Which package-database file `path` (normalised, no leading `/`) is, if any. */
export function fileKind(path: string): FileKind | undefined {
  if (path === "var/lib/dpkg/status") return "dpkg";
  if (/^var\/lib\/dpkg\/status\.d\/[^/]+$/.test(path) && !path.endsWith(".md5sums")) return "dpkg-status.d";
  if (path === "lib/apk/db/installed") return "apk";
  if (path === "etc/os-release" || path === "usr/lib/os-release") return "os-release";
  if (/(^|\/)(site|dist)-packages\/[^/]+\.dist-info\/METADATA$/.test(path)) return "python";
  if (/(^|\/)(site|dist)-packages\/[^/]+\.egg-info\/PKG-INFO$/.test(path)) return "python";
  if (/(^|\/)(site|dist)-packages\/[^/]+\.egg-info$/.test(path)) return "python";
  return undefined;
}

/**
 * A tar entry name as a path in the image: no leading `./` or `/`, no `.` segments, `..` resolved; "" for the root
 * itself. Null when it leaves the root (a hostile layer).
 */
export function normalisePath(name: string): string | null {
  if (name.includes("\0")) return null;
  const parts: string[] = [];
  for (const seg of name.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (parts.length === 0) return null;
      parts.pop();
    } else parts.push(seg);
  }
  return parts.join("/");
}

/** What one layer contributes: package-database files it adds, and what it deletes from the layers below. */
export interface LayerChanges {
  files: Map<string, Buffer>;
  /** Paths removed from lower layers with everything under them (whiteout `.wh.<name>`, or a symlink or file over them). */
  removed: string[];
  /** Paths whose lower-layer file a directory replaces (what was under it stays: directories merge). */
  replaced: string[];
  /** Directories whose lower-layer content is hidden (`.wh..wh..opq`). */
  opaque: string[];
  /** What was skipped and why (oversized files, hostile names). */
  notes: string[];
}

export function emptyChanges(): LayerChanges {
  return { files: new Map(), removed: [], replaced: [], opaque: [], notes: [] };
}

/** Tar entry types as node-tar names them. */
export type EntryType = "File" | "OldFile" | "ContiguousFile" | "Link" | "SymbolicLink" | "Directory" | string;

/**
 * Classifies one tar entry of a layer: whether its content is wanted (`read` with the byte limit) or it only
 * changes what lower layers show. Call `addFile` with the content when `read` was returned.
 */
export function classifyEntry(changes: LayerChanges, rawName: string, type: EntryType, linkTarget?: string): { read: number; path: string; kind: FileKind } | null {
  const path = normalisePath(rawName);
  if (path === null) {
    if (changes.notes.length < 20) changes.notes.push(`ignored a tar entry outside the image root: ${JSON.stringify(rawName.slice(0, 200))}`);
    return null;
  }
  if (path === "") return null;
  const base = posix.basename(path);
  const dir = posix.dirname(path) === "." ? "" : posix.dirname(path);
  if (base === ".wh..wh..opq") {
    changes.opaque.push(dir);
    return null;
  }
  if (base.startsWith(".wh.")) {
    const target = normalisePath(posix.join(dir, base.slice(4)));
    if (target !== null) changes.removed.push(target);
    return null;
  }
  const kind = fileKind(path);
  const regular = type === "File" || type === "OldFile" || type === "ContiguousFile";
  if (regular && kind) return { read: kind === "python" ? SCAN_LIMITS.metadataBytes : SCAN_LIMITS.databaseBytes, path, kind };
  if (type === "Link" && kind && linkTarget !== undefined) {
    // A hard link to a file of the same layer: the content is known already.
    const target = normalisePath(linkTarget);
    const content = target !== null ? changes.files.get(target) : undefined;
    if (content) changes.files.set(path, content);
    return null;
  }
  // Any other entry at a tracked path hides what lower layers had there: a directory only the file at that path,
  // a symlink (or an oversized, unread file) the path and everything under it.
  if (type === "Directory") {
    if (kind) changes.replaced.push(path);
  } else if (kind || /\.(dist|egg)-info$/.test(base)) changes.removed.push(path);
  return null;
}

/** The package-database files of the final filesystem: `layers` applied bottom to top. */
export function applyLayers(layers: Iterable<LayerChanges>): Map<string, Buffer> {
  const fs = new Map<string, Buffer>();
  const drop = (prefix: string, exact: boolean) => {
    for (const p of [...fs.keys()]) if ((exact && p === prefix) || p.startsWith(prefix === "" ? "" : `${prefix}/`)) fs.delete(p);
  };
  for (const layer of layers) {
    for (const dir of layer.opaque) drop(dir, false);
    for (const p of layer.removed) drop(p, true);
    for (const p of layer.replaced) fs.delete(p);
    for (const [p, content] of layer.files) fs.set(p, content);
  }
  return fs;
}

// ---------------------------------------------------------------------------------------------------------------
// Package database parsers

export interface Package {
  type: "deb" | "apk" | "pypi";
  name: string;
  version: string;
  arch?: string;
  /** Where it was found in the image (database file). */
  location: string;
  purl: string;
}

/** RFC 822-style stanzas (dpkg status, Python metadata): fields with continuation lines, separated by blank lines. */
function stanzas(text: string, stopAtFirst = false): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  let cur: Record<string, string> = {};
  let last: string | undefined;
  const flush = () => {
    if (Object.keys(cur).length) out.push(cur);
    cur = {};
    last = undefined;
  };
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") {
      flush();
      if (stopAtFirst && out.length) break;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (last) cur[last] += `\n${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    if (!(last in cur)) cur[last] = line.slice(colon + 1).trim();
    else last = undefined;
  }
  flush();
  return out;
}

/** A Debian package name or version as dpkg allows it (anything else in a database is not reported). */
const DEB_NAME = /^[a-z0-9][a-z0-9+.-]{0,199}$/;
const DEB_VERSION = /^[0-9A-Za-z.+~:-]{1,200}$/;
const APK_TOKEN = /^[A-Za-z0-9._+~-]{1,200}$/;
const PY_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,198}[A-Za-z0-9])?$/;
const PY_VERSION = /^[A-Za-z0-9.+!_-]{1,100}$/;

export interface Distro {
  id: string;
  versionId?: string;
}

/** `ID` and `VERSION_ID` of an os-release file. */
export function parseOsRelease(text: string): Distro | undefined {
  const values: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Z_]+)=("?)([^"]*)\2\s*$/.exec(line.trim());
    if (m) values[m[1]] = m[3];
  }
  const id = values.ID?.toLowerCase();
  if (!id || !/^[a-z0-9._-]{1,50}$/.test(id)) return undefined;
  const versionId = values.VERSION_ID && /^[A-Za-z0-9._-]{1,50}$/.test(values.VERSION_ID) ? values.VERSION_ID : undefined;
  return { id, versionId };
}

const q = (s: string) => encodeURIComponent(s);

/** Installed packages of a dpkg status file (or one `status.d/` file, which has no Status field). */
export function parseDpkgStatus(text: string, location: string, distro?: Distro): Package[] {
  const out: Package[] = [];
  for (const s of stanzas(text)) {
    if (s.status !== undefined && s.status.split(/\s+/)[2] !== "installed") continue;
    const name = s.package;
    const version = s.version;
    if (!name || !version || !DEB_NAME.test(name) || !DEB_VERSION.test(version)) continue;
    const arch = s.architecture && /^[a-z0-9-]{1,30}$/.test(s.architecture) ? s.architecture : undefined;
    const namespace = distro?.id ?? "debian";
    const qualifiers = [arch ? `arch=${q(arch)}` : "", distro?.versionId ? `distro=${q(`${namespace}-${distro.versionId}`)}` : ""].filter(Boolean).join("&");
    out.push({ type: "deb", name, version, arch, location, purl: `pkg:deb/${q(namespace)}/${q(name)}@${q(version)}${qualifiers ? `?${qualifiers}` : ""}` });
  }
  return out;
}

/** Installed packages of an apk database (`/lib/apk/db/installed`). */
export function parseApkInstalled(text: string, location: string, distro?: Distro): Package[] {
  const out: Package[] = [];
  for (const block of text.split(/\r?\n\s*\r?\n/)) {
    const fields: Record<string, string> = {};
    for (const line of block.split(/\r?\n/)) if (/^[A-Za-z]:/.test(line) && !(line[0] in fields)) fields[line[0]] = line.slice(2).trim();
    const { P: name, V: version, A: arch } = fields;
    if (!name || !version || !APK_TOKEN.test(name) || !APK_TOKEN.test(version)) continue;
    const namespace = distro?.id ?? "alpine";
    const qualifiers = [arch && APK_TOKEN.test(arch) ? `arch=${q(arch)}` : "", distro?.versionId ? `distro=${q(distro.versionId)}` : ""].filter(Boolean).join("&");
    out.push({ type: "apk", name, version, arch: arch && APK_TOKEN.test(arch) ? arch : undefined, location, purl: `pkg:apk/${q(namespace)}/${q(name)}@${q(version)}${qualifiers ? `?${qualifiers}` : ""}` });
  }
  return out;
}

/** PEP 503 normalised name, as purls of type pypi take it. */
export function normalisePythonName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

/** The distribution a METADATA / PKG-INFO file describes (its first header block), or null. */
export function parsePythonMetadata(text: string, location: string): Package | null {
  const head = stanzas(text, true)[0] ?? {};
  const name = head.name;
  const version = head.version;
  if (!name || !version || !PY_NAME.test(name) || !PY_VERSION.test(version)) return null;
  return { type: "pypi", name, version, location, purl: `pkg:pypi/${q(normalisePythonName(name))}@${q(version)}` };
}

/** Every package the final filesystem's databases list, sorted by purl, de-duplicated. */
export function packagesOf(fs: Map<string, Buffer>): { packages: Package[]; distro?: Distro } {
  const text = (p: string) => fs.get(p)?.toString("utf8");
  const distro = parseOsRelease(text("etc/os-release") ?? text("usr/lib/os-release") ?? "");
  const found: Package[] = [];
  for (const [path, content] of [...fs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const kind = fileKind(path);
    const body = content.toString("utf8");
    if (kind === "dpkg" || kind === "dpkg-status.d") found.push(...parseDpkgStatus(body, `/${path}`, distro));
    else if (kind === "apk") found.push(...parseApkInstalled(body, `/${path}`, distro));
    else if (kind === "python") {
      const p = parsePythonMetadata(body, `/${path}`);
      if (p) found.push(p);
    }
  }
  const byPurl = new Map<string, Package>();
  for (const p of found) if (!byPurl.has(p.purl)) byPurl.set(p.purl, p);
  return { packages: [...byPurl.values()].sort((a, b) => (a.purl < b.purl ? -1 : a.purl > b.purl ? 1 : 0)), distro };
}

// ---------------------------------------------------------------------------------------------------------------
// Documents

/** The image an attestation is about. */
export interface Subject {
  /** `host/repository`, without tag or digest. */
  name: string;
  /** `sha256:<hex>` of the manifest. */
  digest: string;
  mediaType: string;
  size: number;
  /** `os/arch[/variant]`, when known. */
  platform?: string;
}

const TOOL = "strata-attest";

/** An SPDX 2.3 document: the image as the described package, CONTAINS each OS and Python package. */
export function spdxDocument(subject: Subject, packages: readonly Package[], created: Date, distro?: Distro): Record<string, unknown> {
  const hex = subject.digest.replace(/^sha256:/, "");
  const id = (p: Package, i: number) => `SPDXRef-Package-${p.type}-${p.name.replace(/[^A-Za-z0-9.-]/g, "-")}-${i}`;
  const [repositoryUrl, ...rest] = subject.name.split("/");
  const imageName = rest.length ? rest[rest.length - 1] : repositoryUrl;
  const imagePurl = `pkg:oci/${q(imageName)}@${q(subject.digest)}?repository_url=${q(subject.name)}${subject.platform ? `&platform=${q(subject.platform)}` : ""}`;
  const pkgs = packages.map((p, i) => ({
    name: p.name,
    SPDXID: id(p, i),
    versionInfo: p.version,
    downloadLocation: "NOASSERTION",
    filesAnalyzed: false,
    licenseConcluded: "NOASSERTION",
    licenseDeclared: "NOASSERTION",
    copyrightText: "NOASSERTION",
    sourceInfo: `${p.type === "pypi" ? "Python package" : "OS package"} listed in ${p.location}`,
    externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: p.purl }],
  }));
  return {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: `${subject.name}@${subject.digest}`,
    documentNamespace: `https://strata.invalid/spdx/${q(subject.name)}/${hex}`,
    creationInfo: { created: iso(created), creators: [`Tool: ${TOOL}`], ...(distro ? { comment: `OS: ${distro.id}${distro.versionId ? ` ${distro.versionId}` : ""}` } : {}) },
    packages: [
      {
        name: subject.name,
        SPDXID: "SPDXRef-Image",
        versionInfo: subject.digest,
        downloadLocation: "NOASSERTION",
        filesAnalyzed: false,
        primaryPackagePurpose: "CONTAINER",
        checksums: [{ algorithm: "SHA256", checksumValue: hex }],
        externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: imagePurl }],
      },
      ...pkgs,
    ],
    relationships: [
      { spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: "SPDXRef-Image" },
      ...pkgs.map((p) => ({ spdxElementId: "SPDXRef-Image", relationshipType: "CONTAINS", relatedSpdxElement: p.SPDXID })),
    ],
  };
}

/** An upstream image a build starts FROM, with its digest when a lock pins it. */
export interface Dependency {
  uri: string;
  digest?: Record<string, string>;
  name?: string;
  annotations?: Record<string, string>;
}

/** Everything the provenance records about one build. */
export interface BuildFacts {
  kind: "base" | "runtime";
  /** Matrix name of the base or runtime. */
  name: string;
  /** Dockerfile path (relative to the repository) and target stage. */
  dockerfile: string;
  target: string;
  context: string;
  /** Every build arg the build got (for a runtime, BASE_IMAGE too). */
  buildArgs: Record<string, string>;
  /** Platforms of the build; the one of this subject is `Subject.platform`. */
  platforms: string[];
  /** Text of the Dockerfile parts the target runs: global instructions, then each stage it needs, in file order. */
  dockerfileText: { globals: string; stages: { index: number; name?: string; text: string }[] };
  /** Bases: the content identity (hash) and identity tag. */
  identity?: { hash: string; tag: string };
  /** Runtimes: the base it is built FROM, digest-pinned. */
  base?: { name: string; ref: string; digest: string };
  /** Upstream FROM images after build-arg substitution (digests where a lock gives them). */
  upstream: Dependency[];
  /** Source repository and commit. */
  source?: { repository: string; commit?: string; ref?: string };
}

/** Who ran the build: the GitHub workflow (from GITHUB_* variables) or a local run. */
export interface BuildRun {
  builderId: string;
  invocationId?: string;
  startedOn?: Date;
  finishedOn?: Date;
}

/** Builder and invocation from the GitHub Actions environment, or `urn:strata:local` outside it. */
export function buildRunFromEnv(env: NodeJS.ProcessEnv, now: Date): BuildRun {
  const server = env.GITHUB_SERVER_URL ?? "https://github.com";
  if (env.GITHUB_WORKFLOW_REF && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID) {
    return {
      builderId: `${server}/${env.GITHUB_WORKFLOW_REF}`,
      invocationId: `${server}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}/attempts/${env.GITHUB_RUN_ATTEMPT ?? "1"}`,
      finishedOn: now,
    };
  }
  return { builderId: "urn:strata:local", finishedOn: now };
}

/** Source repository and commit from GITHUB_* variables, when set. */
export function sourceFromEnv(env: NodeJS.ProcessEnv): BuildFacts["source"] | undefined {
  if (!env.GITHUB_REPOSITORY) return undefined;
  return { repository: `${env.GITHUB_SERVER_URL ?? "https://github.com"}/${env.GITHUB_REPOSITORY}`, commit: env.GITHUB_SHA, ref: env.GITHUB_REF };
}

export const BUILD_TYPE = "https://strata.invalid/buildtypes/docker-build@v1";

/**
 * A SLSA provenance v1 predicate in the spirit of BuildKit's mode=max: the whole build definition (Dockerfile
 * text of the stages run, target, every build arg, platforms), the identity, and the resolved dependencies (source
 * commit, upstream images, and a runtime's base by digest).
 */
export function provenancePredicate(facts: BuildFacts, run: BuildRun, platform?: string): Record<string, unknown> {
  const deps: Dependency[] = [];
  if (facts.source) deps.push({ uri: `git+${facts.source.repository}${facts.source.ref ? `@${facts.source.ref}` : ""}`, ...(facts.source.commit ? { digest: { gitCommit: facts.source.commit } } : {}), name: "source" });
  if (facts.base) deps.push({ uri: `pkg:docker/${facts.base.ref.replace(/@sha256:[0-9a-f]{64}$/, "")}${platform ? `?platform=${q(platform)}` : ""}`, digest: { sha256: facts.base.digest.replace(/^sha256:/, "") }, name: `base ${facts.base.name}` });
  deps.push(...facts.upstream);
  return {
    buildDefinition: {
      buildType: BUILD_TYPE,
      externalParameters: {
        kind: facts.kind,
        name: facts.name,
        context: facts.context,
        dockerfile: facts.dockerfile,
        target: facts.target,
        buildArgs: Object.fromEntries(Object.entries(facts.buildArgs).sort(([a], [b]) => (a < b ? -1 : 1))),
        platforms: facts.platforms,
        ...(platform ? { platform } : {}),
        ...(facts.source ? { source: facts.source } : {}),
      },
      internalParameters: {
        ...(facts.identity ? { identity: facts.identity } : {}),
        ...(facts.base ? { base: facts.base } : {}),
        dockerfileText: facts.dockerfileText,
      },
      resolvedDependencies: deps,
    },
    runDetails: {
      builder: { id: run.builderId },
      metadata: {
        ...(run.invocationId ? { invocationId: run.invocationId } : {}),
        ...(run.startedOn ? { startedOn: iso(run.startedOn) } : {}),
        ...(run.finishedOn ? { finishedOn: iso(run.finishedOn) } : {}),
      },
    },
  };
}

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const PREDICATE_TYPES = { sbom: "https://spdx.dev/Document", provenance: "https://slsa.dev/provenance/v1" } as const;
export type AttestationKind = keyof typeof PREDICATE_TYPES;
export const IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";
/** Annotation naming which strata attestation an artifact is (`sbom`, `provenance`). */
export const KIND_ANNOTATION = "dev.strata.attestation";
/** Tag suffixes of the attestation artifacts: `sha256-<hex>.<suffix>`; cosign's are .sig, .att and .sbom. */
export const TAG_SUFFIXES: Record<AttestationKind, string> = { sbom: "spdx", provenance: "provenance" };

/** The tag an attestation artifact is kept under, so no untagged-image lifecycle rule can expire it. */
export function attestationTag(subjectDigest: string, kind: AttestationKind): string {
  return `${subjectDigest.replace(":", "-")}.${TAG_SUFFIXES[kind]}`;
}

/**
 * Tags of attestations and referrers indexes, keyed by the subject digest they are about: the referrers index
 * `sha256-<hex>`, strata's `sha256-<hex>.spdx` / `.provenance` and cosign's `.sig` / `.att` / `.sbom`.
 */
export const ATTESTATION_TAG = /^sha256-([0-9a-f]{64})(\.(spdx|provenance|att|sig|sbom))?$/;

/** An in-toto Statement v1 about the subject. */
export function statement(subject: Subject, kind: AttestationKind, predicate: unknown): Record<string, unknown> {
  return { _type: STATEMENT_TYPE, subject: [{ name: subject.name, digest: { sha256: subject.digest.replace(/^sha256:/, "") } }], predicateType: PREDICATE_TYPES[kind], predicate };
}

/** The OCI 1.1 artifact manifest carrying one statement (layer descriptor `layer`), with `subject` the image. */
export function artifactManifest(subject: Subject, kind: AttestationKind, layer: { digest: string; size: number }, config: { mediaType: string; digest: string; size: number }, created: Date) {
  return {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    artifactType: IN_TOTO_MEDIA_TYPE,
    config,
    layers: [{ mediaType: IN_TOTO_MEDIA_TYPE, digest: layer.digest, size: layer.size, annotations: { "in-toto.io/predicate-type": PREDICATE_TYPES[kind] } }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { "in-toto.io/predicate-type": PREDICATE_TYPES[kind], [KIND_ANNOTATION]: kind, "org.opencontainers.image.created": iso(created) },
  };
}

/** sha256 digest of bytes, `sha256:<hex>`. */
export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function iso(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}
