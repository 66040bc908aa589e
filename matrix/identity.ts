import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join, relative, sep } from "node:path";
import dockerignore from "@balena/dockerignore";

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
  });
  return createHash("sha256").update(canonical).digest("hex");
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
 * cost one walk.
 */
export function hashContext(contextDir: string, ignoreFile?: string, exclude: string[] = [], cache?: Map<string, ContextDigest>): ContextDigest {
  const ignoreText = ignoreFile ? readFileSync(ignoreFile, "utf8") : "";
  const key = `${contextDir}\0${ignoreText}\0${exclude.join("\0")}`;
  const hit = cache?.get(key);
  if (hit) return hit;

  const patterns = ignoreText.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const ig = dockerignore.default({ ignorecase: false }).add(patterns);
  const hasExceptions = patterns.some((p) => p.startsWith("!"));
  const excluded = new Set(exclude);
  const files: Record<string, string> = {};

  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = join(dir, entry.name);
      const rel = relative(contextDir, abs).split(sep).join("/");
      if (rel === ".git" || excluded.has(rel)) continue;
      const ignored = ig.ignores(rel);
      if (entry.isDirectory()) {
        if (!ignored || hasExceptions) walk(abs);
      } else if (!ignored) {
        files[rel] = fileDigest(abs);
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

function fileDigest(path: string): string {
  const st = lstatSync(path);
  const h = createHash("sha256");
  if (st.isSymbolicLink()) h.update(`symlink:${readlinkSync(path)}`);
  else h.update(readFileSync(path));
  // The executable bit changes the image; other mode bits and times do not (BuildKit normalises them).
  h.update(st.mode & 0o111 ? ":x" : ":-");
  return h.digest("hex");
}
