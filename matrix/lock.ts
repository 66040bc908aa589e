import { existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import type { DockerfileInfo } from "./dockerfile.ts";
import { MatrixError, Problems, type Location, type Problem } from "./errors.ts";
import { LIMITS } from "./files.ts";
import type { BuildPlan, UpstreamImage } from "./plan.ts";
import { PLATFORM, validate } from "./schema.ts";
import { SourceFile } from "./source.ts";

/**
 * The lock of upstream images: every image a base or runtime build starts FROM (or copies from), after build-arg
 * substitution, per platform, pinned to the digest its tag resolved to when `strata lock` last ran. Pure: the
 * registry side is cli/lock.ts.
 */

/** The platform strata's runners build on: what `$BUILDPLATFORM` stands for in a `FROM --platform=`. */
export const BUILD_PLATFORM = "linux/amd64";

/** The lock file of a matrix: beside it, `<name>.lock.json` (strata.yaml → strata.lock.json). */
export function lockFileFor(matrixFile: string): string {
  return join(dirname(matrixFile), `${basename(matrixFile).replace(/\.(ya?ml|json)$/i, "")}.lock.json`);
}

// ---------------------------------------------------------------------------------------------------------------
// Image references (the grammar of github.com/distribution/reference, which Docker and BuildKit use).

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:localhost|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** An image reference taken apart. */
export interface ImageRef {
  /** Registry as Docker names it (`docker.io` for Docker Hub). */
  domain: string;
  /** Host the distribution API answers on (`registry-1.docker.io` for Docker Hub). */
  apiHost: string;
  /** Repository path on that registry (`library/ubuntu`, `nvidia/cuda`). */
  repository: string;
  tag?: string;
  digest?: string;
  /** The short form Docker prints and the lock is keyed by: `nvidia/cuda:12.6.3-...`, `ubuntu:latest`. */
  familiar: string;
}

/** Parses an image reference as Docker does (a bare name means Docker Hub, `library/` for one component). */
export function parseImageRef(ref: string): ImageRef | undefined {
  if (ref.length === 0 || ref.length > 255 + 128 + 72) return undefined;
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) return undefined;
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) return undefined;
  }
  const parts = rest.split("/");
  let domain = "docker.io";
  if (parts.length > 1 && (parts[0].includes(".") || parts[0].includes(":") || parts[0] === "localhost")) {
    domain = parts.shift()!;
    if (!DOMAIN.test(domain)) return undefined;
  }
  if (parts.length === 0 || !parts.every((p) => COMPONENT.test(p))) return undefined;
  if (domain === "index.docker.io") domain = "docker.io";
  const hub = domain === "docker.io";
  const repository = hub && parts.length === 1 ? `library/${parts[0]}` : parts.join("/");
  const name = hub ? repository.replace(/^library\/(?=[^/]+$)/, "") : `${domain}/${repository}`;
  return { domain, apiHost: hub ? "registry-1.docker.io" : domain, repository, tag, digest, familiar: `${name}:${tag ?? "latest"}` };
}

/**
 * The key BuildKit looks a named build context up by for a FROM of this reference: its familiar form with
 * `:latest` dropped (dockerui's NamedContext: reference.FamiliarString, TrimSuffix ":latest").
 */
export function contextKey(familiar: string): string {
  return familiar.replace(/:latest$/, "");
}

// ---------------------------------------------------------------------------------------------------------------
// Build-arg substitution, as BuildKit expands FROM: ${NAME}, $NAME, ${NAME:-default}, ${NAME:+alternative}.

/**
 * Expands the variables of `word` from `scope`; an unset variable is empty, as in BuildKit. A word longer than
 * LIMITS.stringChars (no image reference is) is returned as it is, so a hostile Dockerfile costs linear time.
 */
export function expandArgs(word: string, scope: ReadonlyMap<string, string>): string {
  if (word.length > LIMITS.stringChars) return word;
  return word.replace(/\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])((?:[^{}]|\{[^{}]*\})*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, braced: string | undefined, op: string | undefined, operand: string | undefined, bare: string | undefined) => {
    if (m === "\\$") return "$";
    const name = braced ?? bare!;
    const value = scope.get(name);
    if (!op) return value ?? "";
    const set = op.startsWith(":") ? value !== undefined && value !== "" : value !== undefined;
    if (op.endsWith("-")) return set ? value! : expandArgs(operand ?? "", scope);
    return set ? expandArgs(operand ?? "", scope) : "";
  });
}

/** The automatic platform ARGs BuildKit defines for FROM lines, for one target platform. */
function platformArgs(target: string): [string, string][] {
  const [os, arch, variant = ""] = target.split("/");
  const [bos, barch, bvariant = ""] = BUILD_PLATFORM.split("/");
  return [
    ["TARGETPLATFORM", target],
    ["TARGETOS", os],
    ["TARGETARCH", arch],
    ["TARGETVARIANT", variant],
    ["BUILDPLATFORM", BUILD_PLATFORM],
    ["BUILDOS", bos],
    ["BUILDARCH", barch],
    ["BUILDVARIANT", bvariant],
  ];
}

export interface UpstreamOptions {
  /** The Dockerfile as messages name it. */
  dockerfile: string;
  /** The stage the build ends in (default: the last). */
  target?: string;
  /** Build args of the build (they override global ARG defaults). */
  args: Record<string, string>;
  platforms: string[];
  /** Build args that name an image strata pins itself (a runtime's BASE_IMAGE): FROMs using them are not locked. */
  trusted?: string[];
}

/**
 * Every upstream image a build of `target` starts FROM or copies from, after substitution, with the platforms it
 * is needed for; stage names, `scratch` and FROMs of a trusted build arg are left out. References the Dockerfile
 * already pins by digest need no lock: they come apart, in `pinned` (`familiar@sha256:…`). A FROM that does not give
 * an image reference is a problem at its Dockerfile line.
 */
export function upstreamImages(info: DockerfileInfo, opts: UpstreamOptions): { images: UpstreamImage[]; pinned: string[]; problems: Problem[] } {
  const stages = info.closure(opts.target);
  const stageNames = new Set(info.stageNames());
  const trusted = (opts.trusted ?? []).map((a) => new RegExp(`\\$\\{?${a}(\\}|\\b|:)`));
  const found = new Map<string, UpstreamImage>();
  const pinned = new Set<string>();
  const problems: Problem[] = [];
  const add = (word: string, line: number, platform: string, scope: Map<string, string>) => {
    if (trusted.some((re) => re.test(word))) return;
    const image = expandArgs(word, scope);
    if (image.toLowerCase() === "scratch" || stageNames.has(image.toLowerCase())) return;
    const at: Location = { file: opts.dockerfile, line, col: 1 };
    const ref = parseImageRef(image);
    if (!ref) {
      if (!problems.some((p) => p.line === line)) {
        problems.push({ ...at, message: `'${clip(word)}' gives '${clip(image)}' for ${platform}, which is not an image reference`, fix: "give the build arg a value (in the matrix or as the ARG's default) that makes a reference such as nvidia/cuda:12.6.3-runtime-ubuntu22.04" });
      }
      return;
    }
    if (ref.digest) {
      pinned.add(`${ref.tag ? ref.familiar : contextKey(ref.familiar)}@${ref.digest}`);
      return;
    }
    const known = found.get(ref.familiar);
    const entry: UpstreamImage = known ? { ref: known.ref, platforms: known.platforms, at: known.at } : { ref: ref.familiar, platforms: [], at };
    if (!entry.platforms.includes(platform)) entry.platforms.push(platform);
    found.set(ref.familiar, entry);
  };
  if (info.syntax) {
    const ref = parseImageRef(info.syntax.image);
    const at: Location = { file: opts.dockerfile, line: info.syntax.line, col: 1 };
    if (!ref) problems.push({ ...at, message: `'# syntax=${clip(info.syntax.image)}' does not name an image`, fix: "name the frontend image, e.g. # syntax=docker/dockerfile:1, or remove the line" });
    else if (ref.digest) pinned.add(`${ref.tag ? ref.familiar : contextKey(ref.familiar)}@${ref.digest}`);
    else found.set(ref.familiar, { ref: ref.familiar, platforms: [BUILD_PLATFORM], at, frontend: true });
  }
  for (const target of opts.platforms) {
    const scope = new Map(platformArgs(target));
    for (const { name, value } of info.globalArgDefaults) {
      scope.set(name, Object.hasOwn(opts.args, name) ? opts.args[name] : value !== undefined ? expandArgs(value, scope) : "");
    }
    for (const s of stages) {
      const flag = s.platform !== undefined ? expandArgs(s.platform, scope) : undefined;
      const platform = flag && PLATFORM.test(flag) ? flag : target;
      add(s.image, s.line, platform, scope);
      for (const c of s.copiesFrom) add(c.image, c.line, target, scope);
    }
  }
  const images = [...found.values()].map((i) => ({ ...i, platforms: i.platforms.sort() }));
  return { images: images.sort((a, b) => cmp(a.ref, b.ref)), pinned: [...pinned].sort(cmp), problems };
}

// ---------------------------------------------------------------------------------------------------------------
// The lock file.

const Digest = z.string().regex(DIGEST, "must be a sha256 digest: sha256: and 64 lowercase hex digits");
const LockedImageSchema = z.strictObject({
  /** What the tag resolved to: the index digest for a multi-platform image, else the manifest's. */
  digest: Digest,
  /** Platform → manifest digest, for each platform a build needs. */
  platforms: z
    .record(z.string().regex(PLATFORM, "is not a platform of the form os/arch (for example linux/amd64)"), Digest)
    .refine((p) => Object.keys(p).length >= 1, "must name at least one platform")
    .refine((p) => Object.keys(p).length <= LIMITS.platforms, `must have at most ${LIMITS.platforms} platforms`),
});

export const LockFileSchema = z.strictObject({
  version: z.literal(1),
  images: z
    .record(
      z
        .string()
        .max(LIMITS.stringChars)
        .refine((k) => parseImageRef(k)?.familiar === k, "is not an image reference in its short form with a tag (as strata lock writes it, e.g. nvidia/cuda:12.6.3-runtime-ubuntu22.04)"),
      LockedImageSchema,
    )
    .refine((i) => Object.keys(i).length <= LIMITS.lockImages, `must hold at most ${LIMITS.lockImages} images`),
});

export type LockFile = z.infer<typeof LockFileSchema>;
export type LockedImage = z.infer<typeof LockedImageSchema>;

/** Reads a lock file; undefined when there is none. A malformed one is a MatrixError at file:line:col. */
export function readLock(file: string, display = file): LockFile | undefined {
  if (!existsSync(file)) return undefined;
  let src: SourceFile;
  try {
    src = SourceFile.read(file, display, LIMITS.lockBytes);
  } catch (err) {
    if (err instanceof MatrixError) throw new MatrixError(err.problems.map((p) => ({ ...p, fix: `${p.fix}; or delete ${display} and run \`strata lock\`` })));
    throw err;
  }
  const problems = new Problems();
  const lock = validate(LockFileSchema, src.data, src, problems);
  if (problems.errors.length > 0) {
    throw new MatrixError(problems.errors.map((p) => ({ ...p, message: `lock file: ${p.message}`, fix: `${p.fix}; the file is written by \`strata lock\`: run it again rather than editing by hand` })));
  }
  return lock;
}

/** The lock's JSON text: images sorted by reference, platforms sorted, two-space indent, a final newline. */
export function formatLock(lock: LockFile): string {
  const images = Object.fromEntries(
    Object.keys(lock.images)
      .sort(cmp)
      .map((ref) => {
        const i = lock.images[ref];
        return [ref, { digest: i.digest, platforms: Object.fromEntries(Object.keys(i.platforms).sort(cmp).map((p) => [p, i.platforms[p]])) }];
      }),
  );
  return JSON.stringify({ version: 1, images }, null, 2) + "\n";
}

/** Every upstream image the plan's bases and runtimes need, with the union of their platforms. */
export function requiredImages(plan: Pick<BuildPlan, "bases" | "runtimes">): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  for (const x of [...plan.bases, ...plan.runtimes]) {
    for (const u of x.upstream ?? []) {
      const set = out.get(u.ref) ?? new Set<string>();
      for (const p of u.platforms) set.add(p);
      out.set(u.ref, set);
    }
  }
  return new Map([...out].sort(([a], [b]) => cmp(a, b)).map(([ref, set]) => [ref, [...set].sort()]));
}

/** How a lock compares with what the matrix needs. */
export interface LockStatus {
  /** Needed but not held: `ref` or `ref (platform)`. */
  missing: string[];
  /** Held but no longer needed: `ref` or `ref (platform)`. */
  extra: string[];
}

/** What a lock lacks (refs and platforms the matrix needs) and holds in excess (ones it no longer needs). */
export function lockStatus(lock: LockFile | undefined, required: Map<string, string[]>): LockStatus {
  const missing: string[] = [];
  const extra: string[] = [];
  const held = lock?.images ?? {};
  for (const [ref, platforms] of required) {
    const entry = held[ref];
    if (!entry) missing.push(ref);
    else for (const p of platforms) if (!Object.hasOwn(entry.platforms, p)) missing.push(`${ref} (${p})`);
  }
  for (const [ref, entry] of Object.entries(held).sort(([a], [b]) => cmp(a, b))) {
    const need = required.get(ref);
    if (!need) extra.push(ref);
    else for (const p of Object.keys(entry.platforms).sort()) if (!need.includes(p)) extra.push(`${ref} (${p})`);
  }
  return { missing, extra };
}

/**
 * An upstream image with its locked digests, when the lock holds it for every platform the build needs; else as
 * it was (built by tag).
 */
export function pin(image: UpstreamImage, lock: LockFile | undefined): UpstreamImage {
  const entry = lock?.images[image.ref];
  if (!entry || !image.platforms.every((p) => Object.hasOwn(entry.platforms, p))) return image;
  return { ...image, digest: entry.digest, platformDigests: Object.fromEntries(image.platforms.map((p) => [p, entry.platforms[p]])) };
}

/**
 * The named build contexts that make a build use the locked digests: for each pinned upstream image, its context
 * key → `docker-image://<ref>@<digest>`. BuildKit then resolves `FROM <ref>` (and `COPY --from=<ref>`) to that
 * content instead of the tag.
 */
export function namedContexts(images: readonly UpstreamImage[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const i of images ?? []) {
    if (i.digest && !i.frontend) out[contextKey(i.ref)] = `docker-image://${pinnedRef(i.ref, i.digest)}`;
  }
  return out;
}

/**
 * The build args that make a build use the locked Dockerfile frontend: `BUILDKIT_SYNTAX=<ref>@<digest>`, which
 * BuildKit takes over the `# syntax=` line (checked on the real engine); none when the frontend is not locked.
 */
export function frontendBuildArgs(images: readonly UpstreamImage[] | undefined): Record<string, string> {
  const frontend = images?.find((i) => i.frontend && i.digest);
  return frontend ? { BUILDKIT_SYNTAX: pinnedRef(frontend.ref, frontend.digest!) } : {};
}

/** `<registry>/<repository>:<tag>@<digest>`, Docker Hub spelt out. */
function pinnedRef(familiar: string, digest: string): string {
  const ref = parseImageRef(familiar)!;
  const name = ref.domain === "docker.io" ? `docker.io/${ref.repository}` : `${ref.domain}/${ref.repository}`;
  return `${name}:${ref.tag ?? "latest"}@${digest}`;
}

/** The upstream digests a base's identity covers: ref → platform → manifest digest (the content built). */
export function identityUpstream(images: readonly UpstreamImage[]): Record<string, { digest: string; platforms: Record<string, string> }> | undefined {
  const pinned = images.filter((i) => i.digest);
  if (pinned.length === 0) return undefined;
  return Object.fromEntries(pinned.map((i) => [i.ref, { digest: i.digest!, platforms: i.platformDigests ?? {} }]));
}

/** The one line `check`, `plan` and `bake` print when the lock is missing or stale; undefined when it is current. */
export function lockWarning(plan: Pick<BuildPlan, "lock">): string | undefined {
  const l = plan.lock;
  if (!l || (l.exists && l.missing.length === 0 && l.extra.length === 0) || (!l.exists && l.missing.length === 0)) return undefined;
  const fix = `run \`strata lock\` and commit ${l.file}`;
  if (!l.exists) return `strata: warning: no lock file ${l.file}: ${l.missing.length} upstream image(s) are built by tag; ${fix}`;
  const parts = [...(l.missing.length ? [`not locked: ${list(l.missing)}`] : []), ...(l.extra.length ? [`no longer used: ${list(l.extra)}`] : [])];
  return `strata: warning: ${l.file} is stale (${parts.join("; ")}); ${fix}`;
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 197)}...` : s;
}

function list(items: string[]): string {
  return items.length <= 3 ? items.join(", ") : `${items.slice(0, 3).join(", ")} and ${items.length - 3} more`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
