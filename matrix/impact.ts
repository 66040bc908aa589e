import { posix } from "node:path";
import dockerignore from "@balena/dockerignore";
import { DockerfileInfo, type Stage } from "./dockerfile.ts";
import { TAG_HASH_LENGTH } from "./identity.ts";
import type { BasePlan, BuildPlan, RuntimePlan } from "./plan.ts";

/**
 * Impact of a change: which bases a change rebuilds and why. A pure comparison of two build plans (the plan at
 * a base revision and at a head revision); the only I/O is through the optional `read` of each side, which the
 * caller supplies to let reasons name Dockerfile stages and ignore-file effects.
 */

export type ReasonKind = "arg" | "file" | "dockerfile" | "dockerignore" | "platforms" | "target" | "matrix" | "upstream" | "added" | "removed";

/** One cause of a base's identity change, in words and in fields a program can read. */
export interface Reason {
  kind: ReasonKind;
  /** A sentence for humans. */
  detail: string;
  /** A file, relative to the matrix file's directory (context files: context + path inside the context). */
  path?: string;
  /** The build arg, for kind "arg". */
  arg?: string;
  /** The upstream image reference, for kind "upstream" (old/new are then its full locked digests). */
  image?: string;
  old?: string;
  new?: string;
}

export type BaseChange = "added" | "removed" | "changed" | "renamed" | "unchanged-omitted";

export interface BaseImpact {
  /** The name at head (at base for removed bases). */
  name: string;
  change: BaseChange;
  oldTag: string | null;
  newTag: string | null;
  renamedFrom: string | null;
  reasons: Reason[];
  /** Runtimes (head names) built because of this base; empty for removed and renamed bases. */
  runtimes: string[];
}

export interface ImpactReport {
  base: string;
  head: string;
  bases: BaseImpact[];
  runtimes: { added: string[]; removed: string[]; rebuilt: string[]; renamed: { from: string; to: string }[] };
  rebuild: { bases: string[]; runtimes: string[] };
  /** Not part of the JSON contract: why each rebuilt or renamed runtime is listed (head name → sentences). */
  runtimeReasons: Record<string, string[]>;
  /**
   * The shard stacks the change touches, when the caller knows the stack (`touchedShards`): base shard stacks
   * `<stack>-base-<name>` of the bases to rebuild, and runtime shards `runtimes-<k>` (empty below the threshold).
   */
  shards?: { bases: string[]; runtimes: string[] };
}

/** A runtime shard as impact needs it: its name and the runtimes it declares. */
export interface ShardGroup {
  name: string;
  runtimes: readonly string[];
}

/**
 * The runtime shards a change touches: at head, every shard holding a runtime to rebuild or an added one, and every
 * shard whose set of runtimes differs from the same shard's at base (a runtime removed, renamed, or moved to a
 * neighbouring shard: that shard's stack must drop it). In head's shard order, then shards only base had.
 */
export function touchedRuntimeShards(report: Pick<ImpactReport, "rebuild" | "runtimes">, before: readonly ShardGroup[], after: readonly ShardGroup[]): string[] {
  const rebuild = new Set([...report.rebuild.runtimes, ...report.runtimes.added]);
  const old = new Map(before.map((g) => [g.name, new Set(g.runtimes)]));
  const touched: string[] = [];
  for (const g of after) {
    const was = old.get(g.name);
    const moved = !was || was.size !== g.runtimes.length || g.runtimes.some((r) => !was.has(r));
    if (moved || g.runtimes.some((r) => rebuild.has(r))) touched.push(g.name);
  }
  const now = new Set(after.map((g) => g.name));
  for (const g of before) if (!now.has(g.name)) touched.push(g.name);
  return touched;
}

/** One side of the comparison: a plan and, optionally, a reader of files relative to its matrix directory. */
export interface PlanSide {
  plan: BuildPlan;
  /** Reads a file (path relative to the plan's matrix directory) as it is at this side; undefined when absent. */
  read?: (path: string) => string | undefined;
}

/** The JSON form of a report: exactly the fields of the contract (plus runtimes.renamed). */
export function impactJson(report: ImpactReport): Omit<ImpactReport, "runtimeReasons"> {
  const reason = (r: Reason): Reason => ({ kind: r.kind, detail: r.detail, ...(r.path !== undefined && { path: r.path }), ...(r.arg !== undefined && { arg: r.arg }), ...(r.image !== undefined && { image: r.image }), ...(r.old !== undefined && { old: r.old }), ...(r.new !== undefined && { new: r.new }) });
  const bases = report.bases.map((b) => ({ ...b, reasons: b.reasons.map(reason) }));
  return { base: report.base, head: report.head, bases, runtimes: report.runtimes, rebuild: report.rebuild, ...(report.shards ? { shards: report.shards } : {}) };
}

/** Compares the plan at `base` with the plan at `head`. Bases whose identity did not change are not listed. */
export function comparePlans(base: PlanSide | BuildPlan, head: PlanSide | BuildPlan, labels: { base: string; head: string } = { base: "base", head: "head" }): ImpactReport {
  const oldSide = "plan" in base ? base : { plan: base };
  const newSide = "plan" in head ? head : { plan: head };
  const oldPlan = oldSide.plan;
  const newPlan = newSide.plan;
  const oldBases = new Map(oldPlan.bases.map((b) => [b.name, b]));
  const newBases = new Map(newPlan.bases.map((b) => [b.name, b]));
  const oldRuntimes = new Map(oldPlan.runtimes.map((r) => [r.name, r]));
  const newRuntimes = new Map(newPlan.runtimes.map((r) => [r.name, r]));

  // Bases: by name, then unmatched ones paired by identity (a rename rebuilds nothing).
  const impacts: BaseImpact[] = [];
  const renamedBase = new Map<string, string>(); // old name → new name
  const gone = oldPlan.bases.filter((b) => !newBases.has(b.name));
  const fresh = newPlan.bases.filter((b) => !oldBases.has(b.name));
  const goneByHash = new Map<string, BasePlan[]>();
  for (const b of gone) goneByHash.set(b.hash, [...(goneByHash.get(b.hash) ?? []), b]);
  const pairedOld = new Set<string>();
  for (const nb of fresh) {
    const ob = goneByHash.get(nb.hash)?.shift();
    if (!ob) continue;
    pairedOld.add(ob.name);
    renamedBase.set(ob.name, nb.name);
  }
  const mapBase = (oldName: string) => renamedBase.get(oldName) ?? oldName;

  for (const nb of newPlan.bases) {
    const ob = oldBases.get(nb.name);
    if (ob) {
      if (ob.hash === nb.hash) {
        if (ob.tag !== nb.tag) {
          impacts.push({
            name: nb.name,
            change: "renamed",
            oldTag: ob.tag,
            newTag: nb.tag,
            renamedFrom: ob.name,
            reasons: [{ kind: "matrix", detail: `tag prefix changed (${ob.tag} → ${nb.tag}); identity unchanged, no rebuild`, old: ob.tag, new: nb.tag }],
            runtimes: [],
          });
        }
        continue;
      }
      impacts.push({ name: nb.name, change: "changed", oldTag: ob.tag, newTag: nb.tag, renamedFrom: null, reasons: baseReasons(ob, nb, oldSide, newSide), runtimes: [] });
      continue;
    }
    const from = [...renamedBase].find(([, to]) => to === nb.name)?.[0];
    if (from !== undefined) {
      const ob = oldBases.get(from)!;
      impacts.push({
        name: nb.name,
        change: "renamed",
        oldTag: ob.tag,
        newTag: nb.tag,
        renamedFrom: from,
        reasons: [{ kind: "matrix", detail: `renamed from '${from}' with the same identity; no rebuild`, old: from, new: nb.name }],
        runtimes: [],
      });
      continue;
    }
    impacts.push({ name: nb.name, change: "added", oldTag: null, newTag: nb.tag, renamedFrom: null, reasons: addedReasons(nb, oldPlan, newPlan), runtimes: [] });
  }
  for (const ob of oldPlan.bases) {
    if (newBases.has(ob.name) || pairedOld.has(ob.name)) continue;
    impacts.push({ name: ob.name, change: "removed", oldTag: ob.tag, newTag: null, renamedFrom: null, reasons: removedReasons(ob, oldPlan, newPlan), runtimes: [] });
  }

  // Runtimes: by name, then unmatched ones paired by their build definition (base mapped through renames).
  const rebuiltBase = new Set(impacts.filter((i) => i.change === "added" || i.change === "changed").map((i) => i.name));
  const goneRt = oldPlan.runtimes.filter((r) => !newRuntimes.has(r.name));
  const freshRt = newPlan.runtimes.filter((r) => !oldRuntimes.has(r.name));
  const goneBySig = new Map<string, RuntimePlan[]>();
  for (const r of goneRt) {
    const sig = runtimeSignature(r, mapBase(r.base));
    goneBySig.set(sig, [...(goneBySig.get(sig) ?? []), r]);
  }
  const runtimeFrom = new Map<string, RuntimePlan>(); // new name → old runtime
  for (const r of newPlan.runtimes) {
    const same = oldRuntimes.get(r.name);
    if (same) runtimeFrom.set(r.name, same);
  }
  const renamedRt: { from: string; to: string }[] = [];
  for (const r of freshRt) {
    const o = goneBySig.get(runtimeSignature(r, r.base))?.shift();
    if (!o) continue;
    runtimeFrom.set(r.name, o);
    renamedRt.push({ from: o.name, to: r.name });
  }
  const pairedOldRt = new Set([...runtimeFrom.values()].map((r) => r.name));

  const added: string[] = [];
  const rebuilt: string[] = [];
  const runtimeReasons: Record<string, string[]> = {};
  for (const r of newPlan.runtimes) {
    const o = runtimeFrom.get(r.name);
    const why: string[] = [];
    const baseImpact = rebuiltBase.has(r.base) ? impacts.find((i) => i.name === r.base) : undefined;
    if (baseImpact) {
      baseImpact.runtimes.push(r.name);
      why.push(baseImpact.change === "added" ? `its base '${r.base}' is new` : `its base '${r.base}' changes identity`);
    }
    if (!o) {
      added.push(r.name);
      runtimeReasons[r.name] = [`new runtime on base '${r.base}'`];
      continue;
    }
    if (o.name !== r.name) why.push(`renamed from '${o.name}'`);
    if (mapBase(o.base) !== r.base) {
      const ob = oldBases.get(o.base);
      const keyDiff = ob?.key ? Object.keys(ob.key).filter((k) => (o.fields?.[k] ?? "") !== (r.fields?.[k] ?? "")).map((k) => `${k}: '${o.fields?.[k] ?? ""}' → '${r.fields?.[k] ?? ""}'`) : [];
      why.push(`moved from base '${o.base}' to '${r.base}'${keyDiff.length ? ` (${keyDiff.join(", ")})` : ""}`);
    }
    why.push(...runtimeDefinitionChanges(o, r));
    const rebuilds = why.some((w) => !w.startsWith("renamed from"));
    if (rebuilds) rebuilt.push(r.name);
    if (why.length > 0) runtimeReasons[r.name] = why;
  }
  const removed = oldPlan.runtimes.filter((r) => !pairedOldRt.has(r.name)).map((r) => r.name);

  const order = { changed: 0, added: 1, removed: 2, renamed: 3, "unchanged-omitted": 4 } as const;
  impacts.sort((a, b) => order[a.change] - order[b.change] || cmp(a.name, b.name));
  return {
    base: labels.base,
    head: labels.head,
    bases: impacts,
    runtimes: { added, removed, rebuilt, renamed: renamedRt },
    rebuild: {
      bases: impacts.filter((i) => i.change === "added" || i.change === "changed").map((i) => i.name),
      runtimes: newPlan.runtimes.filter((r) => added.includes(r.name) || rebuilt.includes(r.name)).map((r) => r.name),
    },
    runtimeReasons,
  };
}

/** Why a base that exists at both sides under one name changes identity. */
function baseReasons(ob: BasePlan, nb: BasePlan, oldSide: PlanSide, newSide: PlanSide): Reason[] {
  const reasons: Reason[] = [];
  const oi = ob.inputs;
  const ni = nb.inputs;
  for (const arg of [...new Set([...Object.keys(oi.args), ...Object.keys(ni.args)])].sort(cmp)) {
    const a = oi.args[arg];
    const b = ni.args[arg];
    if (a === b) continue;
    if (a === undefined) reasons.push({ kind: "arg", arg, new: b, detail: `build arg ${arg} added (${show(b)})` });
    else if (b === undefined) reasons.push({ kind: "arg", arg, old: a, detail: `build arg ${arg} removed (was ${show(a)})` });
    else reasons.push({ kind: "arg", arg, old: a, new: b, detail: `build arg ${arg}: ${show(a)} → ${show(b)}` });
  }
  if (oi.platforms.join(",") !== ni.platforms.join(",")) reasons.push(platformReason(ob, nb, oldSide.plan, newSide.plan));
  if (oi.target !== ni.target) reasons.push({ kind: "target", old: oi.target, new: ni.target, detail: `target stage '${oi.target}' → '${ni.target}'` });
  if (oi.dockerfileDigest !== ni.dockerfileDigest) reasons.push(...dockerfileReasons(ob, nb, oldSide, newSide));
  if (ob.context !== nb.context) reasons.push({ kind: "matrix", old: ob.context, new: nb.context, detail: `build context '${ob.context}' → '${nb.context}'` });
  if (oi.contextDigest !== ni.contextDigest) reasons.push(...fileReasons(ob, nb, oldSide, newSide));
  reasons.push(...upstreamReasons(oi.upstream ?? {}, ni.upstream ?? {}));
  if (reasons.length === 0) {
    reasons.push({ kind: "matrix", detail: "identity inputs differ in a way strata cannot name (the identity formula may have changed between the revisions)" });
  }
  return reasons;
}

/** Digests in reasons: `sha256:` and the first 12 hex digits, as short as a base's identity tag (full in old/new). */
function shortDigest(d: string): string {
  return d.slice(0, "sha256:".length + TAG_HASH_LENGTH);
}

/**
 * Upstream images whose locked content changed: a re-publish of the tag (`ref: sha256:aaa → sha256:bbb`), an image
 * newly locked, or one no longer locked. Only per-platform digests of the platforms built count, as in the identity.
 */
function upstreamReasons(old: NonNullable<BasePlan["inputs"]["upstream"]>, now: NonNullable<BasePlan["inputs"]["upstream"]>): Reason[] {
  const reasons: Reason[] = [];
  const same = (a: Record<string, string>, b: Record<string, string>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
  for (const image of [...new Set([...Object.keys(old), ...Object.keys(now)])].sort(cmp)) {
    const o = old[image];
    const n = now[image];
    if (o && n) {
      if (!same(o.platforms, n.platforms)) reasons.push({ kind: "upstream", image, old: o.digest, new: n.digest, detail: `${image}: ${shortDigest(o.digest)} → ${shortDigest(n.digest)}` });
    } else if (n) {
      reasons.push({ kind: "upstream", image, new: n.digest, detail: `${image}: locked at ${shortDigest(n.digest)} (was built by tag)` });
    } else {
      reasons.push({ kind: "upstream", image, old: o.digest, detail: `${image}: no longer locked (was ${shortDigest(o.digest)}); built by tag` });
    }
  }
  return reasons;
}

function platformReason(ob: BasePlan, nb: BasePlan, oldPlan: BuildPlan, newPlan: BuildPlan): Reason {
  const gained = nb.platforms.filter((p) => !ob.platforms.includes(p));
  const lost = ob.platforms.filter((p) => !nb.platforms.includes(p));
  const parts: string[] = [];
  if (gained.length) parts.push(`+${gained.join(",+")}`);
  if (lost.length) parts.push(`-${lost.join(",-")}`);
  let detail = `platforms ${ob.platforms.join(",")} → ${nb.platforms.join(",")} (${parts.join(" ")})`;
  if (nb.key) {
    // Derived base: its platforms are the union of its consumers'; name the consumers behind the change.
    const why: string[] = [];
    for (const p of gained) {
      const who = newPlan.runtimes.filter((r) => r.base === nb.name && r.platforms.includes(p)).map((r) => r.name);
      why.push(`${p} wanted by consumer ${list(who)}`);
    }
    for (const p of lost) {
      const who = oldPlan.runtimes.filter((r) => r.base === ob.name && r.platforms.includes(p)).map((r) => r.name);
      why.push(who.length ? `no consumer wants ${p} any more (it was wanted by ${list(who)})` : `no consumer wants ${p} any more`);
    }
    detail += `: ${why.join("; ")}`;
  }
  return { kind: "platforms", old: ob.platforms.join(","), new: nb.platforms.join(","), detail };
}

function dockerfileReasons(ob: BasePlan, nb: BasePlan, oldSide: PlanSide, newSide: PlanSide): Reason[] {
  const path = nb.dockerfile;
  if (ob.dockerfile !== nb.dockerfile) {
    return [{ kind: "dockerfile", path, old: ob.dockerfile, new: nb.dockerfile, detail: `Dockerfile ${ob.dockerfile} → ${nb.dockerfile}` }];
  }
  const oldText = oldSide.read?.(ob.dockerfile);
  const newText = newSide.read?.(nb.dockerfile);
  const target = nb.target || "(last stage)";
  if (oldText === undefined || newText === undefined) {
    return [{ kind: "dockerfile", path, detail: `${path}: the stages target '${target}' runs changed` }];
  }
  const oldInfo = new DockerfileInfo(oldText);
  const newInfo = new DockerfileInfo(newText);
  const oldClosure = oldInfo.closure(ob.target || undefined);
  const newClosure = newInfo.closure(nb.target || undefined);
  const label = (s: Stage) => (s.name ? `stage '${s.name}'` : `stage #${s.index}`);
  const find = (stages: Stage[], s: Stage) => stages.find((o) => (s.name ? o.name === s.name : !o.name && o.index === s.index));
  const reasons: Reason[] = [];
  for (const s of newClosure) {
    const o = find(oldClosure, s);
    if (!o) {
      const before = find(oldInfo.stages, s);
      reasons.push({ kind: "dockerfile", path, detail: before ? `${path}: ${label(s)} (line ${s.line}) is now used by target '${target}'` : `${path}: ${label(s)} (line ${s.line}) added, used by target '${target}'` });
    } else if (o.text !== s.text) {
      reasons.push({ kind: "dockerfile", path, detail: `${path}: ${label(s)} (line ${s.line}) changed, used by target '${target}'` });
    } else if (o.index !== s.index) {
      reasons.push({ kind: "dockerfile", path, detail: `${path}: ${label(s)} moved (stage #${o.index} → #${s.index})` });
    }
  }
  for (const o of oldClosure) {
    if (find(newClosure, o)) continue;
    const still = find(newInfo.stages, o);
    reasons.push({ kind: "dockerfile", path, detail: still ? `${path}: ${label(o)} is no longer used by target '${target}'` : `${path}: ${label(o)} removed` });
  }
  if (reasons.length === 0) reasons.push({ kind: "dockerfile", path, detail: `${path}: the global ARGs before the first FROM changed` });
  return reasons;
}

/** The ignore file BuildKit applies to a base at one side (mirrors identity.ts ignoreFileFor), and its text. */
function ignoreOf(b: BasePlan, side: PlanSide): { path: string; text: string } | undefined {
  if (!side.read) return undefined;
  const specific = posix.normalize(`${b.dockerfile}.dockerignore`);
  const s = side.read(specific);
  if (s !== undefined) return { path: specific, text: s };
  const general = posix.join(b.context, ".dockerignore");
  const g = side.read(general);
  return g !== undefined ? { path: general, text: g } : undefined;
}

function ignorer(text: string): (rel: string) => boolean {
  const patterns = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const ig = dockerignore.default({ ignorecase: false }).add(patterns);
  return (rel) => ig.ignores(rel);
}

function fileReasons(ob: BasePlan, nb: BasePlan, oldSide: PlanSide, newSide: PlanSide): Reason[] {
  const of = ob.inputs.contextFiles;
  const nf = nb.inputs.contextFiles;
  const oldIgnore = ignoreOf(ob, oldSide);
  const newIgnore = ignoreOf(nb, newSide);
  const ignoreChanged = !!(oldSide.read && newSide.read) && (oldIgnore?.path !== newIgnore?.path || oldIgnore?.text !== newIgnore?.text);
  const oldIgnores = ignorer(oldIgnore?.text ?? "");
  const newIgnores = ignorer(newIgnore?.text ?? "");
  const ignoreName = newIgnore?.path ?? oldIgnore?.path ?? ".dockerignore";
  const ignoreFiles = new Set([".dockerignore"]);
  const reasons: Reason[] = [];
  for (const rel of [...new Set([...Object.keys(of), ...Object.keys(nf)])].sort(cmp)) {
    const a = of[rel];
    const b = nf[rel];
    if (a === b) continue;
    const path = posix.join(nb.context, rel);
    if (a === undefined) {
      if (ignoreChanged && oldIgnores(rel) && !newIgnores(rel)) {
        reasons.push({ kind: "dockerignore", path, detail: `${path} now enters the context: ${ignoreName} changed` });
      } else {
        reasons.push({ kind: "file", path, detail: `${path} added to the context` });
      }
    } else if (b === undefined) {
      if (ignoreChanged && !oldIgnores(rel) && newIgnores(rel)) {
        reasons.push({ kind: "dockerignore", path, detail: `${path} leaves the context: ${ignoreName} changed` });
      } else {
        reasons.push({ kind: "file", path, detail: `${path} removed from the context` });
      }
    } else if (ignoreFiles.has(rel)) {
      reasons.push({ kind: "dockerignore", path, detail: `${path} changed; it is itself part of the context (list it in itself to keep it out)` });
    } else {
      reasons.push({ kind: "file", path, detail: `${path} modified` });
    }
  }
  return reasons;
}

function addedReasons(nb: BasePlan, oldPlan: BuildPlan, newPlan: BuildPlan): Reason[] {
  if (!nb.key) return [{ kind: "added", detail: `base '${nb.name}' added to the matrix` }];
  const keyText = Object.entries(nb.key).map(([k, v]) => `${k}=${v || "''"}`).join(", ");
  const reasons: Reason[] = [{ kind: "added", detail: `new key ${keyText}` }];
  const oldRt = new Map(oldPlan.runtimes.map((r) => [r.name, r]));
  for (const r of newPlan.runtimes.filter((r) => r.base === nb.name)) {
    const o = oldRt.get(r.name);
    if (!o) continue;
    const diff = Object.keys(nb.key).filter((k) => (o.fields?.[k] ?? "") !== (r.fields?.[k] ?? ""));
    reasons.push({
      kind: "matrix",
      detail: `consumer '${r.name}' moved here from base '${o.base}' (${diff.map((k) => `${k}: '${o.fields?.[k] ?? ""}' → '${r.fields?.[k] ?? ""}'`).join(", ") || "key template changed"})`,
      old: o.base,
      new: nb.name,
    });
  }
  return reasons;
}

function removedReasons(ob: BasePlan, oldPlan: BuildPlan, newPlan: BuildPlan): Reason[] {
  if (!ob.key) return [{ kind: "removed", detail: `base '${ob.name}' removed from the matrix` }];
  const newRt = new Map(newPlan.runtimes.map((r) => [r.name, r]));
  const moved: string[] = [];
  const dropped: string[] = [];
  for (const r of oldPlan.runtimes.filter((r) => r.base === ob.name)) {
    const n = newRt.get(r.name);
    if (n) moved.push(`'${r.name}' → base '${n.base}'`);
    else dropped.push(`'${r.name}'`);
  }
  const parts = [...(moved.length ? [`moved: ${moved.join(", ")}`] : []), ...(dropped.length ? [`removed: ${dropped.join(", ")}`] : [])];
  return [{ kind: "removed", detail: `no consumer derives this key any more${parts.length ? ` (${parts.join("; ")})` : ""}` }];
}

/** What a runtime build consists of, apart from its name and base contents. */
function runtimeSignature(r: RuntimePlan, base: string): string {
  return JSON.stringify([base, r.context, r.dockerfile, r.target, sorted(r.args), [...r.platforms].sort()]);
}

function runtimeDefinitionChanges(o: RuntimePlan, r: RuntimePlan): string[] {
  const why: string[] = [];
  for (const f of ["context", "dockerfile", "target"] as const) if (o[f] !== r[f]) why.push(`${f} '${o[f]}' → '${r[f]}'`);
  for (const arg of [...new Set([...Object.keys(o.args), ...Object.keys(r.args)])].sort(cmp)) {
    if (o.args[arg] !== r.args[arg]) why.push(`build arg ${arg}: ${show(o.args[arg])} → ${show(r.args[arg])}`);
  }
  if ([...o.platforms].sort().join(",") !== [...r.platforms].sort().join(",")) why.push(`platforms ${o.platforms.join(",")} → ${r.platforms.join(",")}`);
  return why;
}

/**
 * `strata plan --recorded FILE`: compares a stack's recorded `bases` output (`pulumi stack output bases --json`)
 * with the current plan and explains each base whose tag changes, from the recorded identity inputs. Stage names
 * and ignore-file effects cannot be told from a recorded digest, so Dockerfile reasons name the file only.
 */
export function explainRecorded(
  recorded: Record<string, { tag: string; identity?: string; consumers?: string[]; inputs?: BasePlan["inputs"] }>,
  plan: BuildPlan,
): ImpactReport {
  const hashOf = (tag: string) => tag.slice(-TAG_HASH_LENGTH);
  const asBase = (name: string, r: { tag: string; identity?: string; consumers?: string[]; inputs?: BasePlan["inputs"] }): BasePlan => ({
    name,
    tag: r.tag,
    hash: r.identity ?? hashOf(r.tag),
    context: ".",
    dockerfile: "",
    target: r.inputs?.target ?? "",
    args: r.inputs?.args ?? {},
    platforms: r.inputs?.platforms ?? [],
    consumers: r.consumers ?? [],
    inputs: r.inputs ?? { dockerfileDigest: "", target: "", args: {}, platforms: [], contextDigest: "", contextFiles: {} },
    at: { file: "recorded", line: 1, col: 1 },
  });
  const impacts: BaseImpact[] = [];
  const current = new Map(plan.bases.map((b) => [b.name, b]));
  const consumersOf = (b: BasePlan) => plan.runtimes.filter((r) => r.base === b.name).map((r) => r.name);
  const gone = Object.entries(recorded).filter(([n]) => !current.has(n));
  const pairedOld = new Set<string>();
  for (const nb of plan.bases) {
    const rec = recorded[nb.name];
    if (rec) {
      if (rec.tag === nb.tag) continue;
      if (hashOf(rec.tag) === hashOf(nb.tag)) {
        impacts.push({ name: nb.name, change: "renamed", oldTag: rec.tag, newTag: nb.tag, renamedFrom: nb.name, reasons: [{ kind: "matrix", detail: `tag prefix changed (${rec.tag} → ${nb.tag}); identity unchanged, no rebuild`, old: rec.tag, new: nb.tag }], runtimes: [] });
        continue;
      }
      let reasons: Reason[];
      if (!rec.inputs) {
        reasons = [{ kind: "matrix", detail: `identity ${rec.tag} → ${nb.tag}; the stack recorded no inputs for this base (it was deployed before strata exported them), so the cause cannot be named` }];
      } else {
        const ob = { ...asBase(nb.name, rec), context: nb.context, dockerfile: nb.dockerfile };
        reasons = baseReasons(ob, nb, { plan: { ...plan, bases: [ob], runtimes: [] } }, { plan });
        // Without the recorded Dockerfile text, a digest change names the file and the target only.
      }
      impacts.push({ name: nb.name, change: "changed", oldTag: rec.tag, newTag: nb.tag, renamedFrom: null, reasons, runtimes: consumersOf(nb) });
      continue;
    }
    const twin = gone.find(([n, r]) => !pairedOld.has(n) && hashOf(r.tag) === hashOf(nb.tag));
    if (twin) {
      pairedOld.add(twin[0]);
      impacts.push({ name: nb.name, change: "renamed", oldTag: twin[1].tag, newTag: nb.tag, renamedFrom: twin[0], reasons: [{ kind: "matrix", detail: `renamed from '${twin[0]}' with the same identity; no rebuild`, old: twin[0], new: nb.name }], runtimes: [] });
      continue;
    }
    impacts.push({ name: nb.name, change: "added", oldTag: null, newTag: nb.tag, renamedFrom: null, reasons: [{ kind: "added", detail: `base '${nb.name}' is not in the stack yet` }], runtimes: consumersOf(nb) });
  }
  for (const [name, rec] of gone) {
    if (pairedOld.has(name)) continue;
    impacts.push({ name, change: "removed", oldTag: rec.tag, newTag: null, renamedFrom: null, reasons: [{ kind: "removed", detail: `base '${name}' is in the stack but no longer in the matrix` }], runtimes: [] });
  }
  const order = { changed: 0, added: 1, removed: 2, renamed: 3, "unchanged-omitted": 4 } as const;
  impacts.sort((a, b) => order[a.change] - order[b.change] || cmp(a.name, b.name));
  const rebuildBases = impacts.filter((i) => i.change === "added" || i.change === "changed");
  const rebuiltRt = rebuildBases.flatMap((i) => i.runtimes);
  return {
    base: "recorded",
    head: "plan",
    bases: impacts,
    runtimes: { added: [], removed: [], rebuilt: rebuiltRt, renamed: [] },
    rebuild: { bases: rebuildBases.map((i) => i.name), runtimes: rebuiltRt },
    runtimeReasons: {},
  };
}

/** The human form of a report. */
export function formatImpact(report: ImpactReport, opts: { maxReasons?: number; baseSha?: string; matrix?: string } = {}): string {
  const max = opts.maxReasons ?? 12;
  const out: string[] = [];
  const short = (rev: string) => (/^[0-9a-f]{40}$/.test(rev) ? rev.slice(0, 12) : rev);
  const base = opts.baseSha && opts.baseSha !== report.base ? `${report.base} (${short(opts.baseSha)})` : short(report.base);
  out.push(`strata impact: ${base} → ${report.head}${opts.matrix ? `, matrix ${opts.matrix}` : ""}`);
  const nb = report.rebuild.bases.length;
  const nr = report.rebuild.runtimes.length;
  if (report.bases.length === 0 && nr === 0 && report.runtimes.removed.length === 0 && report.runtimes.renamed.length === 0) {
    out.push("No base or runtime changes: nothing to rebuild.");
    return out.join("\n");
  }
  out.push(`Rebuild: ${nb} base(s), ${nr} runtime(s)`);
  if (report.bases.length > 0) {
    out.push("");
    const rows = report.bases.map((b) => [b.name, b.change === "renamed" && b.renamedFrom && b.renamedFrom !== b.name ? `renamed from ${b.renamedFrom}` : b.change, b.oldTag ?? "-", b.newTag ?? "-", summarise(b.runtimes)]);
    out.push(table(["BASE", "CHANGE", "OLD TAG", "NEW TAG", "RUNTIMES"], rows));
    out.push("");
    out.push("Why:");
    for (const b of report.bases) {
      out.push(`  ${b.name} (${b.change === "renamed" ? "renamed, no rebuild" : b.change})`);
      for (const r of b.reasons.slice(0, max)) out.push(`    - [${r.kind}] ${r.detail}`);
      if (b.reasons.length > max) out.push(`    - ... and ${b.reasons.length - max} more (see --json)`);
    }
  }
  const rt = report.runtimes;
  if (rt.rebuilt.length + rt.added.length + rt.removed.length + rt.renamed.length > 0) {
    out.push("");
    out.push("Runtimes:");
    if (rt.added.length) out.push(`  added (${rt.added.length}): ${summarise(rt.added, 20)}`);
    if (rt.removed.length) out.push(`  removed (${rt.removed.length}): ${summarise(rt.removed, 20)}`);
    if (rt.renamed.length) out.push(`  renamed (${rt.renamed.length}): ${rt.renamed.slice(0, 20).map((r) => `${r.from} → ${r.to}${rt.rebuilt.includes(r.to) ? "" : " (no rebuild)"}`).join(", ")}`);
    if (rt.rebuilt.length) {
      out.push(`  rebuilt (${rt.rebuilt.length}):`);
      for (const name of rt.rebuilt.slice(0, max * 2)) out.push(`    ${name}: ${(report.runtimeReasons[name] ?? []).join("; ")}`);
      if (rt.rebuilt.length > max * 2) out.push(`    ... and ${rt.rebuilt.length - max * 2} more (see --json)`);
    }
  }
  if (report.shards && report.shards.bases.length + report.shards.runtimes.length > 0) {
    out.push("");
    out.push("Shard stacks to update:");
    if (report.shards.bases.length) out.push(`  base shards (${report.shards.bases.length}): ${summarise(report.shards.bases, 20)}`);
    if (report.shards.runtimes.length) out.push(`  runtime shards (${report.shards.runtimes.length}): ${summarise(report.shards.runtimes, 20)}`);
  }
  return out.join("\n");
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

function summarise(names: string[], n = 3): string {
  if (names.length === 0) return "-";
  if (names.length <= n) return names.join(",");
  return `${names.slice(0, n - 1).join(",")} +${names.length - n + 1} more`;
}

function list(names: string[]): string {
  if (names.length === 0) return "(none)";
  const shown = names.slice(0, 3).map((n) => `'${n}'`).join(", ");
  return names.length > 3 ? `${shown} and ${names.length - 3} more` : shown;
}

function show(v: string | undefined): string {
  return v === undefined ? "(unset)" : v === "" ? "''" : v;
}

function sorted(o: Record<string, string>): [string, string][] {
  return Object.entries(o).sort(([a], [b]) => cmp(a, b));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
