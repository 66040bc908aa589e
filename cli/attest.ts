import { appendFileSync } from "node:fs";
import { join, relative } from "node:path";
import { Readable } from "node:stream";
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { Parser, type ReadEntry } from "tar";
import { DockerfileInfo } from "../matrix/dockerfile.ts";
import { parseImageRef, upstreamImages } from "../matrix/lock.ts";
import { MatrixError } from "../matrix/errors.ts";
import { LIMITS, readRegularFile } from "../matrix/files.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BasePlan, BuildPlan, RuntimePlan, UpstreamImage } from "../matrix/plan.ts";
import { usageError } from "./args.ts";
import {
  applyLayers,
  artifactManifest,
  attestationTag,
  buildRunFromEnv,
  classifyEntry,
  emptyChanges,
  IN_TOTO_MEDIA_TYPE,
  KIND_ANNOTATION,
  packagesOf,
  PREDICATE_TYPES,
  provenancePredicate,
  SCAN_LIMITS,
  sourceFromEnv,
  spdxDocument,
  statement,
  type AttestationKind,
  type BuildFacts,
  type Dependency,
  type LayerChanges,
  type Subject,
} from "./attestation.ts";
import {
  addToReferrersTag,
  blobStream,
  OCI_EMPTY,
  pushArtifactManifest,
  referrersFromApi,
  RegistryClient,
  RegistryError,
  type Descriptor,
  type Manifest,
} from "./registry.ts";
import { readStackFile } from "./stack.ts";

export const ATTEST_USAGE = `Usage:
  strata attest [IMAGE@sha256:DIGEST ...] [--outputs FILE] [--bake-metadata FILE] [--only bases|runtimes]
                [--pushed FILE] [--matrix PATH] [--stack NAME] [--json]

Attaches an SBOM (SPDX 2.3: the OS packages of /var/lib/dpkg/status, status.d/ and /lib/apk/db/installed, and the
Python packages of every site-/dist-packages *.dist-info and *.egg-info, read from the image's own layers) and a
SLSA v1 provenance (the build definition from the matrix: Dockerfile stages, target, build args, platform,
identity, base digest, source commit, workflow run) to each pushed image, as in-toto statements in OCI 1.1
artifacts whose subject is the image manifest. A multi-platform index gets both per platform manifest and a
provenance of its own. Each artifact is tagged sha256-<hex>.spdx / sha256-<hex>.provenance (so no lifecycle rule
expiring untagged images removes it) and listed by the registry's referrers API or, where it has none, by the
referrers tag sha256-<hex>.

  IMAGE@sha256:DIGEST  a digest-pinned image of a strata base or runtime (told apart by its dev.strata.* labels)
  --outputs FILE       \`pulumi stack output --json\`: attests every bases.*.ref and runtimes.*.ref; its baseRefs
                       name each runtime's base
  --bake-metadata FILE \`docker buildx bake --metadata-file\`: attests every base-*/runtime-* target pushed
  --only KIND          of --outputs and --bake-metadata, attest only the bases or only the runtimes (a runtime
                       shard's outputs also name the bases it reads, which its job must not push to)
  --pushed FILE        appends each attestation artifact pushed, HOST/REPO@sha256:..., one per line (to sign them)

Exit status: 0 attested; 1 an image, file or registry problem (nothing more is pushed after it); 2 usage error.`;

/** One image to attest and what strata knows of it before reading it. */
export interface Target {
  host: string;
  repo: string;
  digest: string;
  /** From --outputs or --bake-metadata; otherwise read from the image's labels. */
  kind?: "base" | "runtime";
  name?: string;
}

/** What `strata attest` pushed for one subject. */
export interface Pushed {
  subject: string;
  platform?: string;
  kind: AttestationKind;
  ref: string;
  tag: string;
  /** How tools find it: the registry's referrers API, or the referrers tag schema index. */
  listedBy: "referrers-api" | "referrers-tag";
  packages?: number;
}

class InputError extends Error {}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** `host/repo[:tag]@sha256:<hex>` → its parts; null when not digest-pinned or without a registry host. */
export function parsePushedRef(ref: string): { host: string; repo: string; digest: string } | null {
  const r = parseImageRef(ref);
  const slash = ref.indexOf("/");
  const namesHost = slash > 0 && /[.:]|^localhost$/.test(ref.slice(0, slash));
  return r?.digest && namesHost ? { host: r.apiHost, repo: r.repository, digest: r.digest } : null;
}

/** The images a `pulumi stack output --json` names (bases.*.ref, runtimes.*.ref) and its baseRefs. */
export function targetsFromOutputs(data: unknown, file: string): { targets: Target[]; baseRefs: Record<string, string> } {
  const fail = (field: string, what: string): never => {
    throw new InputError(`${file}: ${field}: ${what}; pass the output of \`pulumi stack output --json\``);
  };
  if (!data || typeof data !== "object" || Array.isArray(data)) fail("(top level)", "not a JSON object of stack outputs");
  const out = data as Record<string, unknown>;
  const targets: Target[] = [];
  const section = (key: "bases" | "runtimes") => {
    const v = out[key];
    if (v === undefined) return;
    if (!v || typeof v !== "object" || Array.isArray(v)) fail(key, "not an object");
    for (const [name, entry] of Object.entries(v as Record<string, unknown>)) {
      const ref = (entry as { ref?: unknown } | null)?.ref;
      if (typeof ref !== "string") fail(`${key}.${name}.ref`, "missing or not a string");
      const parsed = parsePushedRef(ref as string);
      if (!parsed) fail(`${key}.${name}.ref`, `'${String(ref).slice(0, 200)}' is not a digest-pinned image reference (HOST/REPO[:TAG]@sha256:...)`);
      targets.push({ ...parsed!, kind: key === "bases" ? "base" : "runtime", name });
    }
  };
  section("bases");
  section("runtimes");
  const baseRefs: Record<string, string> = {};
  if (out.baseRefs !== undefined) {
    if (!out.baseRefs || typeof out.baseRefs !== "object" || Array.isArray(out.baseRefs)) fail("baseRefs", "not an object");
    for (const [name, ref] of Object.entries(out.baseRefs as Record<string, unknown>)) {
      if (typeof ref !== "string" || !parsePushedRef(ref)) fail(`baseRefs.${name}`, "not a digest-pinned image reference");
      baseRefs[name] = ref as string;
    }
  }
  return { targets, baseRefs };
}

/** The images a bake metadata file says were pushed (targets base-<name> / runtime-<name>). */
export function targetsFromBakeMetadata(data: unknown, file: string): Target[] {
  if (!data || typeof data !== "object" || Array.isArray(data)) throw new InputError(`${file}: not a JSON object; pass the file written by \`docker buildx bake --metadata-file FILE\``);
  const targets: Target[] = [];
  for (const [target, entry] of Object.entries(data as Record<string, unknown>)) {
    const m = /^(base|runtime)-(.+)$/.exec(target);
    if (!m || !entry || typeof entry !== "object") continue;
    const digest = (entry as Record<string, unknown>)["containerimage.digest"];
    const names = (entry as Record<string, unknown>)["image.name"];
    if (typeof digest !== "string" || !DIGEST.test(digest) || typeof names !== "string") throw new InputError(`${file}: ${target}: no containerimage.digest and image.name (was it pushed? output type=registry)`);
    const parsed = parsePushedRef(`${names.split(",")[0].trim()}@${digest}`);
    if (!parsed) throw new InputError(`${file}: ${target}: image.name '${names.slice(0, 200)}' is not HOST/REPO:TAG`);
    targets.push({ ...parsed, kind: m[1] as "base" | "runtime", name: m[2] });
  }
  return targets;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading an image's package databases through the registry

const LAYER_TYPES = /^application\/vnd\.(oci\.image\.layer\.v1\.tar(\+gzip|\+zstd)?|docker\.image\.rootfs\.diff\.tar\.gzip)$/;
/** A layer download that delivers nothing for this long is abandoned. */
const LAYER_IDLE_MS = 120_000;

/** Parses one layer stream (tar, gzip or zstd) into the package-database changes it makes. Exported for tests. */
export async function scanLayerStream(source: AsyncIterable<Uint8Array>, what: string, budget: { bytes: number; files: number }): Promise<{ changes: LayerChanges; digest: string }> {
  const changes = emptyChanges();
  const hash = createHash("sha256");
  let fatal: Error | undefined;
  let failedNow: () => void = () => {};
  const failed = new Promise<void>((resolve) => (failedNow = resolve));
  const fail = (err: Error) => {
    fatal ??= err;
    failedNow();
  };
  const parser = new Parser({
    strict: false,
    onReadEntry: (entry: ReadEntry) => {
      const hit = classifyEntry(changes, entry.path, entry.type, entry.linkpath);
      if (!hit) return entry.resume();
      if (hit.kind !== "python" && entry.size > hit.read) {
        changes.notes.push(`skipped /${hit.path}: ${entry.size} bytes, more than the ${hit.read} a package database may have`);
        changes.removed.push(hit.path);
        return entry.resume();
      }
      if (hit.kind === "python" && --budget.files < 0) {
        fail(new InputError(`${what}: more than ${SCAN_LIMITS.metadataFiles} Python metadata files; refusing to list them`));
        return entry.resume();
      }
      const chunks: Buffer[] = [];
      let kept = 0;
      entry.on("data", (c: Buffer) => {
        if (kept >= hit.read) return;
        const part = c.subarray(0, hit.read - kept);
        kept += part.length;
        chunks.push(part);
      });
      entry.on("end", () => {
        budget.bytes -= kept;
        if (budget.bytes < 0) fail(new InputError(`${what}: package databases larger than ${SCAN_LIMITS.totalBytes} bytes in all; refusing to read more`));
        else changes.files.set(hit.path, Buffer.concat(chunks));
      });
    },
  });
  parser.on("warn", (code: string, message: string | Error) => {
    const text = typeof message === "string" ? message : message.message;
    if (code === "TAR_BAD_ARCHIVE" || (/zlib|zstd|unexpected end|incorrect header|invalid/i.test(`${code} ${text}`) && code !== "TAR_ENTRY_INVALID")) fail(new InputError(`${what}: not a readable layer (${code}: ${text})`));
    else if (changes.notes.length < 20) changes.notes.push(`${code}: ${text}`);
  });
  parser.on("error", (err: Error) => fail(new InputError(`${what}: not a readable layer (${err.message})`)));
  const ended = new Promise<void>((resolve) => parser.on("close", () => resolve()));
  // The whole layer is read (its digest is checked) even when the tar is bad; the parser is fed until it fails.
  for await (const chunk of source) {
    hash.update(chunk);
    if (fatal) continue;
    if (!parser.write(Buffer.from(chunk))) await Promise.race([new Promise<void>((resolve) => parser.once("drain", () => resolve())), ended, failed]);
  }
  if (!fatal) parser.end();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ended, failed, new Promise<void>((resolve) => (timer = setTimeout(resolve, 10_000)))]);
  clearTimeout(timer);
  if (fatal) throw fatal;
  return { changes, digest: `sha256:${hash.digest("hex")}` };
}

/** Reads the layers of one image manifest, in order, and returns the package-database files of its final filesystem. */
async function imageFiles(client: RegistryClient, repo: string, manifest: Manifest, where: string, cache: Map<string, LayerChanges>): Promise<{ files: Map<string, Buffer>; notes: string[] }> {
  const layers: LayerChanges[] = [];
  const budget = { bytes: SCAN_LIMITS.totalBytes, files: SCAN_LIMITS.metadataFiles };
  for (const layer of manifest.layers ?? []) {
    if (!DIGEST.test(layer.digest)) throw new InputError(`${where}: layer digest '${String(layer.digest).slice(0, 80)}' is not sha256:<hex>`);
    if (!LAYER_TYPES.test(layer.mediaType)) throw new InputError(`${where}: layer ${layer.digest} has media type ${layer.mediaType}, not a filesystem layer strata can read`);
    const cached = cache.get(layer.digest);
    if (cached) {
      layers.push(cached);
      continue;
    }
    const what = `${where}: layer ${layer.digest}`;
    const abort = new AbortController();
    let timer = setTimeout(() => abort.abort(), LAYER_IDLE_MS);
    const body = await blobStream(client, repo, layer.digest, abort.signal);
    const source = (async function* () {
      for await (const chunk of Readable.fromWeb(body as import("node:stream/web").ReadableStream<Uint8Array>)) {
        clearTimeout(timer);
        timer = setTimeout(() => abort.abort(), LAYER_IDLE_MS);
        yield chunk as Uint8Array;
      }
    })();
    let result;
    try {
      result = await scanLayerStream(source, what, budget);
    } catch (err) {
      if (abort.signal.aborted) throw new RegistryError(`${what}: the download stalled for ${LAYER_IDLE_MS / 1000} s`);
      if (err instanceof InputError || err instanceof RegistryError) throw err;
      throw new RegistryError(`${what}: download failed (${(err as Error).message})`);
    } finally {
      clearTimeout(timer);
    }
    if (result.digest !== layer.digest) throw new InputError(`${what}: the registry sent content with digest ${result.digest}; refusing an SBOM of it`);
    cache.set(layer.digest, result.changes);
    layers.push(result.changes);
  }
  return { files: applyLayers(layers), notes: layers.flatMap((l) => l.notes) };
}

// ---------------------------------------------------------------------------------------------------------------
// Build facts from the matrix

/**
 * The Dockerfile text a target runs, and its upstream images as provenance dependencies: the same images `strata
 * lock` pins (matrix/lock.ts, build args substituted for `platform`, or every platform of an index), each with the
 * digest the lock gives it (`locked`, the plan's upstream), plus the references the Dockerfile pins by digest itself.
 */
export function dockerfileFacts(
  content: string,
  opts: { dockerfile: string; target: string; args: Record<string, string>; platforms: string[]; locked?: readonly UpstreamImage[]; runtime?: boolean },
): { text: BuildFacts["dockerfileText"]; upstream: Dependency[] } {
  const info = new DockerfileInfo(content);
  const closure = info.closure(opts.target || undefined);
  const found = upstreamImages(info, { dockerfile: opts.dockerfile, target: opts.target || undefined, args: opts.args, platforms: opts.platforms, trusted: opts.runtime ? ["BASE_IMAGE"] : [] });
  const qualifier = opts.platforms.length === 1 ? `?platform=${encodeURIComponent(opts.platforms[0])}` : "";
  const upstream: Dependency[] = found.images.map((image) => {
    const lock = opts.locked?.find((l) => l.ref === image.ref);
    const digest = (opts.platforms.length === 1 ? lock?.platformDigests?.[opts.platforms[0]] : undefined) ?? lock?.digest;
    const name = image.frontend ? `# syntax=${image.ref}` : `FROM ${image.ref}`;
    return { uri: `pkg:docker/${image.ref}${qualifier}`, name, ...(digest ? { digest: { sha256: digest.replace(/^sha256:/, "") } } : {}) };
  });
  for (const ref of found.pinned) {
    const at = ref.lastIndexOf("@");
    upstream.push({ uri: `pkg:docker/${ref.slice(0, at)}${qualifier}`, name: `FROM ${ref}`, digest: { sha256: ref.slice(at + 1).replace(/^sha256:/, "") } });
  }
  return { text: { globals: info.globalText, stages: closure.map((s) => ({ index: s.index, ...(s.name ? { name: s.name } : {}), text: s.text })) }, upstream };
}

function buildFacts(plan: BuildPlan, entry: { kind: "base"; plan: BasePlan } | { kind: "runtime"; plan: RuntimePlan; base: NonNullable<BuildFacts["base"]> }, platform: string | undefined): BuildFacts {
  const p = entry.plan;
  const file = join(plan.dir, p.dockerfile);
  const args = entry.kind === "runtime" ? { ...p.args, BASE_IMAGE: entry.base.ref } : { ...p.args };
  let content: string;
  try {
    content = readRegularFile(file, LIMITS.sourceBytes, "Dockerfile");
  } catch (err) {
    throw new InputError(`${relative(process.cwd(), file) || file}: cannot read the Dockerfile of ${entry.kind} ${p.name} (${(err as Error).message})`);
  }
  const df = dockerfileFacts(content, { dockerfile: relative(process.cwd(), file) || file, target: p.target, args, platforms: platform ? [platform] : p.platforms, locked: p.upstream, runtime: entry.kind === "runtime" });
  return {
    kind: entry.kind,
    name: p.name,
    dockerfile: relative(process.cwd(), file) || file,
    context: relative(process.cwd(), join(plan.dir, p.context)) || ".",
    target: p.target,
    buildArgs: args,
    platforms: p.platforms,
    dockerfileText: df.text,
    ...(entry.kind === "base" ? { identity: { hash: entry.plan.hash, tag: entry.plan.tag } } : { base: entry.base }),
    upstream: df.upstream,
    source: sourceFromEnv(process.env),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The command

interface ImageConfig {
  os?: string;
  architecture?: string;
  variant?: string;
  config?: { Labels?: Record<string, string> | null };
}

async function readConfig(client: RegistryClient, repo: string, manifest: Manifest, where: string): Promise<ImageConfig> {
  if (!manifest.config || !DIGEST.test(manifest.config.digest)) throw new InputError(`${where}: the manifest has no image config`);
  try {
    return JSON.parse((await client.blob(repo, manifest.config.digest)).toString("utf8")) as ImageConfig;
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new InputError(`${where}: the image config is not JSON`);
  }
}

const platformOf = (c: { os?: string; architecture?: string; variant?: string }) => (c.os && c.architecture ? `${c.os}/${c.architecture}${c.variant ? `/${c.variant}` : ""}` : undefined);

/** Pushes one statement as an artifact tagged `sha256-<hex>.<kind>` and lists it for referrer lookups. */
async function attach(client: RegistryClient, repo: string, subject: Subject, kind: AttestationKind, predicate: unknown, created: Date): Promise<Pushed> {
  const body = Buffer.from(JSON.stringify(statement(subject, kind, predicate)));
  const layer = await client.putBlob(repo, body, IN_TOTO_MEDIA_TYPE);
  const config = await client.putBlob(repo, Buffer.from("{}"), OCI_EMPTY.mediaType);
  const manifest = artifactManifest(subject, kind, layer, config, created);
  const tag = attestationTag(subject.digest, kind);
  const pushed = await pushArtifactManifest(client, repo, tag, manifest);
  let listedBy: Pushed["listedBy"] = "referrers-api";
  if (!pushed.subjectIndexed && (await referrersFromApi(client, repo, subject.digest)) === null) {
    listedBy = "referrers-tag";
    await addToReferrersTag(
      client,
      repo,
      subject.digest,
      { mediaType: manifest.mediaType, digest: pushed.digest, size: Buffer.byteLength(JSON.stringify(manifest)), artifactType: IN_TOTO_MEDIA_TYPE, annotations: manifest.annotations },
      (d) => d.annotations?.[KIND_ANNOTATION] === kind && d.annotations?.["in-toto.io/predicate-type"] === PREDICATE_TYPES[kind],
    );
  }
  return { subject: `${subject.name}@${subject.digest}`, ...(subject.platform ? { platform: subject.platform } : {}), kind, ref: `${client.host}/${repo}@${pushed.digest}`, tag, listedBy };
}

interface Context {
  plan: BuildPlan;
  baseRefs: Record<string, string>;
  clients: Map<string, RegistryClient>;
  layerCache: Map<string, LayerChanges>;
  created: Date;
}

function client(ctx: Context, host: string): RegistryClient {
  let c = ctx.clients.get(host);
  if (!c) ctx.clients.set(host, (c = new RegistryClient(host)));
  return c;
}

/** The matrix entry of an image: from the target, else from its dev.strata.* labels. */
function matrixEntry(ctx: Context, t: Target, labels: Record<string, string>, where: string): { kind: "base"; plan: BasePlan } | { kind: "runtime"; plan: RuntimePlan } {
  const kind = t.kind ?? (labels["dev.strata.runtime"] ? "runtime" : labels["dev.strata.base"] ? "base" : undefined);
  const name = t.name ?? (kind === "runtime" ? labels["dev.strata.runtime"] : labels["dev.strata.base"]);
  if (!kind || !name) throw new InputError(`${where}: not a strata image (no dev.strata.base or dev.strata.runtime label); pass --outputs or --bake-metadata to say what it is`);
  if (kind === "base") {
    const plan = ctx.plan.bases.find((b) => b.name === name);
    if (!plan) throw new InputError(`${where}: base '${name}' is not in the matrix ${ctx.plan.file}; attest with the matrix it was built from`);
    return { kind, plan };
  }
  const plan = ctx.plan.runtimes.find((r) => r.name === name);
  if (!plan) throw new InputError(`${where}: runtime '${name}' is not in the matrix ${ctx.plan.file}; attest with the matrix it was built from`);
  return { kind, plan };
}

/** The base a runtime platform image was built FROM: baseRefs (or the base's tag in the sibling bases repository), checked by layers. */
async function runtimeBase(ctx: Context, t: Target, runtime: RuntimePlan, manifest: Manifest, platform: string | undefined, where: string): Promise<NonNullable<BuildFacts["base"]>> {
  const basePlan = ctx.plan.bases.find((b) => b.name === runtime.base)!;
  let ref = ctx.baseRefs[runtime.base];
  const c = client(ctx, ref ? parsePushedRef(ref)!.host : t.host);
  if (!ref) {
    const basesRepo = t.repo.replace(/[^/]+$/, "bases");
    const found = await c.manifest(basesRepo, basePlan.tag);
    if (!found) throw new InputError(`${where}: its base ${runtime.base} (${t.host}/${basesRepo}:${basePlan.tag}) is not in the registry; pass --outputs with the stack's baseRefs`);
    ref = `${t.host}/${basesRepo}:${basePlan.tag}@${found.digest}`;
  }
  const b = parsePushedRef(ref)!;
  const top = await c.manifest(b.repo, b.digest);
  if (!top) throw new InputError(`${where}: its base ${ref} is not in the registry`);
  let layers = top.manifest.layers;
  if (top.manifest.manifests) {
    const child = top.manifest.manifests.find((d) => platformOf(d.platform ?? {}) === platform) ?? (top.manifest.manifests.length === 1 ? top.manifest.manifests[0] : undefined);
    layers = child ? (await c.manifest(b.repo, child.digest))?.manifest.layers : undefined;
  }
  const own = (manifest.layers ?? []).map((l) => l.digest);
  const baseLayers = (layers ?? []).map((l) => l.digest);
  if (baseLayers.length === 0 || !baseLayers.every((d, i) => own[i] === d)) throw new InputError(`${where}: it is not built FROM its base ${ref} (the base's layers are not its first layers); pass the baseRefs it was built with (--outputs)`);
  return { name: runtime.base, ref, digest: b.digest };
}

async function attestTarget(ctx: Context, t: Target): Promise<Pushed[]> {
  const c = client(ctx, t.host);
  const name = `${t.host}/${t.repo}`;
  const top = await c.manifest(t.repo, t.digest);
  if (!top) throw new InputError(`${name}@${t.digest}: no such image in the registry`);
  const platforms: { descriptor: Descriptor; manifest: Manifest; platform?: string }[] = [];
  if (top.manifest.manifests) {
    for (const d of top.manifest.manifests) {
      // BuildKit's own attestation manifests (unknown/unknown) are not images.
      if (d.platform?.os === "unknown" || d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest") continue;
      const child = await c.manifest(t.repo, d.digest);
      if (!child) throw new InputError(`${name}@${t.digest}: platform manifest ${d.digest} is missing from the registry`);
      platforms.push({ descriptor: { mediaType: child.mediaType, digest: child.digest, size: child.size }, manifest: child.manifest, platform: platformOf(d.platform ?? {}) });
    }
  } else platforms.push({ descriptor: { mediaType: top.mediaType, digest: top.digest, size: top.size }, manifest: top.manifest });

  const out: Pushed[] = [];
  let indexFacts: BuildFacts | undefined;
  for (const p of platforms) {
    const where = `${name}@${p.descriptor.digest}`;
    const config = await readConfig(c, t.repo, p.manifest, where);
    const platform = p.platform ?? platformOf(config);
    const entry = matrixEntry(ctx, t, config.config?.Labels ?? {}, where);
    const facts = buildFacts(ctx.plan, entry.kind === "base" ? entry : { ...entry, base: await runtimeBase(ctx, t, entry.plan, p.manifest, platform, where) }, platform);
    indexFacts ??= facts;
    const subject: Subject = { name, digest: p.descriptor.digest, mediaType: p.descriptor.mediaType, size: p.descriptor.size, ...(platform ? { platform } : {}) };
    const { files, notes } = await imageFiles(c, t.repo, p.manifest, where, ctx.layerCache);
    for (const n of notes.slice(0, 10)) process.stderr.write(`strata attest: ${where}: ${n}\n`);
    const { packages, distro } = packagesOf(files);
    const sbom = await attach(c, t.repo, subject, "sbom", spdxDocument(subject, packages, ctx.created, distro), ctx.created);
    out.push({ ...sbom, packages: packages.length });
    out.push(await attach(c, t.repo, subject, "provenance", provenancePredicate(facts, buildRunFromEnv(process.env, ctx.created), platform), ctx.created));
  }
  if (top.manifest.manifests && indexFacts) {
    const subject: Subject = { name, digest: top.digest, mediaType: top.mediaType, size: top.size };
    out.push(await attach(c, t.repo, subject, "provenance", provenancePredicate(indexFacts, buildRunFromEnv(process.env, ctx.created)), ctx.created));
  }
  return out;
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = readRegularFile(file, LIMITS.sourceBytes, what);
  } catch (err) {
    throw new InputError(`${file}: cannot read the ${what} (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(`${file}: the ${what} is not JSON (${(err as Error).message})`);
  }
}

/** `strata attest`. */
export async function attestCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { outputs: { type: "string" }, "bake-metadata": { type: "string" }, only: { type: "string" }, pushed: { type: "string" }, matrix: { type: "string" }, stack: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    return usageError("attest", ATTEST_USAGE, (err as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(ATTEST_USAGE + "\n");
    return 0;
  }
  if (v.only !== undefined && v.only !== "bases" && v.only !== "runtimes") return usageError("attest", ATTEST_USAGE, `--only takes bases or runtimes, not '${v.only.slice(0, 50)}'`);
  const only = v.only === "bases" ? "base" : v.only === "runtimes" ? "runtime" : undefined;
  const fromFiles: Target[] = [];
  const targets: Target[] = [];
  for (const ref of parsed.positionals) {
    const p = parsePushedRef(ref);
    if (!p) return usageError("attest", ATTEST_USAGE, `'${ref.slice(0, 200)}' is not a digest-pinned image reference (HOST/REPO[:TAG]@sha256:<64 hex>)`);
    targets.push(p);
  }
  const done: Pushed[] = [];
  try {
    let baseRefs: Record<string, string> = {};
    if (v.outputs) {
      const o = targetsFromOutputs(readJson(v.outputs, "stack outputs"), v.outputs);
      fromFiles.push(...o.targets);
      baseRefs = o.baseRefs;
    }
    if (v["bake-metadata"]) fromFiles.push(...targetsFromBakeMetadata(readJson(v["bake-metadata"], "bake metadata"), v["bake-metadata"]));
    targets.push(...fromFiles.filter((t) => !only || t.kind === only));
    if (!v.outputs && !v["bake-metadata"] && targets.length === 0) return usageError("attest", ATTEST_USAGE, "no image to attest: pass IMAGE@sha256:DIGEST, --outputs or --bake-metadata");
    if (targets.length === 0) {
      process.stderr.write(`strata attest: the files name no ${only ?? "image"} to attest; nothing was pushed\n`);
      if (v.json) process.stdout.write(JSON.stringify({ attestations: [] }, null, 2) + "\n");
      return 0;
    }
    const { config } = readStackFile(v.stack ?? "dev");
    const plan = loadMatrix(v.matrix ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml");
    const epoch = process.env.SOURCE_DATE_EPOCH;
    const created = epoch && /^\d{1,12}$/.test(epoch) ? new Date(Number(epoch) * 1000) : new Date();
    const ctx: Context = { plan, baseRefs, clients: new Map(), layerCache: new Map(), created };
    const unique = [...new Map(targets.map((t) => [`${t.host}/${t.repo}@${t.digest}`, t])).values()];
    for (const t of unique) {
      const pushed = await attestTarget(ctx, t);
      done.push(...pushed);
      if (v.pushed) appendFileSync(v.pushed, pushed.map((p) => p.ref + "\n").join(""));
    }
  } catch (err) {
    if (err instanceof InputError || err instanceof RegistryError || err instanceof MatrixError) {
      process.stderr.write(`strata attest: ${err.message}\n`);
      process.stderr.write(`strata attest: stopped; ${done.length ? `pushed before the error: ${done.map((d) => d.ref).join(", ")}` : "nothing was pushed"}\n`);
      return 1;
    }
    throw err;
  }
  if (v.json) process.stdout.write(JSON.stringify({ attestations: done }, null, 2) + "\n");
  else {
    for (const d of done) process.stdout.write(`${d.kind.padEnd(10)} ${d.ref}  of ${d.subject}${d.platform ? ` (${d.platform})` : ""}${d.packages !== undefined ? `, ${d.packages} packages` : ""}; tag ${d.tag}, listed by the ${d.listedBy}\n`);
  }
  return 0;
}
