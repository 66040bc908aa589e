import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { checkBuildArgs } from "./checks.ts";
import { deriveBases, mapField, sourceFieldOf, type Consumer } from "./derive.ts";
import { DockerfileInfo } from "./dockerfile.ts";
import { lazyLocation, MatrixError, Problems, type Location, type Problem } from "./errors.ts";
import { confine, FileProblem, LIMITS, readRegularFile, repositoryRoot } from "./files.ts";
import { hashContext, identityHash, identityTag, ignoreFileFor, type ContextDigest } from "./identity.ts";
import { identityUpstream, lockFileFor, lockStatus, pin, readLock, requiredImages, upstreamImages, type LockFile } from "./lock.ts";
import {
  DEFAULT_RUNTIME_TAGS,
  OCI_TAG,
  TAG_PLACEHOLDERS,
  renderTemplate,
  type BasePlan,
  type BuildPlan,
  type RuntimePlan,
  type UpstreamImage,
} from "./plan.ts";
import { closest, MatrixFileSchema, PLATFORM, validate, type DeriveSpec, type MatrixFile } from "./schema.ts";
import { SourceFile, type Path } from "./source.ts";

/** A base or runtime before files are read, with the means to locate each of its fields. */
interface Draft {
  name: string;
  context: string;
  dockerfile: string;
  target?: string;
  args: Record<string, string>;
  platforms: string[];
  at: Location;
  fieldAt: (field: string) => Location;
  argAt: (arg: string) => Location;
}

interface BaseDraft extends Draft {
  cuda?: string;
  tagPrefix: string;
  key?: Record<string, string>;
}

interface RuntimeDraft extends Draft {
  base: string;
  tags: string[];
  tagsAt: (i: number) => Location;
  fields?: Record<string, string>;
}

const DEFAULT_PLATFORMS = ["linux/amd64"];
const CUDA_VERSION_RE = /^\d+\.\d+(\.\d+)?$/;

export interface LoadOptions {
  /**
   * The repository every build input must be inside. Default: the git work tree containing the matrix, else the
   * matrix's directory (see repositoryRoot).
   */
  root?: string;
  /**
   * Read the lock file beside the matrix (`<name>.lock.json`) and build and identify with its digests. Default
   * true; `strata lock`, which rewrites the file, loads without it.
   */
  lock?: boolean;
}

/**
 * Loads, validates and derives a matrix file into a build plan. Every problem found is reported together as
 * one MatrixError (file:line:col, what is wrong, what to do); warnings travel in the plan.
 */
export function loadMatrix(file: string, opts: LoadOptions = {}): BuildPlan {
  const src = SourceFile.read(file);
  const problems = new Problems();
  if (src.data === null || src.data === undefined || (typeof src.data === "object" && Object.keys(src.data).length === 0)) {
    throw new MatrixError([{ file, line: 1, col: 1, message: "the matrix is empty", fix: "declare `bases:` (and `runtimes:`), or a `derive:` section; see strata.yaml in the strata repository" }]);
  }
  const spec = validate(MatrixFileSchema, src.data, src, problems);
  problems.throwIfAny();
  const dir = dirname(resolve(file));
  const root = opts.root !== undefined ? repositoryRoot(opts.root) : repositoryRoot(dir);
  const m = spec!;

  const bases: BaseDraft[] = [];
  const runtimes: RuntimeDraft[] = [];
  const defaultPlatforms = m.defaults?.platforms ?? DEFAULT_PLATFORMS;
  const defaultTags = m.defaults?.runtimeTags ?? DEFAULT_RUNTIME_TAGS;
  const tagsAtDefault = (i: number) => (m.defaults?.runtimeTags ? src.locate(["defaults", "runtimeTags", i]) : src.locate([]));

  (m.bases ?? []).forEach((b, i) => {
    const at = (p: Path) => src.locate(["bases", i, ...p]);
    checkNumbersAsWritten(src, ["bases", i, "args"], b.args ?? {}, problems);
    bases.push({
      name: b.name,
      context: b.context ?? ".",
      dockerfile: b.dockerfile,
      target: b.target,
      args: { ...(b.cuda ? { CUDA_VERSION: b.cuda } : {}), ...(b.args ?? {}) },
      platforms: b.platforms ?? defaultPlatforms,
      cuda: b.cuda,
      tagPrefix: b.tagPrefix ?? b.name,
      at: at([]),
      fieldAt: (f) => at([f]),
      argAt: (a) => (b.args && Object.hasOwn(b.args, a) ? at(["args", a]) : at(["cuda"])),
    });
  });

  (m.runtimes ?? []).forEach((r, i) => {
    const at = (p: Path) => src.locate(["runtimes", i, ...p]);
    const base = m.bases?.find((b) => b.name === r.base);
    runtimes.push({
      name: r.name,
      base: r.base,
      context: r.context ?? ".",
      dockerfile: r.dockerfile,
      target: r.target,
      args: r.args ?? {},
      platforms: r.platforms ?? base?.platforms ?? defaultPlatforms,
      tags: r.tags ?? defaultTags,
      tagsAt: (t) => (r.tags ? at(["tags", t]) : tagsAtDefault(t)),
      at: at([]),
      fieldAt: (f) => at([f]),
      argAt: (a) => at(["args", a]),
    });
  });

  if (m.derive) deriveFromConsumers(m.derive, m, src, dir, root, problems, bases, runtimes, defaultPlatforms, defaultTags, tagsAtDefault);
  problems.throwIfAny();

  if (bases.length === 0) {
    problems.error(src.locate([]), "the matrix declares no bases", "add a `bases:` list, or a `derive:` section with consumers");
  }
  checkNames(bases, "base", problems);
  checkNames(runtimes, "runtime", problems);
  const baseByName = new Map(bases.map((b) => [b.name, b]));
  for (const r of runtimes) {
    const base = baseByName.get(r.base);
    if (!base) {
      const guess = closest(r.base, [...baseByName.keys()]);
      problems.error(r.fieldAt("base"), `runtime '${r.name}' names base '${r.base}', which does not exist`, guess ? `did you mean '${guess}'?` : `use one of: ${[...baseByName.keys()].join(", ")}`);
      continue;
    }
    const missing = r.platforms.filter((p) => !base.platforms.includes(p));
    if (missing.length > 0) {
      problems.error(r.fieldAt("platforms"), `runtime '${r.name}' wants ${missing.join(", ")} but base '${base.name}' is built for ${base.platforms.join(", ")} only`, `add ${missing.join(", ")} to the platforms of base '${base.name}'`);
    }
  }

  if (bases.length > LIMITS.bases) problems.error(src.locate(m.derive ? ["derive", "key"] : ["bases"]), `the matrix gives ${bases.length} bases, more than strata plans (${LIMITS.bases})`, "split the matrix into several, or derive fewer bases (a coarser key)");
  if (runtimes.length > LIMITS.runtimes) problems.error(src.locate(m.derive ? ["derive"] : ["runtimes"]), `the matrix gives ${runtimes.length} runtimes, more than strata plans (${LIMITS.runtimes})`, "split the matrix into several");

  for (const d of [...bases, ...runtimes]) {
    for (const [name, value] of Object.entries(d.args)) {
      if (value.length > LIMITS.stringChars) problems.error(d.argAt(name), `build arg ${name} of '${d.name}' is ${value.length} characters long (at most ${LIMITS.stringChars})`, "shorten the value (or the consumer fields it is made of)");
    }
  }

  const files = new FileCache(dir, root);
  for (const b of bases) {
    checkBuildArgs({ base: b.name, args: b.args, cuda: b.cuda, argAt: b.argAt, cudaAt: () => b.fieldAt("cuda") }, problems);
    checkBuild(b, "base", files, problems);
    const sample = identityTag(b.tagPrefix, "0".repeat(64));
    if (!OCI_TAG.test(sample)) {
      problems.error(b.fieldAt(b.key ? "name" : "tagPrefix"), `base '${b.name}' gives tags like '${sample}', which is not a valid OCI tag`, "tags are at most 128 characters of letters, digits, '_', '.' and '-'; shorten the name or set tagPrefix");
    }
  }
  for (const r of runtimes) {
    const info = checkBuild(r, "runtime", files, problems);
    if (info && !(info.globalArgs.includes("BASE_IMAGE") && info.fromUsesArg("BASE_IMAGE"))) {
      problems.error(
        r.fieldAt("dockerfile"),
        `runtime '${r.name}': ${r.dockerfile} does not build FROM the BASE_IMAGE build arg`,
        "start the Dockerfile with `ARG BASE_IMAGE` and use `FROM ${BASE_IMAGE} AS runtime`; strata passes the base's digest-pinned reference",
      );
    }
    r.tags.forEach((t, i) => {
      const sample = Object.fromEntries(TAG_PLACEHOLDERS.map((p) => [p, "x"]));
      const { value, missing } = renderTemplate(t, { ...sample, name: r.name, base: r.base });
      if (missing.length > 0) {
        problems.error(r.tagsAt(i), `tag template '${t}' uses unknown placeholder(s) ${missing.map((p) => `{${p}}`).join(", ")}`, `use only ${TAG_PLACEHOLDERS.map((p) => `{${p}}`).join(", ")}`);
      } else if (!OCI_TAG.test(value)) {
        problems.error(r.tagsAt(i), `tag template '${t}' gives '${value}' for runtime '${r.name}', which is not a valid OCI tag`, "tags are 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'");
      }
    });
  }
  problems.throwIfAny();

  const lockFile = lockFileFor(file);
  const lock = opts.lock === false ? undefined : readLock(lockFile);
  const upstream = new UpstreamCache(files, dir, lock);
  const contexts = new Map<string, ContextDigest>();
  const planBases: BasePlan[] = bases.map((b) => {
    const info = (files.dockerfile(b.dockerfile) as { info: DockerfileInfo }).info;
    const images = upstream.of(b, false);
    const target = b.target ?? info.stage()?.name ?? "";
    const contextDir = join(dir, b.context);
    const dockerfileAbs = join(dir, b.dockerfile);
    const ignoreFile = ignoreFileFor(contextDir, dockerfileAbs);
    const exclude = [dockerfileAbs, `${dockerfileAbs}.dockerignore`]
      .map((p) => relative(contextDir, p).split(sep).join("/"))
      .filter((p) => !p.startsWith(".."));
    let context: ContextDigest;
    try {
      const ignoreOutside = ignoreFile && outsideRepository(relative(dir, ignoreFile), dir, root);
      if (ignoreOutside) throw new FileProblem(`${relative(dir, ignoreFile!)} ${ignoreOutside.message}`, ignoreOutside.fix);
      context = hashContext(contextDir, ignoreFile, exclude, contexts);
    } catch (err) {
      if (!(err instanceof FileProblem)) throw err;
      problems.error(b.fieldAt("context"), `base '${b.name}': ${err.message}`, err.fix);
      context = { files: {}, digest: "" };
    }
    const locked = identityUpstream(images);
    const inputs = { dockerfileDigest: info.digestFor(b.target), target, args: b.args, platforms: [...b.platforms].sort(), contextDigest: context.digest, ...(locked ? { upstream: locked } : {}) };
    const hash = identityHash(inputs);
    return {
      name: b.name,
      tag: identityTag(b.tagPrefix, hash),
      hash,
      context: b.context,
      dockerfile: b.dockerfile,
      target,
      args: b.args,
      platforms: inputs.platforms,
      cuda: b.cuda,
      consumers: runtimes.filter((r) => r.base === b.name).map((r) => r.name),
      key: b.key,
      upstream: images,
      inputs: { ...inputs, contextFiles: context.files },
      at: b.at,
    };
  });
  problems.throwIfAny();
  const planRuntimes: RuntimePlan[] = runtimes.map((r) => ({
    name: r.name,
    base: r.base,
    context: r.context,
    dockerfile: r.dockerfile,
    target: r.target ?? (files.dockerfile(r.dockerfile) as { info: DockerfileInfo }).info.stage()?.name ?? "",
    args: r.args,
    platforms: r.platforms,
    tags: r.tags,
    fields: r.fields,
    upstream: upstream.of(r, true),
    at: r.at,
  }));
  const status = lockStatus(lock, requiredImages({ bases: planBases, runtimes: planRuntimes }));
  const lockState = { file: lockFile, exists: opts.lock === false ? existsSync(lockFile) : lock !== undefined, ...status, problems: upstream.problems };
  return { file, dir, bases: planBases, runtimes: planRuntimes, warnings: problems.warnings, lock: lockState };
}

function deriveFromConsumers(
  d: DeriveSpec,
  m: MatrixFile,
  src: SourceFile,
  dir: string,
  root: string,
  problems: Problems,
  bases: BaseDraft[],
  runtimes: RuntimeDraft[],
  defaultPlatforms: string[],
  defaultTags: string[],
  tagsAtDefault: (i: number) => Location,
): void {
  const at = (p: Path) => src.locate(["derive", ...p]);
  if ((d.source === undefined) === (d.entries === undefined)) {
    problems.error(at([]), "derive needs exactly one of 'source' (a JSON or YAML file of entries) or 'entries' (an inline list)", "set derive.source: path/to/matrix.json, or list the entries under derive.entries");
    return;
  }
  if (!Object.hasOwn(d.fields, "name")) {
    problems.error(at(["fields"]), "derive.fields has no 'name' mapping", "map 'name' to the source field that names each consumer, e.g. name: tag-suffix");
  }
  for (const [list, label] of [[d.key, "key"], [d.mustAgree ?? [], "mustAgree"]] as const) {
    list.forEach((f, i) => {
      if (!Object.hasOwn(d.fields, f)) problems.error(at([label, i]), `derive.${label} names '${f}', which derive.fields does not map`, `map it under derive.fields, or use one of: ${Object.keys(d.fields).join(", ")}`);
    });
  }
  const known = new Set(Object.keys(d.fields));
  const templates: [string, Path][] = [
    [d.base.name ?? "", ["base", "name"]],
    [d.base.dockerfile, ["base", "dockerfile"]],
    [d.base.context ?? "", ["base", "context"]],
    [d.base.cuda ?? "", ["base", "cuda"]],
    ...Object.entries(d.base.args ?? {}).map(([k, v]) => [v, ["base", "args", k]] as [string, Path]),
    [d.runtime?.dockerfile ?? "", ["runtime", "dockerfile"]],
    [d.runtime?.context ?? "", ["runtime", "context"]],
    ...Object.entries(d.runtime?.args ?? {}).map(([k, v]) => [v, ["runtime", "args", k]] as [string, Path]),
  ];
  const baseFields = new Set<string>();
  for (const [t, path] of templates) {
    const { missing } = renderTemplate(t, Object.fromEntries([...known].map((k) => [k, ""])));
    if (missing.length > 0) problems.error(at(path), `template '${t}' uses ${missing.map((p) => `{${p}}`).join(", ")}, which derive.fields does not map`, `map it under derive.fields, or use one of: ${[...known].map((k) => `{${k}}`).join(", ")}`);
    if (path[0] === "base") for (const f of t.matchAll(/\{([A-Za-z][A-Za-z0-9]*)\}/g)) baseFields.add(f[1]);
  }
  if (problems.errors.length > 0) return;

  let data: SourceFile = src;
  let entries: unknown[];
  let entryPath: (i: number, field?: string) => Location;
  if (d.source !== undefined) {
    const sourcePath = resolve(dir, d.source);
    const display = relative(process.cwd(), sourcePath) || d.source;
    const outside = outsideRepository(d.source, dir, root);
    if (outside) {
      problems.error(at(["source"]), `derive.source '${d.source}' ${outside.message}`, outside.fix);
      return;
    }
    let text: string;
    try {
      text = readRegularFile(sourcePath, LIMITS.sourceBytes, "derive source");
    } catch (err) {
      if (!(err instanceof FileProblem)) throw err;
      if (err.code === "ENOENT") problems.error(at(["source"]), `derive.source '${d.source}' does not exist (looked for ${sourcePath})`, "give a path relative to the matrix file");
      else problems.error(at(["source"]), `derive.source '${d.source}': ${err.message}`, err.fix);
      return;
    }
    data = SourceFile.parse(display, text);
    if (!Array.isArray(data.data)) {
      problems.error(data.locate([]), `${display} must hold a list of entries, not ${typeof data.data}`, "make the file a JSON array (or YAML list) of objects, one per consumer");
      return;
    }
    entries = data.data;
    entryPath = (i, f) => data.locate(f ? [i, f] : [i]);
  } else {
    entries = d.entries!;
    entryPath = (i, f) => src.locate(f ? ["derive", "entries", i, f] : ["derive", "entries", i]);
  }
  if (entries.length === 0) {
    problems.error(d.source ? data.locate([]) : at(["entries"]), "the consumer list is empty", "add at least one consumer entry");
    return;
  }
  if (entries.length > LIMITS.runtimes) {
    problems.error(d.source ? data.locate([]) : at(["entries"]), `the consumer list has ${entries.length} entries, more than strata plans (${LIMITS.runtimes})`, "split the list into several matrices");
    return;
  }

  const consumers: Consumer[] = [];
  entries.forEach((raw, i) => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      problems.error(entryPath(i), `consumer entry ${i} is not an object`, "each entry must be a mapping of field names to values");
      return;
    }
    const record = raw as Record<string, unknown>;
    const fields: Record<string, string> = {};
    const fieldAt = (f: string) => {
      const sf = sourceFieldOf(d.fields[f]);
      return sf && Object.hasOwn(record, sf) ? entryPath(i, sf) : entryPath(i);
    };
    for (const [name, mapping] of Object.entries(d.fields)) {
      const r = mapField(record, mapping);
      if ("error" in r) problems.error(fieldAt(name), `consumer entry ${i}, field '${name}': ${r.error}`, "fix the entry, or the mapping under derive.fields");
      else fields[name] = r.value;
    }
    if (fields.name === undefined) return;
    if (fields.name === "") {
      problems.error(fieldAt("name"), `consumer entry ${i} has no name ('${sourceFieldOf(d.fields.name)}' is empty)`, "give every entry a unique name");
      return;
    }
    fields.name = slugName(fields.name);
    const platforms = Object.hasOwn(d.fields, "platforms") && fields.platforms ? fields.platforms.split(/[,\s]+/).filter(Boolean) : (m.defaults?.platforms ?? defaultPlatforms);
    for (const p of platforms) {
      if (!PLATFORM.test(p)) problems.error(fieldAt("platforms"), `consumer '${fields.name}': platform '${p}' is not of the form os/arch`, "write platforms like linux/amd64 or linux/arm64, comma-separated");
    }
    consumers.push({ fields, platforms, at: () => entryPath(i), fieldAt });
  });
  if (problems.errors.length > 0) return;

  const mustAgree = [...new Set([...(d.mustAgree ?? []), ...[...baseFields].filter((f) => !d.key.includes(f))])];
  const derived = deriveBases(consumers, { key: d.key, mustAgree, nameTemplate: d.base.name }, problems, at(["key"]));

  for (const g of derived) {
    const vars = g.consumers[0].fields;
    const render = (t: string) => renderTemplate(t, vars).value;
    // A base whose consumers have no CUDA version (cpu, rocm...) renders an empty one: it has none.
    const cuda = d.base.cuda ? render(d.base.cuda).replace(/^\.+|\.+$/g, "") : "";
    if (cuda !== "" && !CUDA_VERSION_RE.test(cuda)) {
      problems.error(at(["base", "cuda"]), `derive.base.cuda gives '${cuda}' for base '${g.name}', which is not a CUDA version`, "map fields that give versions such as 12.6 or 12.6.3, or leave them empty for bases without CUDA");
    }
    const args = Object.fromEntries(Object.entries(d.base.args ?? {}).map(([k, v]) => [k, render(v)]));
    bases.push({
      name: g.name,
      context: d.base.context ? render(d.base.context) : ".",
      dockerfile: render(d.base.dockerfile),
      target: d.base.target,
      args: { ...(cuda ? { CUDA_VERSION: cuda } : {}), ...args },
      platforms: g.platforms,
      cuda: cuda || undefined,
      tagPrefix: g.name,
      key: g.key,
      at: lazyLocation(g.consumers[0].at),
      fieldAt: (f) => (f === "name" ? at(["base", "name"]) : at(["base", f])),
      argAt: (a) => at(["base", "args", a]),
    });
    for (const c of g.consumers) {
      const r = (t: string) => renderTemplate(t, c.fields).value;
      runtimes.push({
        name: c.fields.name,
        base: g.name,
        context: r(d.runtime?.context ?? (Object.hasOwn(d.fields, "context") ? "{context}" : ".")) || ".",
        dockerfile: r(d.runtime?.dockerfile ?? "{dockerfile}"),
        target: d.runtime?.target,
        args: Object.fromEntries(Object.entries(d.runtime?.args ?? {}).map(([k, v]) => [k, r(v)])),
        platforms: c.platforms,
        tags: d.runtime?.tags ?? defaultTags,
        tagsAt: (t) => (d.runtime?.tags ? at(["runtime", "tags", t]) : tagsAtDefault(t)),
        fields: c.fields,
        at: lazyLocation(c.at),
        fieldAt: c.fieldAt,
        argAt: (a) => at(["runtime", "args", a]),
      });
    }
  }
}

/**
 * YAML reads `8.0` as the number 8: a build arg written that way would silently lose its `.0`. Any build arg
 * whose text differs from the string it became must be quoted.
 */
function checkNumbersAsWritten(src: SourceFile, path: Path, args: Record<string, string>, problems: Problems): void {
  for (const [name, value] of Object.entries(args)) {
    const raw = src.rawText([...path, name]);
    if (raw !== undefined && !/^["']/.test(raw) && raw !== value) {
      problems.error(src.locate([...path, name]), `build arg ${name} is written ${raw}, which YAML reads as ${value}`, `quote it: ${name}: "${raw}"`);
    }
  }
}

/** Consumer names become image and resource names: slugged, e.g. "-gpu-nvidia-cuda-12-vllm" → "gpu-nvidia-cuda-12-vllm". */
function slugName(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9._]+/g, "-").replace(/^[-.]+|[-.]+$/g, "");
}

function checkNames(items: Draft[], kind: string, problems: Problems): void {
  const seen = new Map<string, Draft>();
  for (const it of items) {
    const first = seen.get(it.name);
    if (first) {
      problems.error(it.fieldAt("name"), `duplicate ${kind} name '${it.name}' (first declared at ${first.at.file}:${first.at.line})`, `give each ${kind} a unique name`);
    } else {
      seen.set(it.name, it);
    }
  }
}

/** Checks the context, Dockerfile and target of a build; returns the parsed Dockerfile when it exists. */
function checkBuild(d: Draft, kind: string, files: FileCache, problems: Problems): DockerfileInfo | undefined {
  const contextOk = checkInside(d.context, "build context", d, kind, files, problems);
  if (contextOk && !files.isDir(d.context)) {
    problems.error(d.fieldAt("context"), `${kind} '${d.name}': build context '${d.context}' is not a directory (looked in ${join(files.dir, d.context)})`, "give a directory relative to the matrix file");
  }
  if (!checkInside(d.dockerfile, "Dockerfile", d, kind, files, problems)) return undefined;
  const read = files.dockerfile(d.dockerfile);
  if ("problem" in read) {
    const p = read.problem;
    problems.error(
      d.fieldAt("dockerfile"),
      p.code === "ENOENT" ? `${kind} '${d.name}': Dockerfile '${d.dockerfile}' does not exist (looked for ${join(files.dir, d.dockerfile)})` : `${kind} '${d.name}': Dockerfile '${d.dockerfile}': ${p.message}`,
      p.code === "ENOENT" ? "give a path relative to the matrix file" : p.fix,
    );
    return undefined;
  }
  const info = read.info;
  if (info.stages.length === 0) {
    problems.error(d.fieldAt("dockerfile"), `${kind} '${d.name}': ${d.dockerfile} has no FROM instruction`, "a Dockerfile needs at least one FROM");
    return undefined;
  }
  if (d.target !== undefined && !info.stage(d.target)) {
    const names = info.stageNames();
    problems.error(
      d.fieldAt("target"),
      `${kind} '${d.name}': ${d.dockerfile} has no stage '${d.target}'`,
      names.length ? `use one of its stages (${names.join(", ")}) or add \`FROM ... AS ${d.target}\`` : `add \`FROM ... AS ${d.target}\` to the Dockerfile`,
    );
  }
  return info;
}

/**
 * A context or Dockerfile path must be relative and stay inside the repository once `..` and symlinks are
 * resolved: the identity hashes what a commit holds, on any machine. False (with an error at the field) if not.
 */
function checkInside(rel: string, what: string, d: Draft, kind: string, files: FileCache, problems: Problems): boolean {
  const field = what === "Dockerfile" ? "dockerfile" : "context";
  const problem = files.outside(rel);
  if (problem) problems.error(d.fieldAt(field), `${kind} '${d.name}': ${what} '${rel}' ${problem.message}`, problem.fix);
  return problem === undefined;
}

/** Why a path given in the matrix may not be used: absolute, or leading outside the repository. */
function outsideRepository(rel: string, dir: string, root: string): FileProblem | undefined {
  if (isAbsolute(rel)) return new FileProblem("is an absolute path", "give a path relative to the matrix file, inside the repository");
  const c = confine(root, dir, rel);
  if (c.inside) return undefined;
  const via = c.real === c.abs ? "" : ` (through a symlink, to ${c.real})`;
  return new FileProblem(
    `resolves outside the repository ${root}${via}`,
    "bring the files into the repository (copy them in, or make them a git submodule) and point at them there; a symlink to outside does not count, since no commit holds its target",
  );
}

/**
 * The upstream images of each build, computed once per distinct Dockerfile, target, args and platforms (thousands
 * of derived runtimes share a few), pinned from the lock. FROMs that give no image reference are collected.
 */
class UpstreamCache {
  private readonly cache = new Map<string, UpstreamImage[]>();
  readonly problems: Problem[] = [];
  constructor(
    private readonly files: FileCache,
    private readonly dir: string,
    private readonly lock: LockFile | undefined,
  ) {}

  of(d: Draft, runtime: boolean): UpstreamImage[] {
    const key = JSON.stringify([d.dockerfile, d.target, runtime, d.args, d.platforms]);
    const hit = this.cache.get(key);
    if (hit) return hit;
    const info = (this.files.dockerfile(d.dockerfile) as { info: DockerfileInfo }).info;
    const dockerfile = relative(process.cwd(), join(this.dir, d.dockerfile)) || d.dockerfile;
    const found = upstreamImages(info, { dockerfile, target: d.target, args: d.args, platforms: d.platforms, trusted: runtime ? ["BASE_IMAGE"] : [] });
    for (const p of found.problems) if (!this.problems.some((q) => q.file === p.file && q.line === p.line)) this.problems.push(p);
    const images = found.images.map((i) => pin(i, this.lock));
    this.cache.set(key, images);
    return images;
  }
}

/** Reads each Dockerfile once per load: hundreds of consumers share a handful of files. */
class FileCache {
  private readonly parsed = new Map<string, { info: DockerfileInfo } | { problem: FileProblem }>();
  private readonly dirs = new Map<string, boolean>();
  private readonly confined = new Map<string, FileProblem | undefined>();
  constructor(
    readonly dir: string,
    readonly root: string,
  ) {}

  dockerfile(rel: string): { info: DockerfileInfo } | { problem: FileProblem } {
    if (!this.parsed.has(rel)) {
      try {
        this.parsed.set(rel, { info: new DockerfileInfo(readRegularFile(join(this.dir, rel), LIMITS.dockerfileBytes, "Dockerfile")) });
      } catch (err) {
        if (!(err instanceof FileProblem)) throw err;
        this.parsed.set(rel, { problem: err });
      }
    }
    return this.parsed.get(rel)!;
  }

  /** Why `rel` may not be used (absolute, outside the repository), or undefined when it may. */
  outside(rel: string): FileProblem | undefined {
    if (!this.confined.has(rel)) this.confined.set(rel, outsideRepository(rel, this.dir, this.root));
    return this.confined.get(rel);
  }

  isDir(rel: string): boolean {
    if (!this.dirs.has(rel)) {
      const abs = join(this.dir, rel);
      this.dirs.set(rel, existsSync(abs) && statSync(abs).isDirectory());
    }
    return this.dirs.get(rel)!;
  }
}
