import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { BuildLedgerSchema, type BuildLedger } from "../matrix/forecast.ts";

/**
 * A small OCI distribution API client (tags, manifests, blobs, push, delete) over fetch, with the registry token
 * flow (Basic, or Bearer from the realm GitHub/GHCR/Docker Hub-style registries name). ECR speaks the same API for
 * reading and pushing with Basic `AWS:<token>` (what `docker login` stores); deleting on ECR goes through the ECR
 * API instead (cli/gc.ts).
 */

export const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

/** Media type of a base's build-record ledger (the artifact's config blob). */
export const LEDGER_MEDIA_TYPE = "application/vnd.strata.build-records.v1+json";
/** Largest ledger or manifest read; anything bigger is refused rather than buffered. */
const MAX_DOCUMENT_BYTES = 4 << 20;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
  annotations?: Record<string, string>;
}

export interface Manifest {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export class RegistryError extends Error {}

export interface Credentials {
  username: string;
  password: string;
}

/**
 * Credentials for `host` from the environment (STRATA_REGISTRY_USERNAME/PASSWORD) or the docker config (`docker
 * login`): an `auths` entry, else the credential helper the config names for it (`credHelpers`, or `credsStore`
 * for every registry, e.g. Docker Desktop's `desktop` or `osxkeychain`).
 */
export function credentialsFor(host: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  if (env.STRATA_REGISTRY_USERNAME && env.STRATA_REGISTRY_PASSWORD) return { username: env.STRATA_REGISTRY_USERNAME, password: env.STRATA_REGISTRY_PASSWORD };
  const file = join(env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");
  if (!existsSync(file)) return undefined;
  let cfg: { auths?: Record<string, { auth?: string }>; credHelpers?: Record<string, string>; credsStore?: string };
  try {
    cfg = JSON.parse(readFileSync(file, "utf8")) as typeof cfg;
  } catch {
    return undefined;
  }
  const keys = [host, `https://${host}`];
  const entry = keys.map((k) => cfg.auths?.[k]).find((e) => e?.auth);
  if (entry?.auth) {
    const text = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = text.indexOf(":");
    return colon > 0 ? { username: text.slice(0, colon), password: text.slice(colon + 1) } : undefined;
  }
  const helper = keys.map((k) => cfg.credHelpers?.[k]).find(Boolean) ?? cfg.credsStore;
  if (!helper || !/^[A-Za-z0-9._-]{1,64}$/.test(helper)) return undefined;
  for (const key of keys) {
    const found = fromCredentialHelper(helper, key, env);
    if (found) return found;
  }
  return undefined;
}

/**
 * One `docker-credential-<helper> get` (the docker credential-helper protocol: the server URL on stdin, JSON
 * `{Username, Secret}` on stdout), bounded in time and output. A helper that is missing, fails or knows no such
 * server gives undefined, as does an identity token (`<token>`), which the distribution API cannot take as Basic.
 */
function fromCredentialHelper(helper: string, serverUrl: string, env: NodeJS.ProcessEnv): Credentials | undefined {
  const r = spawnSync(`docker-credential-${helper}`, ["get"], { input: serverUrl, env, encoding: "utf8", timeout: 10_000, maxBuffer: 64 << 10 });
  if (r.error || r.status !== 0) return undefined;
  try {
    const out = JSON.parse(r.stdout) as { Username?: unknown; Secret?: unknown };
    if (typeof out.Username !== "string" || typeof out.Secret !== "string" || out.Username === "<token>" || !out.Secret) return undefined;
    return { username: out.Username, password: out.Secret };
  } catch {
    return undefined;
  }
}

export class RegistryClient {
  readonly base: string;
  private authHeader: string | undefined;

  constructor(
    readonly host: string,
    private readonly credentials: Credentials | undefined = credentialsFor(host),
  ) {
    const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);
    this.base = `${loopback ? "http" : "https"}://${host}`;
  }

  /** One request with the token flow applied (answers a 401 once); for calls the methods below do not cover (used by the functions at the end of this file too). */
  async send(method: string, path: string, init: { headers?: Record<string, string>; body?: Buffer | string; signal?: AbortSignal } = {}, scope?: string): Promise<Response> {
    const url = path.startsWith("http") ? path : `${this.base}${path}`;
    const go = () =>
      fetch(url, { method, headers: { ...(init.headers ?? {}), ...(this.authHeader ? { Authorization: this.authHeader } : {}) }, body: init.body, redirect: "follow", signal: init.signal ?? AbortSignal.timeout(60_000) });
    let res: Response;
    try {
      res = await go();
      if (res.status === 401 && (await this.authenticate(res, scope))) res = await go();
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new RegistryError(`registry ${this.host}: ${method} ${path}: ${(err as Error).message}${cause ? ` (${cause.code ?? cause.message})` : ""}; is the registry address right and reachable?`);
    }
    return res;
  }

  /** Answers a 401 challenge; true when a retry may succeed. */
  private async authenticate(res: Response, scope?: string): Promise<boolean> {
    await res.body?.cancel();
    const challenge = res.headers.get("www-authenticate") ?? "";
    const basic = this.credentials ? `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString("base64")}` : undefined;
    if (/^basic/i.test(challenge)) {
      if (!basic || this.authHeader === basic) return false;
      this.authHeader = basic;
      return true;
    }
    const realm = /realm="([^"]+)"/.exec(challenge)?.[1];
    if (!/^bearer/i.test(challenge) || !realm) return false;
    const url = new URL(realm);
    const service = /service="([^"]+)"/.exec(challenge)?.[1];
    if (service) url.searchParams.set("service", service);
    const wanted = /scope="([^"]+)"/.exec(challenge)?.[1] ?? scope;
    if (wanted) url.searchParams.set("scope", wanted);
    const r = await fetch(url, { headers: basic ? { Authorization: basic } : {}, signal: AbortSignal.timeout(30_000) });
    if (!r.ok) return false;
    const body = (await r.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) return false;
    this.authHeader = `Bearer ${token}`;
    return true;
  }

  private async fail(res: Response, what: string): Promise<never> {
    const text = (await res.text().catch(() => "")).slice(0, 300);
    const hint = res.status === 401 || res.status === 403 ? " (log in first: docker login, or aws-actions/amazon-ecr-login)" : "";
    throw new RegistryError(`registry ${this.host}: ${what}: HTTP ${res.status}${hint} ${text}`.trim());
  }

  /** Every tag of a repository (following pagination); [] when the repository does not exist. */
  async tags(repo: string): Promise<string[]> {
    const out: string[] = [];
    let path: string | null = `/v2/${repo}/tags/list?n=1000`;
    for (let page = 0; path && page < 1000; page++) {
      const res: Response = await this.send("GET", path, {}, `repository:${repo}:pull`);
      if (res.status === 404) return out;
      if (!res.ok) await this.fail(res, `list tags of ${repo}`);
      out.push(...(((await res.json()) as { tags?: string[] | null }).tags ?? []));
      const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get("link") ?? "")?.[1];
      path = next ?? null;
    }
    return out;
  }

  /**
   * A manifest or index by tag or digest, or null when there is none: read within MAX_DOCUMENT_BYTES (streamed,
   * refused past it), and refused when its content does not hash to the digest asked for or claimed.
   */
  async manifest(repo: string, ref: string): Promise<{ digest: string; mediaType: string; manifest: Manifest; size: number } | null> {
    const res = await this.send("GET", `/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_TYPES.join(", ") } }, `repository:${repo}:pull`);
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) await this.fail(res, `get manifest ${repo}:${ref}`);
    const body = await readBounded(res, MAX_DOCUMENT_BYTES, `registry ${this.host}: manifest ${repo}:${ref}`);
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const claimed = res.headers.get("docker-content-digest");
    if (ref.startsWith("sha256:") && digest !== ref) throw new RegistryError(`registry ${this.host}: manifest ${repo}@${ref} has digest ${digest}: the registry sent other content`);
    if (claimed && claimed !== digest) throw new RegistryError(`registry ${this.host}: manifest ${repo}:${ref} is said to be ${claimed} but hashes to ${digest}`);
    let manifest: Manifest;
    try {
      manifest = JSON.parse(body.toString("utf8")) as Manifest;
    } catch (err) {
      throw new RegistryError(`registry ${this.host}: manifest ${repo}:${ref} is not JSON (${(err as Error).message})`);
    }
    return { digest, mediaType: manifest.mediaType ?? res.headers.get("content-type") ?? "", manifest, size: body.length };
  }

  async blob(repo: string, digest: string, maxBytes = MAX_DOCUMENT_BYTES): Promise<Buffer> {
    const res = await this.send("GET", `/v2/${repo}/blobs/${digest}`, {}, `repository:${repo}:pull`);
    if (!res.ok) await this.fail(res, `get blob ${repo}@${digest}`);
    const len = Number(res.headers.get("content-length") ?? 0);
    if (len > maxBytes) throw new RegistryError(`registry ${this.host}: blob ${repo}@${digest} is ${len} bytes; refusing to read it`);
    return Buffer.from(await res.arrayBuffer());
  }

  /** Uploads a blob (monolithic POST + PUT); returns its descriptor. */
  async putBlob(repo: string, data: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const scope = `repository:${repo}:pull,push`;
    const head = await this.send("HEAD", `/v2/${repo}/blobs/${digest}`, {}, scope);
    if (head.ok) return { mediaType, digest, size: data.length };
    const start = await this.send("POST", `/v2/${repo}/blobs/uploads/`, { headers: { "Content-Length": "0" } }, scope);
    if (start.status !== 202) await this.fail(start, `start blob upload to ${repo}`);
    const location = start.headers.get("location");
    if (!location) throw new RegistryError(`registry ${this.host}: blob upload to ${repo} gave no Location`);
    const url = new URL(location, this.base);
    url.searchParams.set("digest", digest);
    const put = await this.send("PUT", url.toString(), { headers: { "Content-Type": "application/octet-stream", "Content-Length": String(data.length) }, body: data }, scope);
    if (put.status !== 201) await this.fail(put, `upload blob to ${repo}`);
    return { mediaType, digest, size: data.length };
  }

  /** Pushes a manifest under a tag; returns its digest. */
  async putManifest(repo: string, tag: string, manifest: Manifest & { mediaType: string }): Promise<string> {
    const body = Buffer.from(JSON.stringify(manifest));
    const res = await this.send("PUT", `/v2/${repo}/manifests/${tag}`, { headers: { "Content-Type": manifest.mediaType }, body }, `repository:${repo}:pull,push`);
    if (res.status !== 201) await this.fail(res, `push manifest ${repo}:${tag}`);
    return res.headers.get("docker-content-digest") ?? `sha256:${createHash("sha256").update(body).digest("hex")}`;
  }

  /** Deletes a manifest by digest (and so every tag on it); false when it was already gone. */
  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const res = await this.send("DELETE", `/v2/${repo}/manifests/${digest}`, {}, `repository:${repo}:delete`);
    if (res.status === 404) return false;
    if (res.status !== 202 && res.status !== 200) await this.fail(res, `delete ${repo}@${digest}`);
    await res.body?.cancel();
    return true;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Build-record ledgers: one small OCI artifact per base in the cache repository, tag `buildrecord-<base>`.

export function ledgerTag(base: string): string {
  return `buildrecord-${base}`;
}

/** A base's ledger, or null when none was recorded. A malformed ledger is an error naming its reference. */
export async function readLedger(client: RegistryClient, cacheRepo: string, base: string): Promise<BuildLedger | null> {
  const found = await client.manifest(cacheRepo, ledgerTag(base));
  if (!found) return null;
  const config = found.manifest.config;
  const ref = `${client.host}/${cacheRepo}:${ledgerTag(base)}`;
  if (config?.mediaType !== LEDGER_MEDIA_TYPE) throw new RegistryError(`${ref} is not a strata build-record ledger (config media type ${config?.mediaType ?? "none"})`);
  const text = (await client.blob(cacheRepo, config.digest)).toString("utf8");
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new RegistryError(`${ref}: the ledger is not JSON (${(err as Error).message})`);
  }
  const parsed = BuildLedgerSchema.safeParse(data);
  if (!parsed.success) throw new RegistryError(`${ref}: the ledger is malformed at ${parsed.error.issues[0].path.join(".")}: ${parsed.error.issues[0].message}`);
  return parsed.data as BuildLedger;
}

/** Pushes a ledger as `<cacheRepo>:buildrecord-<base>` (an OCI artifact; the JSON is its config blob). */
export async function writeLedger(client: RegistryClient, cacheRepo: string, ledger: BuildLedger): Promise<string> {
  const json = Buffer.from(JSON.stringify(ledger, null, 1) + "\n");
  const config = await client.putBlob(cacheRepo, json, LEDGER_MEDIA_TYPE);
  const empty = await client.putBlob(cacheRepo, Buffer.from("{}"), "application/vnd.oci.empty.v1+json");
  return client.putManifest(cacheRepo, ledgerTag(ledger.base), {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config,
    layers: [empty],
    annotations: { "org.opencontainers.image.title": `strata build records of base ${ledger.base}` },
  } as Manifest & { mediaType: string; schemaVersion: number });
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream images for `strata lock`: a tag resolved to its digest and per-platform manifest digests.

/** Largest image config read to tell a single-platform image's platform. */
const MAX_CONFIG_BYTES = 1 << 20;

/** A tag as the lock records it: the digest it points to and the manifest digest of each platform needed. */
export interface ResolvedTag {
  digest: string;
  platforms: Record<string, string>;
}

/** The body of a response, refused once it passes `maxBytes` (read in chunks, never buffered beyond). */
export async function readBounded(res: Response, maxBytes: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers.get("content-length") ?? "");
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel();
    throw new RegistryError(`${what} is ${declared} bytes, more than strata reads (${maxBytes})`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const reader = res.body?.getReader();
  for (;;) {
    const chunk = reader ? await reader.read() : { done: true as const, value: undefined };
    if (chunk.done) break;
    size += chunk.value.length;
    if (size > maxBytes) {
      await reader!.cancel();
      throw new RegistryError(`${what} is larger than strata reads (${maxBytes} bytes)`);
    }
    chunks.push(Buffer.from(chunk.value));
  }
  return Buffer.concat(chunks);
}

/** The digest a tag points to (HEAD, no body), or null when the registry has no such tag. */
export async function headManifest(client: RegistryClient, repo: string, tag: string): Promise<string | null> {
  const res = await client.send("HEAD", `/v2/${repo}/manifests/${tag}`, { headers: { Accept: MANIFEST_TYPES.join(", ") } }, `repository:${repo}:pull`);
  await res.body?.cancel();
  if (res.status === 404) return null;
  if (!res.ok) throw new RegistryError(`registry ${client.host}: HEAD manifest ${repo}:${tag}: HTTP ${res.status}${res.status === 401 || res.status === 403 ? " (the registry wants credentials: docker login, or STRATA_REGISTRY_USERNAME/PASSWORD for the stack's registry)" : ""}`);
  return res.headers.get("docker-content-digest");
}

/** True when an index entry's platform is `wanted` (os/arch[/variant]; arm64 without a variant matches v8). */
export function platformMatches(wanted: string, platform: { os?: string; architecture?: string; variant?: string } | undefined): boolean {
  if (!platform) return false;
  const [os, arch, variant] = wanted.split("/");
  if (platform.os !== os || platform.architecture !== arch) return false;
  if (variant !== undefined) return platform.variant === variant || (arch === "arm64" && variant === "v8" && !platform.variant);
  return !platform.variant || (arch === "arm64" && platform.variant === "v8");
}

/**
 * Resolves `repo:tag` to the digest it points to and, for each of `platforms`, the manifest digest a build of that
 * platform uses (from the index, or the one manifest whose config names that platform). With `known` (the lock's
 * entry), a HEAD whose digest is unchanged settles it without reading the index. A platform the image does not
 * have is an error naming it.
 */
export async function resolveTag(client: RegistryClient, repo: string, tag: string, platforms: string[], known?: ResolvedTag): Promise<ResolvedTag> {
  if (known && platforms.every((p) => Object.hasOwn(known.platforms, p))) {
    // A registry that refuses HEAD, or sends no digest with it, is asked with GET below.
    const head = await headManifest(client, repo, tag).catch((err: unknown) => {
      if (err instanceof RegistryError) return null;
      throw err;
    });
    if (head === known.digest) return { digest: known.digest, platforms: Object.fromEntries(platforms.map((p) => [p, known.platforms[p]])) };
  }
  const found = await client.manifest(repo, tag);
  if (!found) throw new RegistryError(`registry ${client.host}: ${repo}:${tag} does not exist (no such repository or tag)`);
  const { digest, manifest } = found;
  const out: Record<string, string> = {};
  if (manifest.manifests) {
    const entries = manifest.manifests.filter((m) => m.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest");
    for (const p of platforms) {
      const hit = entries.find((m) => platformMatches(p, m.platform as { os?: string; architecture?: string; variant?: string }));
      if (!hit) {
        const has = entries.map((m) => [m.platform?.os, m.platform?.architecture, (m.platform as { variant?: string } | undefined)?.variant].filter(Boolean).join("/")).join(", ");
        throw new RegistryError(`registry ${client.host}: ${repo}:${tag} has no ${p} image (it has ${has || "no platforms"})`);
      }
      out[p] = hit.digest;
    }
    return { digest, platforms: out };
  }
  if (!manifest.config) throw new RegistryError(`registry ${client.host}: ${repo}:${tag} is neither an image index nor an image manifest`);
  if (manifest.config.size > MAX_CONFIG_BYTES) throw new RegistryError(`registry ${client.host}: the config of ${repo}:${tag} is ${manifest.config.size} bytes, more than strata reads`);
  const res = await client.send("GET", `/v2/${repo}/blobs/${manifest.config.digest}`, {}, `repository:${repo}:pull`);
  if (!res.ok) {
    await res.body?.cancel();
    throw new RegistryError(`registry ${client.host}: GET the config of ${repo}:${tag}: HTTP ${res.status}`);
  }
  const text = (await readBounded(res, MAX_CONFIG_BYTES, `registry ${client.host}: the config of ${repo}:${tag}`)).toString("utf8");
  let config: { os?: string; architecture?: string; variant?: string };
  try {
    config = JSON.parse(text) as typeof config;
  } catch (err) {
    throw new RegistryError(`registry ${client.host}: the config of ${repo}:${tag} is not JSON (${(err as Error).message})`);
  }
  for (const p of platforms) {
    if (!platformMatches(p, config)) throw new RegistryError(`registry ${client.host}: ${repo}:${tag} is a single ${[config.os, config.architecture, config.variant].filter(Boolean).join("/")} image; it has no ${p} image`);
    out[p] = digest;
  }
  return { digest, platforms: out };
}

// ---------------------------------------------------------------------------------------------------------------
// OCI 1.1 referrers (attestations): artifacts whose `subject` is an image, found through the referrers API
// (`GET /v2/<repo>/referrers/<digest>`) where the registry has it, else through the referrers tag schema: an
// image index tagged `sha256-<hex>` of the subject that lists them (OCI distribution spec 1.1, as oras and
// regclient write it).

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_EMPTY = { mediaType: "application/vnd.oci.empty.v1+json", digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", size: 2 } as const;

/** A descriptor in a referrers list: the artifact manifest, its artifact type and annotations. */
export interface ReferrerDescriptor extends Descriptor {
  artifactType?: string;
}

/** The referrers tag of a subject digest: `sha256:<hex>` → `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(":", "-");
}

/** Streams a blob (for image layers, which are never buffered whole); `signal` bounds it, the caller checks its digest. */
export async function blobStream(client: RegistryClient, repo: string, digest: string, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
  const res = await client.send("GET", `/v2/${repo}/blobs/${digest}`, { signal }, `repository:${repo}:pull`);
  if (!res.ok || !res.body) {
    const text = (await res.text().catch(() => "")).slice(0, 300);
    throw new RegistryError(`registry ${client.host}: get blob ${repo}@${digest}: HTTP ${res.status} ${text}`.trim());
  }
  return res.body;
}

/**
 * Pushes a manifest (an artifact with a `subject`) by tag or digest. `subjectIndexed` is true when the registry
 * says (header OCI-Subject) it indexed the subject for the referrers API, so no referrers tag is needed.
 */
export async function pushArtifactManifest(client: RegistryClient, repo: string, ref: string, manifest: object & { mediaType: string }): Promise<{ digest: string; subjectIndexed: boolean }> {
  const body = Buffer.from(JSON.stringify(manifest));
  const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
  const res = await client.send("PUT", `/v2/${repo}/manifests/${ref}`, { headers: { "Content-Type": manifest.mediaType }, body }, `repository:${repo}:pull,push`);
  if (res.status !== 201) {
    const text = (await res.text().catch(() => "")).slice(0, 300);
    const hint = res.status === 401 || res.status === 403 ? " (log in first: docker login, or aws-actions/amazon-ecr-login)" : "";
    throw new RegistryError(`registry ${client.host}: push manifest ${repo}:${ref}: HTTP ${res.status}${hint} ${text}`.trim());
  }
  await res.body?.cancel();
  return { digest, subjectIndexed: res.headers.get("oci-subject") !== null };
}

/** The referrers of `digest` through the referrers API, or null when the registry has no such API (404/400/405). */
export async function referrersFromApi(client: RegistryClient, repo: string, digest: string): Promise<ReferrerDescriptor[] | null> {
  const res = await client.send("GET", `/v2/${repo}/referrers/${digest}`, { headers: { Accept: OCI_INDEX } }, `repository:${repo}:pull`);
  const type = res.headers.get("content-type") ?? "";
  if (!res.ok || !type.startsWith(OCI_INDEX)) {
    await res.body?.cancel();
    if ([400, 404, 405].includes(res.status) || res.ok) return null;
    const text = (await res.text().catch(() => "")).slice(0, 300);
    throw new RegistryError(`registry ${client.host}: list referrers of ${repo}@${digest}: HTTP ${res.status} ${text}`.trim());
  }
  const body = Buffer.from(await res.arrayBuffer());
  if (body.length > MAX_DOCUMENT_BYTES) throw new RegistryError(`registry ${client.host}: referrers of ${repo}@${digest}: ${body.length} bytes; refusing to read them`);
  try {
    return ((JSON.parse(body.toString("utf8")) as Manifest).manifests ?? []) as ReferrerDescriptor[];
  } catch {
    throw new RegistryError(`registry ${client.host}: referrers of ${repo}@${digest} are not JSON`);
  }
}

/** The referrers listed by the referrers tag schema index of `digest` ([] when there is none). */
export async function referrersFromTag(client: RegistryClient, repo: string, digest: string): Promise<ReferrerDescriptor[]> {
  const found = await client.manifest(repo, referrersTag(digest));
  if (!found) return [];
  if (found.mediaType !== OCI_INDEX) throw new RegistryError(`registry ${client.host}: ${repo}:${referrersTag(digest)} is not an OCI image index (${found.mediaType}); cannot list referrers there`);
  return (found.manifest.manifests ?? []) as ReferrerDescriptor[];
}

/**
 * Adds `entry` to the referrers tag schema index of `digest` (created when missing), dropping the entries
 * `supersedes` selects (an earlier attestation of the same kind). Returns the index digest.
 */
export async function addToReferrersTag(client: RegistryClient, repo: string, digest: string, entry: ReferrerDescriptor, supersedes: (d: ReferrerDescriptor) => boolean = () => false): Promise<string> {
  const kept = (await referrersFromTag(client, repo, digest)).filter((d) => d.digest !== entry.digest && !supersedes(d));
  const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...kept, entry] };
  return (await pushArtifactManifest(client, repo, referrersTag(digest), index)).digest;
}
