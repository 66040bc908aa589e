import { closeSync, constants, existsSync, fstatSync, openSync, readSync, realpathSync, type Stats } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";

/**
 * What strata accepts, stated once (the README's matrix section lists the same numbers). Files above their limit
 * are refused before they are read; values above theirs are errors at their line.
 */
export const LIMITS = {
  /** A matrix file (strata.yaml). */
  matrixBytes: 1 << 20,
  /** A derive source (a JSON or YAML list of consumer entries). */
  sourceBytes: 16 << 20,
  /** A Dockerfile. */
  dockerfileBytes: 1 << 20,
  /** A .dockerignore (or <Dockerfile>.dockerignore). */
  ignoreBytes: 1 << 20,
  /** A lock of upstream images (<matrix>.lock.json). */
  lockBytes: 4 << 20,
  /** Images one lock file holds. */
  lockImages: 10_000,
  /** A stack file, Pulumi.<stack>.yaml. */
  stackBytes: 1 << 20,
  /** Files one build context may hold (after .dockerignore); each is hashed in chunks, so their size is free. */
  contextFiles: 100_000,
  /** Nesting of lists and mappings in a matrix or derive source. */
  depth: 32,
  /** Any string in the matrix: names, paths, templates, build arg values, mapped consumer fields. */
  stringChars: 4096,
  /** Build args of one image. */
  args: 256,
  /** Platforms of one image. */
  platforms: 16,
  /** Tag templates of one runtime. */
  tags: 32,
  /** Declared bases, and bases a derive section may produce. */
  bases: 1000,
  /** Declared runtimes, and consumer entries of a derive section. */
  runtimes: 100_000,
  /** Mapped fields, key fields and map entries of a derive section. */
  deriveFields: 256,
  /** A derive `pattern` (a JavaScript regular expression). */
  patternChars: 1000,
} as const;

/** Why a file cannot be read: a message and what to do, located by the caller. */
export class FileProblem extends Error {
  constructor(
    message: string,
    readonly fix: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * Reads a regular file of at most `maxBytes` as UTF-8. Opened without blocking and checked with fstat on the open
 * descriptor, so a FIFO, a device or a directory is refused at once instead of hanging or growing without limit;
 * at most `maxBytes + 1` bytes are read even when the file grows meanwhile.
 */
export function readRegularFile(path: string, maxBytes: number, what = "file"): string {
  const fd = openFile(path);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw notRegular(st, what);
    if (st.size > maxBytes) throw tooBig(st.size, maxBytes, what);
    const buf = Buffer.alloc(Math.min(st.size, maxBytes) + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n > maxBytes) throw tooBig(n, maxBytes, what);
      if (n === buf.length) break;
    }
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** Opens a file for reading without blocking (a FIFO opens at once); errors become FileProblems. */
export function openFile(path: string): number {
  try {
    return openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new FileProblem("file not found", "check the path (it is relative to the matrix file)", "ENOENT");
    if (code === "ENXIO") throw new FileProblem("is a socket, not a regular file", "point at a regular file", code);
    if (code === "EACCES" || code === "EPERM") throw new FileProblem("permission denied", "make the file readable", code);
    throw new FileProblem(`cannot read the file (${code ?? String(err)})`, "point at a readable regular file", code);
  }
}

export function notRegular(st: Stats, what: string): FileProblem {
  const kind = st.isDirectory() ? "a directory" : st.isFIFO() ? "a FIFO (named pipe)" : st.isCharacterDevice() || st.isBlockDevice() ? "a device" : st.isSocket() ? "a socket" : "not a regular file";
  return new FileProblem(`the ${what} is ${kind}, not a regular file`, "point at a regular file committed to the repository", "ENOTREG");
}

function tooBig(size: number, maxBytes: number, what: string): FileProblem {
  return new FileProblem(`the ${what} is larger than strata reads (${size} bytes; at most ${maxBytes})`, `keep the ${what} under ${formatBytes(maxBytes)} (see the limits in the README's matrix section)`, "EFBIG");
}

export function formatBytes(n: number): string {
  return n >= 1 << 20 && n % (1 << 20) === 0 ? `${n / (1 << 20)} MiB` : `${n} bytes`;
}

/**
 * The repository a matrix belongs to: the git work tree containing it (the nearest directory holding `.git`, a
 * directory or a worktree's file), else the matrix's own directory. Everything a build reads must be inside it,
 * so that a commit holds every input of a base's identity. Returned as a real path.
 */
export function repositoryRoot(matrixDir: string): string {
  const start = realpathOr(matrixDir);
  for (let d = start; ; d = dirname(d)) {
    if (existsSync(join(d, ".git"))) return d;
    if (dirname(d) === d) return start;
  }
}

/**
 * Where a path given in the matrix leads, and whether that is inside `root` once `..` and symlinks are resolved.
 * A path that does not exist is judged by its nearest existing ancestor (its own absence is reported elsewhere).
 */
export function confine(root: string, base: string, rel: string): { abs: string; real: string; inside: boolean } {
  const abs = resolve(base, rel);
  let real = abs;
  let rest = "";
  for (;;) {
    try {
      real = join(realpathSync(real), rest);
      break;
    } catch {
      const parent = dirname(real);
      if (parent === real) break;
      rest = join(real.slice(parent.length + 1), rest);
      real = parent;
    }
  }
  const r = relative(root, real);
  return { abs, real, inside: r === "" || (!r.startsWith(`..${sep}`) && r !== ".." && !isAbsolute(r)) };
}

function realpathOr(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}
