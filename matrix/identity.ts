import { createHash } from "node:crypto";
import { closeSync, existsSync, fstatSync, lstatSync, readdirSync, readlinkSync, readSync, type Dirent } from "node:fs";
import { join, relative, sep } from "node:path";
import dockerignore from "@balena/dockerignore";
import { FileProblem, LIMITS, notRegular, openFile, readRegularFile } from "./files.ts";

/** The digest of a build context: one sha256 per file that the build can see, after .dockerignore. */
export interface ContextDigest {
  /** Context-relative path (forward slashes) to the file's sha256. */
  files: Record<string, string>;
  digest: string;
}

/** Everything that changes a base image; its hash is the base's identity. Paths are kept for explanations only. */
export interface IdentityInputs {
  dockerfileDigest: string;
  target: string;
  args: Record<string, string>;
  platforms: string[];
  contextDigest: string;
  /**
   * Locked upstream images: ref → the digest its tag was locked to and the manifest digest per platform built.
   * The identity covers the per-platform digests (the content built); absent when nothing is locked, which keeps
   * the identities of unlocked matrices as they were.
   */
  upstream?: Record<string, { digest: string; platforms: Record<string, string> }>;
}

/** Length of the hash in a base tag: 12 hex digits (48 bits), as short as git's abbreviated ids. */
export const TAG_HASH_LENGTH = 12;

/** The content-addressed identity: a sha256 over the canonical form of the inputs. */
export function identityHash(inputs: IdentityInputs): string {
  const canonical = JSON.stringify({
    dockerfile: inputs.dockerfileDigest,
    target: inputs.target,
    args: Object.fromEntries(Object.entries(inputs.args).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    platforms: [...inputs.platforms].sort(),
    context: inputs.contextDigest,
    ...(inputs.upstream && Object.keys(inputs.upstream).length > 0 ? { upstream: canonicalUpstream(inputs.upstream) } : {}),
  });
  return createHash("sha256").update(canonical).digest("hex");
}

function canonicalUpstream(upstream: NonNullable<IdentityInputs["upstream"]>): [string, [string, string][]][] {
  const byKey = <T>(entries: [string, T][]) => entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return byKey(Object.entries(upstream)).map(([ref, u]) => [ref, byKey(Object.entries(u.platforms))]);
}

/** A base's tag: its readable prefix and the short identity hash. */
export function identityTag(prefix: string, hash: string): string {
  return `${prefix}-${hash.slice(0, TAG_HASH_LENGTH)}`;
}

/**
 * The ignore rules BuildKit applies to a build: `<Dockerfile>.dockerignore` beside the Dockerfile when present,
 * else `.dockerignore` at the context root.
 */
export function ignoreFileFor(contextDir: string, dockerfilePath: string): string | undefined {
  const specific = `${dockerfilePath}.dockerignore`;
  if (existsSync(specific)) return specific;
  const general = join(contextDir, ".dockerignore");
  return existsSync(general) ? general : undefined;
}

/**
 * Hashes every file of a build context that .dockerignore lets through. `.git` is never hashed: it changes with
 * every commit and belongs in .dockerignore anyway. With a `cache` (one per matrix load), bases sharing a context
 * cost one walk. A symlink is hashed as the link (its target path), never followed, as BuildKit sends it; a FIFO,
 * socket or device, a context of more than LIMITS.contextFiles files, or an unreadable ignore file or directory
 * is a FileProblem naming the path.
 */
export function hashContext(contextDir: string, ignoreFile?: string, exclude: string[] = [], cache?: Map<string, ContextDigest>): ContextDigest {
  let ignoreText = "";
  if (ignoreFile) {
    try {
      ignoreText = readRegularFile(ignoreFile, LIMITS.ignoreBytes, "ignore file");
    } catch (err) {
      if (err instanceof FileProblem) throw new FileProblem(`${ignoreFile}: ${err.message}`, err.fix, err.code);
      throw err;
    }
  }
  const key = `${contextDir}\0${ignoreText}\0${exclude.join("\0")}`;
  const hit = cache?.get(key);
  if (hit) return hit;

  const patterns = ignoreText.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const ig = dockerignore.default({ ignorecase: false }).add(patterns);
  const hasExceptions = patterns.some((p) => p.startsWith("!"));
  const excluded = new Set(exclude);
  const files: Record<string, string> = {};
  let count = 0;

  const walk = (dir: string) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      throw new FileProblem(`cannot list ${relative(contextDir, dir) || "."} in the build context (${(err as NodeJS.ErrnoException).code ?? String(err)})`, "make the directory readable, or add it to .dockerignore");
    }
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = join(dir, entry.name);
      const rel = relative(contextDir, abs).split(sep).join("/");
      if (rel === ".git" || excluded.has(rel)) continue;
      const ignored = ig.ignores(rel);
      if (entry.isDirectory()) {
        if (!ignored || hasExceptions) walk(abs);
      } else if (!ignored) {
        if (!entry.isFile() && !entry.isSymbolicLink()) {
          throw new FileProblem(`the build context holds ${rel}, which is ${specialKind(entry)}`, `add ${rel} to .dockerignore (or remove it): only regular files, directories and symlinks go into a build`);
        }
        if (++count > LIMITS.contextFiles) {
          throw new FileProblem(`the build context holds more than ${LIMITS.contextFiles} files`, "narrow the context (a subdirectory) or exclude files in .dockerignore");
        }
        files[rel] = fileDigest(abs, rel);
      }
    }
  };
  walk(contextDir);

  const h = createHash("sha256");
  for (const [rel, digest] of Object.entries(files)) h.update(`${rel}\0${digest}\n`);
  const result = { files, digest: h.digest("hex") };
  cache?.set(key, result);
  return result;
}

/** A file's sha256, read in chunks (memory stays flat for large files); a symlink's is that of its target path. */
function fileDigest(path: string, rel: string): string {
  const h = createHash("sha256");
  let mode: number;
  const link = lstatSync(path);
  if (link.isSymbolicLink()) {
    h.update(`symlink:${readlinkSync(path)}`);
    mode = link.mode;
  } else {
    let fd: number;
    try {
      fd = openFile(path);
    } catch (err) {
      if (err instanceof FileProblem) throw new FileProblem(`${rel} in the build context: ${err.message}`, err.fix, err.code);
      throw err;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new FileProblem(`${rel} in the build context: ${notRegular(st, "file").message}`, `add ${rel} to .dockerignore`);
      mode = st.mode;
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
  }
  // The executable bit changes the image; other mode bits and times do not (BuildKit normalises them).
  h.update(mode & 0o111 ? ":x" : ":-");
  return h.digest("hex");
}

function specialKind(entry: Dirent): string {
  if (entry.isFIFO()) return "a FIFO (named pipe)";
  if (entry.isSocket()) return "a socket";
  if (entry.isCharacterDevice() || entry.isBlockDevice()) return "a device";
  return "not a regular file";
}
