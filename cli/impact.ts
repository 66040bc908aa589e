import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, posix, relative, resolve, sep } from "node:path";
import { formatProblem, MatrixError, type Problem } from "../matrix/errors.ts";
import { DEFAULT_RUNTIME_SHARD_SIZE, runtimeShards, shardsRuntimes, shardStackName } from "../components/shard-stacks.ts";
import { comparePlans, formatImpact, impactJson, touchedRuntimeShards, type ImpactReport, type PlanSide } from "../matrix/impact.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { FORECAST_OPTIONS, FORECAST_USAGE, forecastForReport, forecastJson, forecastText } from "./forecast.ts";
import { RegistryError } from "./registry.ts";
import { parseFlags } from "./args.ts";
import { readStackFile } from "./stack.ts";

export const IMPACT_USAGE = `Usage:
  strata impact [--base REV] [--head REV] [--matrix PATH] [--stack NAME] [--json]

Compares the build plan at two git revisions and lists every base whose identity changes and why (build arg,
context file, Dockerfile stage, ignore file, platforms, target, consumer fields), the runtimes that follow,
entries added or removed, and entries renamed without a rebuild.

  --base REV     default: the merge-base of HEAD with origin/HEAD, else main, else master
  --head REV     default: the working tree as it is (uncommitted and untracked files included)
  --matrix PATH  default: the stack's strata:matrix, else strata.yaml (a path in the working tree)
  --stack NAME   stack whose Pulumi.<stack>.yaml names the matrix (default dev)
  --json         print one JSON object: {base, head, bases[], runtimes{added,removed,rebuilt,renamed}, rebuild{bases,runtimes},
                 shards{bases,runtimes}, forecast}: shards are the base shard stacks (<stack>-base-<name>) and runtime
                 shards (runtimes-<k>, above the stack's strata:runtimeShardSize) the change touches
${FORECAST_USAGE}

Exit status:
  0  the comparison ran; this is 0 whether or not something must be rebuilt (read rebuild.bases/runtimes)
  1  the matrix is invalid at one of the revisions (its errors are printed, naming the revision)
  2  usage or git error: unknown option or revision, not a git repository, matrix at neither revision`;

/** A usage or git problem: exit 2. */
export class ImpactUsageError extends Error {}

/** The matrix is invalid at one revision: exit 1. */
export class RevisionMatrixError extends Error {
  constructor(
    readonly revision: string,
    readonly problems: Problem[],
  ) {
    super(`the matrix is invalid at ${revision}:\n${problems.map((p) => formatProblem(p)).join("\n")}`);
  }
}

export interface ImpactOptions {
  /** Where git runs and relative paths start (default: process.cwd()). */
  cwd?: string;
  /** Base revision; default: merge-base of HEAD with the default branch. */
  base?: string;
  /** Head revision; undefined means the working tree. */
  head?: string;
  /** Matrix file, relative to cwd (in the working tree). */
  matrix: string;
  /** The stack whose shard stacks the report names (its Pulumi.<stack>.yaml gives strata:runtimeShardSize). Default dev. */
  stack?: string;
}

export interface ImpactResult {
  report: ImpactReport;
  /** Resolved commit of the base revision. */
  baseSha: string;
  headSha: string | null;
  /** Notes for the human output (e.g. "the matrix does not exist at base: everything is added"). */
  notes: string[];
  /** Matrix path relative to the repository root. */
  matrix: string;
  /** The build plans compared (empty plans where the matrix is missing); the head's feeds the rebuild forecast. */
  plans: { base: BuildPlan; head: BuildPlan };
}

/** Runs git in `cwd`; throws ImpactUsageError with git's message on failure. */
export function git(cwd: string, args: string[], input?: string | Buffer): Buffer {
  const res = spawnSync("git", args, { cwd, input, maxBuffer: 1 << 30 });
  if (res.error) throw new ImpactUsageError(`cannot run git: ${res.error.message}`);
  if (res.status !== 0) throw new ImpactUsageError(`git ${args.join(" ")}: ${res.stderr.toString().trim() || `exit ${res.status}`}`);
  return res.stdout;
}

/** Resolves a revision to a commit sha, or throws ImpactUsageError naming the revision. */
export function resolveRevision(top: string, rev: string): string {
  const res = spawnSync("git", ["rev-parse", "--verify", "--quiet", "--end-of-options", `${rev}^{commit}`], { cwd: top });
  if (res.status !== 0) throw new ImpactUsageError(`unknown revision '${rev}'`);
  return res.stdout.toString().trim();
}

/** The default base: merge-base of HEAD with origin/HEAD if it exists, else main, else master. */
export function defaultBase(top: string): { label: string; sha: string } {
  for (const ref of ["refs/remotes/origin/HEAD", "refs/heads/main", "refs/heads/master"]) {
    const ok = spawnSync("git", ["rev-parse", "--verify", "--quiet", ref], { cwd: top }).status === 0;
    if (!ok) continue;
    const res = spawnSync("git", ["merge-base", "HEAD", ref], { cwd: top });
    if (res.status !== 0) throw new ImpactUsageError(`no merge-base between HEAD and ${ref.replace(/^refs\/(heads|remotes)\//, "")}; pass --base REV`);
    const sha = res.stdout.toString().trim();
    return { label: sha, sha };
  }
  throw new ImpactUsageError("no default branch (origin/HEAD, main or master) to compare with; pass --base REV");
}

/**
 * Writes the files of `rev` under `subdir` (repository-relative, "" for all) into `dest`, keeping repository
 * paths. One `git ls-tree` lists them and one `git cat-file --batch --filters` streams their contents, so files
 * read as a checkout would write them (eol conversion, smudge filters such as LFS); the executable bit and symlinks
 * are kept, since both change a context's digest. Returns the paths written.
 */
export function materialize(top: string, sha: string, subdir: string, dest: string): Set<string> {
  const listing = git(top, ["ls-tree", "-r", "-z", "--full-tree", sha, "--", subdir === "" ? "." : subdir]).toString("utf8");
  const entries: { mode: string; sha: string; path: string }[] = [];
  const written = new Set<string>();
  for (const rec of listing.split("\0")) {
    if (!rec) continue;
    const tab = rec.indexOf("\t");
    const [mode, type, objectSha] = rec.slice(0, tab).split(" ");
    const path = rec.slice(tab + 1);
    if (type === "commit") {
      mkdirSync(join(dest, path), { recursive: true }); // a submodule: an empty directory, as an uninitialised checkout
      continue;
    }
    if (type !== "blob" || path.includes("\n")) continue;
    entries.push({ mode, sha: objectSha, path });
  }
  if (entries.length === 0) return written;
  const input = entries.map((e) => `${e.sha} ${e.path}\n`).join("");
  const out = git(top, ["cat-file", "--batch", "--filters"], input);
  let pos = 0;
  const dirs = new Set<string>();
  for (const e of entries) {
    const nl = out.indexOf(10, pos);
    const header = out.subarray(pos, nl).toString("utf8");
    const size = Number(header.split(" ")[2]);
    if (!header.includes(" blob ") || !Number.isFinite(size)) throw new ImpactUsageError(`git cat-file: unexpected '${header}' for ${e.path}`);
    const content = out.subarray(nl + 1, nl + 1 + size);
    pos = nl + 1 + size + 1;
    const abs = join(dest, e.path);
    const dir = dirname(abs);
    if (!dirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      dirs.add(dir);
    }
    if (e.mode === "120000") symlinkSync(content.toString("utf8"), abs);
    else writeFileSync(abs, content, { mode: e.mode === "100755" ? 0o755 : 0o644 });
    written.add(e.path);
  }
  return written;
}

function emptyPlan(file: string): BuildPlan {
  return { file, dir: dirname(file), bases: [], runtimes: [], warnings: [] };
}

/** True when a plan reads something outside `dir` (a context or Dockerfile with `..`). */
function escapes(plan: BuildPlan, root: string): boolean {
  const inside = (p: string) => {
    const rel = relative(root, resolve(plan.dir, p));
    return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
  };
  return [...plan.bases, ...plan.runtimes].some((x) => !inside(x.context) || !inside(x.dockerfile));
}

/** Problems located in a temporary checkout, re-pointed at `<rev>:<repository path>`. */
function relocate(problems: Problem[], tmp: string, label: string): Problem[] {
  return problems.map((p) => {
    const abs = resolve(p.file);
    const rel = relative(tmp, abs);
    return rel.startsWith("..") || isAbsolute(rel) ? p : { ...p, file: `${label}:${rel.split(sep).join("/")}` };
  });
}

interface LoadedSide {
  side: PlanSide;
  missing: boolean;
  cleanup: () => void;
}

/**
 * The plan at one revision. Only the matrix file's directory is written out first (everything a plan names is
 * relative to it); when the plan reaches outside that directory, or fails to load, the whole tree is written out
 * and the plan loaded again, so a `../` context or a file elsewhere still reads as at the revision.
 */
function planAtRevision(top: string, sha: string, label: string, matrixRel: string): LoadedSide {
  const tmp = realpathSync(mkdtempSync(join(tmpdir(), "strata-impact-")));
  const cleanup = () => rmSync(tmp, { recursive: true, force: true });
  try {
    const matrixDir = posix.dirname(matrixRel) === "." ? "" : posix.dirname(matrixRel);
    const file = join(tmp, matrixRel);
    const read = (p: string) => {
      const abs = join(dirname(file), p);
      return existsSync(abs) ? readFileSync(abs, "utf8") : undefined;
    };
    const written = materialize(top, sha, matrixDir, tmp);
    if (!written.has(matrixRel)) return { side: { plan: emptyPlan(file) }, missing: true, cleanup };
    if (matrixDir !== "") {
      let plan: BuildPlan | undefined;
      try {
        plan = loadMatrix(file, { root: tmp });
      } catch (err) {
        if (!(err instanceof MatrixError)) throw err;
      }
      if (plan && !escapes(plan, join(tmp, matrixDir))) return { side: { plan, read }, missing: false, cleanup };
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      materialize(top, sha, "", tmp);
    }
    try {
      return { side: { plan: loadMatrix(file, { root: tmp }), read }, missing: false, cleanup };
    } catch (err) {
      if (err instanceof MatrixError) throw new RevisionMatrixError(label, relocate(err.problems, tmp, label));
      throw err;
    }
  } catch (err) {
    cleanup();
    throw err;
  }
}

function planInWorktree(matrixAbs: string, top: string): LoadedSide {
  const read = (p: string) => {
    const abs = join(dirname(matrixAbs), p);
    return existsSync(abs) ? readFileSync(abs, "utf8") : undefined;
  };
  if (!existsSync(matrixAbs)) return { side: { plan: emptyPlan(matrixAbs) }, missing: true, cleanup: () => {} };
  try {
    return { side: { plan: loadMatrix(matrixAbs, { root: top }), read }, missing: false, cleanup: () => {} };
  } catch (err) {
    if (err instanceof MatrixError) throw new RevisionMatrixError("the working tree", err.problems);
    throw err;
  }
}

/** Computes the impact of the change from `base` to `head` (default: the working tree) on the matrix. */
export function computeImpact(opts: ImpactOptions): ImpactResult {
  const cwd = resolve(opts.cwd ?? process.cwd());
  const topRes = spawnSync("git", ["rev-parse", "--show-toplevel"], { cwd });
  if (topRes.error) throw new ImpactUsageError(`cannot run git: ${topRes.error.message}`);
  if (topRes.status !== 0) throw new ImpactUsageError(`${cwd} is not in a git repository (git: ${topRes.stderr.toString().trim()})`);
  const top = realpathSync(topRes.stdout.toString().trim());
  const matrixAbs = resolve(cwd, opts.matrix);
  const real = existsSync(matrixAbs) ? realpathSync(matrixAbs) : join(realpathSync(dirname(matrixAbs)), posix.basename(matrixAbs));
  const matrixRel = relative(top, real).split(sep).join("/");
  if (matrixRel.startsWith("..") || isAbsolute(matrixRel)) throw new ImpactUsageError(`the matrix ${opts.matrix} is outside the repository ${top}`);

  const base = opts.base !== undefined ? { label: opts.base, sha: resolveRevision(top, opts.base) } : defaultBase(top);
  const headSha = opts.head !== undefined ? resolveRevision(top, opts.head) : null;
  const headLabel = opts.head ?? "worktree";

  const sides: LoadedSide[] = [];
  try {
    const oldSide = planAtRevision(top, base.sha, base.label, matrixRel);
    sides.push(oldSide);
    const newSide = headSha ? planAtRevision(top, headSha, headLabel, matrixRel) : planInWorktree(real, top);
    sides.push(newSide);
    if (oldSide.missing && newSide.missing) throw new ImpactUsageError(`the matrix ${matrixRel} exists at neither ${base.label} nor ${headLabel}`);
    const notes: string[] = [];
    if (oldSide.missing) notes.push(`${matrixRel} does not exist at ${base.label}: every entry is added`);
    if (newSide.missing) notes.push(`${matrixRel} does not exist at ${headLabel}: every entry is removed`);
    const report = comparePlans(oldSide.side, newSide.side, { base: base.label, head: headLabel });
    const stack = opts.stack ?? "dev";
    report.shards = shardsOf({ report, plans: { base: oldSide.side.plan, head: newSide.side.plan } }, stack, runtimeShardSizeOf(stack, cwd));
    return { report, baseSha: base.sha, headSha, notes, matrix: matrixRel, plans: { base: oldSide.side.plan, head: newSide.side.plan } };
  } finally {
    for (const s of sides) s.cleanup();
  }
}

/** The matrix the command reads: --matrix, else the stack's strata:matrix, else strata.yaml. */
export function matrixFor(values: { matrix?: string; stack?: string }): string {
  if (values.matrix) return values.matrix;
  const { config } = readStackFile(values.stack ?? "dev");
  return (config["strata:matrix"] as string | undefined) ?? "strata.yaml";
}

/**
 * The shard stacks of `stack` a change touches: base shards of the bases to rebuild, and runtime shards by the
 * stack's strata:runtimeShardSize, compared at both revisions.
 */
export function shardsOf(result: Pick<ImpactResult, "report" | "plans">, stack: string, size: number): { bases: string[]; runtimes: string[] } {
  try {
    const groups = (plan: BuildPlan) => (shardsRuntimes(plan, size) ? runtimeShards(plan, stack, size) : []);
    return {
      bases: result.report.rebuild.bases.map((b) => shardStackName(stack, b)),
      runtimes: touchedRuntimeShards(result.report, groups(result.plans.base), groups(result.plans.head)),
    };
  } catch (err) {
    throw new ImpactUsageError(`shard stacks of '${stack}': ${(err as Error).message}`);
  }
}

/** The stack's strata:runtimeShardSize (Pulumi.<stack>.yaml in `dir`), else the default. */
function runtimeShardSizeOf(stack: string, dir: string): number {
  const size = readStackFile(stack, dir).config["strata:runtimeShardSize"];
  return typeof size === "number" && Number.isInteger(size) && size >= 1 ? size : DEFAULT_RUNTIME_SHARD_SIZE;
}

/** `strata impact`: parses its flags, prints the table or JSON, returns the exit status. */
export async function impactCommand(args: string[]): Promise<number> {
  const flags = parseFlags("impact", IMPACT_USAGE, args, {
    base: { type: "string" },
    head: { type: "string" },
    matrix: { type: "string" },
    stack: { type: "string" },
    json: { type: "boolean" },
    ...FORECAST_OPTIONS,
  });
  if (flags.exit !== undefined) return flags.exit;
  const values = flags.values;
  try {
    const result = computeImpact({ base: values.base, head: values.head, matrix: matrixFor(values), stack: values.stack });
    for (const n of result.notes) process.stderr.write(`strata impact: ${n}\n`);
    const forecast = await forecastForReport(result.report, result.plans.head, values);
    const text = values.json
      ? JSON.stringify({ ...impactJson(result.report), forecast: forecastJson(forecast) }, null, 2)
      : formatImpact(result.report, { baseSha: result.baseSha, matrix: result.matrix }) + forecastText(forecast, values);
    process.stdout.write(text + "\n");
    return 0;
  } catch (err) {
    if (err instanceof ImpactUsageError) {
      process.stderr.write(`strata impact: ${err.message}\n`);
      return 2;
    }
    if (err instanceof RevisionMatrixError) {
      process.stderr.write(`${err.problems.map((p) => formatProblem(p)).join("\n")}\n`);
      process.stderr.write(`strata impact: the matrix is invalid at ${err.revision}: ${err.problems.length} error(s)\n`);
      return 1;
    }
    if (err instanceof RegistryError) {
      process.stderr.write(`strata impact: reading the build history: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
