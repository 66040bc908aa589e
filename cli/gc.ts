import { readFileSync } from "node:fs";
import { BatchDeleteImageCommand, ECRClient } from "@aws-sdk/client-ecr";
import { MatrixError } from "../matrix/errors.ts";
import { TAG_HASH_LENGTH } from "../matrix/identity.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { registryTarget } from "./forecast.ts";
import { ATTESTATION_TAG } from "./attestation.ts";
import { RegistryClient, RegistryError, type Manifest } from "./registry.ts";
import { parseFlags, usageError } from "./args.ts";
import { readStackFile } from "./stack.ts";

/**
 * `strata gc`: base tags nothing uses any more. A base tag is kept when the current matrix derives it, when a
 * runtime image of a kept release is built FROM it (the base's layers are the first layers of the runtime: read
 * from the registry, no label needed), when an open pull request's matrix derives it (`--in-use`, written by the
 * generated workflow), when it is a `pr-*` tag younger than the pull-request age limit, or when it is younger than
 * `--min-age-days`. Everything else is garbage: dry run by default, `--apply` deletes it.
 */

/** One base image in the registry, as GC sees it. */
export interface BaseEntry {
  tag: string;
  digest: string;
  /** Layer lists of each platform image (one for a single-platform base). */
  layerSets: string[][];
  /** Every blob and child manifest it references, with sizes (for the space it frees). */
  blobs: { digest: string; size: number }[];
  /** Image config `created`; null when missing or unparsable (then it is never old enough). */
  created: Date | null;
}

export interface RuntimeEntry {
  tag: string;
  layerSets: string[][];
}

export interface GcPolicy {
  /** Tags the current matrix derives. */
  current: ReadonlySet<string>;
  /** Tags open pull requests' matrices derive (and any tag the caller pins). */
  inUse: ReadonlySet<string>;
  /** Base names of the current matrix (their build cache is kept). */
  currentNames: ReadonlySet<string>;
  /** Release versions (`{version}` of runtime tags) to keep, newest by version order. */
  keepReleases: number;
  /** Only bases older than this are deleted. */
  minAgeDays: number;
  /** `pr-*` base tags are kept until this age. */
  prMaxAgeDays: number;
  now: Date;
  /** From a runtime tag, its release version; null when no tag template of the matrix matches. */
  versionOf: (runtimeTag: string) => string | null;
}

export interface GcDecision {
  tag: string;
  digest: string;
  action: "delete" | "keep";
  why: string;
}

export interface GcResult {
  decisions: GcDecision[];
  /** Releases kept (newest first) and runtime tags that match no template (their bases are kept). */
  releases: string[];
  unattributed: string[];
  /** Bytes of blobs only deleted images reference. */
  freeBytes: number;
  /** Cache tags of base names no kept base has. */
  cacheTags: string[];
}

const DAY = 86_400_000;

/** Natural order of versions: v0.10.0 after v0.9.1. */
export function compareVersions(a: string, b: string): number {
  const parts = (s: string) => s.match(/\d+|\D+/g) ?? [];
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return 0;
}

/** True when every layer of the base comes first, in order, in some platform image of the runtime. */
function builtFrom(runtime: RuntimeEntry, base: BaseEntry): boolean {
  return base.layerSets.some((bl) => bl.length > 0 && runtime.layerSets.some((rl) => rl.length > bl.length && bl.every((d, i) => rl[i] === d)));
}

/** Which base tags to delete and why each of the others stays. Pure. */
export function selectGarbage(bases: readonly BaseEntry[], runtimes: readonly RuntimeEntry[], cacheTagsInRegistry: readonly string[], policy: GcPolicy): GcResult {
  const versions = new Map<string, RuntimeEntry[]>();
  const unattributed: RuntimeEntry[] = [];
  for (const r of runtimes) {
    const v = policy.versionOf(r.tag);
    if (v === null) unattributed.push(r);
    else versions.set(v, [...(versions.get(v) ?? []), r]);
  }
  // Branch builds (a version without a digit, e.g. `main`) are always kept; releases by version, newest first.
  const branches = [...versions.keys()].filter((v) => !/\d/.test(v));
  const numbered = [...versions.keys()].filter((v) => /\d/.test(v)).sort((a, b) => compareVersions(b, a));
  const kept = [...branches, ...numbered.slice(0, Math.max(0, policy.keepReleases))];
  const keptRuntimes = [...kept.flatMap((v) => versions.get(v)!.map((r) => ({ r, why: `used by release ${v} (runtimes:${r.tag})` }))), ...unattributed.map((r) => ({ r, why: `used by runtimes:${r.tag}, which matches no tag template of the matrix` }))];

  const decisions: GcDecision[] = [];
  for (const b of bases) {
    const age = b.created ? (policy.now.getTime() - b.created.getTime()) / DAY : null;
    const user = keptRuntimes.find(({ r }) => builtFrom(r, b));
    let why: string | null = null;
    if (policy.current.has(b.tag)) why = "a base of the current matrix";
    else if (policy.inUse.has(b.tag)) why = "in use by an open pull request (--in-use)";
    else if (user) why = user.why;
    else if (b.tag.startsWith("pr-") && (age === null || age < policy.prMaxAgeDays)) why = `pull-request tag younger than ${policy.prMaxAgeDays} days`;
    else if (age === null) why = "age unknown (the image config has no creation time)";
    else if (age < policy.minAgeDays) why = `${Math.floor(age)} day(s) old, younger than ${policy.minAgeDays}`;
    decisions.push(why ? { tag: b.tag, digest: b.digest, action: "keep", why } : { tag: b.tag, digest: b.digest, action: "delete", why: `unused: not in the matrix, no kept release or open pull request uses it; ${Math.floor(age!)} day(s) old` });
  }
  // A digest a kept tag also points to cannot be deleted (deleting a manifest removes all its tags).
  const keptDigests = new Set(decisions.filter((d) => d.action === "keep").map((d) => d.digest));
  for (const d of decisions) {
    if (d.action === "delete" && keptDigests.has(d.digest)) Object.assign(d, { action: "keep", why: `same image as a kept tag (${decisions.find((k) => k.action === "keep" && k.digest === d.digest)!.tag})` });
  }
  const deleted = new Set(decisions.filter((d) => d.action === "delete").map((d) => d.tag));
  const keptBlobs = new Set<string>();
  for (const b of bases) if (!deleted.has(b.tag)) for (const x of b.blobs) keptBlobs.add(x.digest);
  for (const r of runtimes) for (const l of r.layerSets.flat()) keptBlobs.add(l);
  const freed = new Map<string, number>();
  for (const b of bases) if (deleted.has(b.tag)) for (const x of b.blobs) if (!keptBlobs.has(x.digest)) freed.set(x.digest, x.size);
  // Build cache of a base name no kept base (and no current matrix base) has any more.
  const keptPrefixes = new Set(decisions.filter((d) => d.action === "keep").map((d) => baseNameOf(d.tag)));
  const cacheTags = cacheTagsInRegistry.filter((t) => {
    const m = /^cache-base-(.+)$/.exec(t);
    if (!m) return false;
    const owners = [...keptPrefixes, ...policy.currentNames].filter((n) => m[1] === n || m[1].startsWith(`${n}-linux-`));
    return owners.length === 0 && [...deleted].some((tag) => m[1] === baseNameOf(tag) || m[1].startsWith(`${baseNameOf(tag)}-linux-`));
  });
  return { decisions, releases: kept, unattributed: unattributed.map((r) => r.tag), freeBytes: [...freed.values()].reduce((a, b) => a + b, 0), cacheTags };
}

/**
 * The attestation tags to delete with the deleted bases: those whose subject is a deleted base's image or one of
 * its platform manifests, unless a kept base references that manifest too. Pure.
 */
export function attestationsOfDeleted(tags: readonly string[], bases: readonly BaseEntry[], decisions: readonly GcDecision[]): string[] {
  const deleted = new Set(decisions.filter((d) => d.action === "delete").map((d) => d.tag));
  const kept = new Set<string>();
  const doomed = new Set<string>();
  for (const b of bases) {
    const into = deleted.has(b.tag) ? doomed : kept;
    into.add(b.digest);
    for (const x of b.blobs) into.add(x.digest);
  }
  return tags.filter((t) => {
    const m = ATTESTATION_TAG.exec(t);
    const subject = m ? `sha256:${m[1]}` : undefined;
    return subject !== undefined && doomed.has(subject) && !kept.has(subject);
  });
}

/**
 * Attestation tags whose subject is none of the inspected bases' images or manifests: candidates for orphans
 * (their image expired under a lifecycle rule, e.g. a `pr-*` base). Only those whose subject `exists` says is
 * gone are returned. Pure but for `exists`.
 */
export async function orphanAttestations(tags: readonly string[], bases: readonly BaseEntry[], exists: (digest: string) => Promise<boolean>): Promise<string[]> {
  const known = new Set(bases.flatMap((b) => [b.digest, ...b.blobs.map((x) => x.digest)]));
  const out: string[] = [];
  const gone = new Map<string, boolean>();
  for (const t of tags) {
    const m = ATTESTATION_TAG.exec(t);
    if (!m) continue;
    const subject = `sha256:${m[1]}`;
    if (known.has(subject)) continue;
    if (!gone.has(subject)) gone.set(subject, !(await exists(subject)));
    if (gone.get(subject)) out.push(t);
  }
  return out;
}

/** `ampere-0123456789ab` → `ampere`. */
function baseNameOf(tag: string): string {
  return tag.replace(new RegExp(`-[0-9a-f]{${TAG_HASH_LENGTH}}$`), "");
}

/** A runtime tag's version under the matrix's tag templates ({name}, {base} literal; {version} captured). */
export function versionReader(plan: Pick<BuildPlan, "runtimes">): (tag: string) => string | null {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const patterns: RegExp[] = [];
  for (const r of plan.runtimes) {
    for (const t of r.tags) {
      if (!t.includes("{version}")) continue;
      const parts = t.split(/(\{[a-z]+\})/).map((p) => (p === "{name}" ? esc(r.name) : p === "{base}" ? esc(r.base) : p === "{version}" ? "(?<version>[A-Za-z0-9_.-]+)" : p === "{branch}" ? "[A-Za-z0-9_.-]+" : p === "{sha}" ? "[0-9a-f]{7}" : esc(p)));
      patterns.push(new RegExp(`^${parts.join("")}$`));
    }
  }
  return (tag) => {
    for (const p of patterns) {
      const m = p.exec(tag);
      if (m?.groups?.version) return m.groups.version;
    }
    return null;
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Registry side

/** Deletes one image by digest: the registry API (distribution), or ECR's BatchDeleteImage (ECR has no DELETE). */
export interface ImageDeleter {
  deleteDigest(repo: string, digest: string): Promise<void>;
}

export function registryDeleter(client: RegistryClient): ImageDeleter {
  return { deleteDigest: async (repo, digest) => void (await client.deleteManifest(repo, digest)) };
}

/** ECR: `<account>.dkr.ecr.<region>.amazonaws.com`; credentials from the default chain (the workflow's OIDC role). */
export function ecrDeleter(host: string, client?: ECRClient): ImageDeleter | null {
  const m = /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$/.exec(host);
  if (!m) return null;
  const ecr = client ?? new ECRClient({ region: m[2] });
  return {
    deleteDigest: async (repo, digest) => {
      const out = await ecr.send(new BatchDeleteImageCommand({ registryId: m[1], repositoryName: repo, imageIds: [{ imageDigest: digest }] }));
      const failure = out.failures?.find((f) => f.failureCode !== "ImageNotFound");
      if (failure) throw new RegistryError(`ECR: cannot delete ${repo}@${digest}: ${failure.failureCode} ${failure.failureReason ?? ""}`);
    },
  };
}

/** Layer lists, blobs and creation time of an image (index or manifest). */
async function inspect(client: RegistryClient, repo: string, tag: string): Promise<{ digest: string; layerSets: string[][]; blobs: { digest: string; size: number }[]; created: Date | null } | null> {
  const top = await client.manifest(repo, tag);
  if (!top) return null;
  const blobs: { digest: string; size: number }[] = [{ digest: top.digest, size: top.size }];
  const layerSets: string[][] = [];
  let created: Date | null = null;
  const images: Manifest[] = [];
  if (top.manifest.manifests) {
    for (const child of top.manifest.manifests) {
      const m = await client.manifest(repo, child.digest);
      if (!m) continue;
      blobs.push({ digest: m.digest, size: m.size });
      // Attestation manifests (unknown/unknown platform) hold no layers of the image.
      if (child.platform?.os === "unknown") {
        for (const l of m.manifest.layers ?? []) blobs.push({ digest: l.digest, size: l.size });
        continue;
      }
      images.push(m.manifest);
    }
  } else images.push(top.manifest);
  for (const m of images) {
    layerSets.push((m.layers ?? []).map((l) => l.digest));
    for (const l of m.layers ?? []) blobs.push({ digest: l.digest, size: l.size });
    if (m.config) {
      blobs.push({ digest: m.config.digest, size: m.config.size });
      if (!created) {
        try {
          const cfg = JSON.parse((await client.blob(repo, m.config.digest)).toString("utf8")) as { created?: string };
          const t = cfg.created ? Date.parse(cfg.created) : NaN;
          if (Number.isFinite(t)) created = new Date(t);
        } catch {
          /* no creation time: never old enough */
        }
      }
    }
  }
  return { digest: top.digest, layerSets, blobs, created };
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T, R>(items: readonly T[], width: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += width) out.push(...(await Promise.all(items.slice(i, i + width).map(fn))));
  return out;
}

export const GC_USAGE = `Usage:
  strata gc --registry HOST[/PREFIX] [--keep-releases K] [--min-age-days N] [--pr-max-age-days D]
            [--in-use FILE] [--matrix PATH] [--stack NAME] [--apply [--runtime-orphans]] [--json]

Lists the base tags in HOST/PREFIX/bases that no current matrix base, no runtime of the last K releases (the
{version} of runtime tags, natural order; branch builds such as 'main' always count) and no open pull request uses
(--in-use: a file of base tags, one per line, e.g. from the pull requests' \`strata check --json\`), and that are
older than N days (image config creation time); \`pr-*\` tags are kept until D days. Dry run by default: prints
what it would delete and the space that frees. --apply deletes those images, their attestations and referrers
indexes (tags sha256-<digest> and sha256-<digest>.spdx/.provenance/.att/.sig/.sbom of the image or its platform
manifests; also those whose image is gone, e.g. expired by a lifecycle rule) and the build cache of base names nothing keeps.
It also lists the attestations and signatures left in HOST/PREFIX/runtimes by runtimes no longer there (a branch tag
moved on, the old image expired untagged); --apply --runtime-orphans deletes those too, which needs credentials that
may delete in the runtimes repository (the gc role may not: it never deletes a runtime).

  --keep-releases K    default 3
  --min-age-days N     default 30
  --pr-max-age-days D  default 14 (the ECR lifecycle rule's default for pr-* tags)`;

/** `strata gc`. */
export async function gcCommand(args: string[]): Promise<number> {
  const flags = parseFlags("gc", GC_USAGE, args, {
    registry: { type: "string" },
    "keep-releases": { type: "string" },
    "min-age-days": { type: "string" },
    "pr-max-age-days": { type: "string" },
    "in-use": { type: "string" },
    matrix: { type: "string" },
    stack: { type: "string" },
    apply: { type: "boolean" },
    "runtime-orphans": { type: "boolean" },
    json: { type: "boolean" },
  });
  if (flags.exit !== undefined) return flags.exit;
  const v: Record<string, string | boolean | undefined> = flags.values;
  const usage = (msg: string) => usageError("gc", GC_USAGE, msg);
  const count = (name: string, dflt: number): number | null => {
    const raw = v[name] as string | undefined;
    if (raw === undefined) return dflt;
    return /^\d{1,6}$/.test(raw) ? Number(raw) : null;
  };
  const keepReleases = count("keep-releases", 3);
  const minAgeDays = count("min-age-days", 30);
  const prMaxAgeDays = count("pr-max-age-days", 14);
  if (keepReleases === null || minAgeDays === null || prMaxAgeDays === null) return usage("--keep-releases, --min-age-days and --pr-max-age-days take a whole number");
  const stack = (v.stack as string | undefined) ?? "dev";
  const { config } = readStackFile(stack);
  const registryArg = (v.registry as string | undefined) ?? (((config["strata:registry"] ?? {}) as { kind?: string; address?: string }).kind === "local" ? (((config["strata:registry"] ?? {}) as { address?: string }).address ?? "localhost:5000") : undefined);
  if (!registryArg) return usage("--registry HOST[/PREFIX] is required (for ECR: the stack output `registry`)");
  const plan = loadMatrix((v.matrix as string | undefined) ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml");
  let inUse = new Set<string>();
  if (v["in-use"]) {
    try {
      inUse = new Set(readFileSync(v["in-use"] as string, "utf8").split(/\s+/).filter(Boolean));
    } catch (err) {
      throw new MatrixError([{ file: v["in-use"] as string, line: 1, col: 1, message: `cannot read the in-use list (${(err as Error).message})`, fix: "pass a file of base tags, one per line" }]);
    }
  }
  const { host, prefix } = registryTarget(registryArg, config);
  const client = new RegistryClient(host);
  const repos = { bases: `${prefix}/bases`, runtimes: `${prefix}/runtimes`, cache: `${prefix}/cache` };
  const deleted: string[] = [];
  try {
    const baseTags = await client.tags(repos.bases);
    const attestationTags = baseTags.filter((t) => ATTESTATION_TAG.test(t));
    const candidates = baseTags.filter((t) => new RegExp(`-[0-9a-f]{${TAG_HASH_LENGTH}}$`).test(t) || t.startsWith("pr-"));
    const skipped = baseTags.filter((t) => !candidates.includes(t) && !attestationTags.includes(t));
    const bases = (await pool(candidates, 8, async (tag) => {
      const i = await inspect(client, repos.bases, tag);
      return i ? { tag, ...i } : null;
    })).filter((b): b is BaseEntry => b !== null);
    const allRuntimeTags = await client.tags(repos.runtimes);
    const runtimeAttestationTags = allRuntimeTags.filter((t) => ATTESTATION_TAG.test(t));
    const runtimeTags = allRuntimeTags.filter((t) => !ATTESTATION_TAG.test(t));
    const runtimes = (await pool(runtimeTags, 8, async (tag) => {
      const i = await inspect(client, repos.runtimes, tag);
      return i ? { tag, layerSets: i.layerSets } : null;
    })).filter((r): r is RuntimeEntry => r !== null);
    const cacheTags = await client.tags(repos.cache);
    const result = selectGarbage(bases, runtimes, cacheTags, {
      current: new Set(plan.bases.map((b) => b.tag)),
      currentNames: new Set(plan.bases.map((b) => b.name)),
      inUse,
      keepReleases,
      minAgeDays,
      prMaxAgeDays,
      now: new Date(),
      versionOf: versionReader(plan),
    });
    const doomed = result.decisions.filter((d) => d.action === "delete");
    const attestations = [
      ...attestationsOfDeleted(attestationTags, bases, result.decisions),
      ...(await orphanAttestations(attestationTags, bases, async (d) => (await client.manifest(repos.bases, d)) !== null)),
    ];
    // Attestations and signatures of runtimes no longer in the registry (superseded on a branch tag, then expired
    // as untagged): listed always, deleted only with --runtime-orphans, by credentials that may delete there.
    const runtimeOrphans = await orphanAttestations(runtimeAttestationTags, [], async (d) => (await client.manifest(repos.runtimes, d)) !== null);
    if (v.apply) {
      const deleter = ecrDeleter(host) ?? registryDeleter(client);
      for (const d of doomed) {
        await deleter.deleteDigest(repos.bases, d.digest);
        deleted.push(`${repos.bases}:${d.tag}`);
      }
      for (const t of attestations) {
        const m = await client.manifest(repos.bases, t);
        if (m) await deleter.deleteDigest(repos.bases, m.digest);
        deleted.push(`${repos.bases}:${t}`);
      }
      for (const t of result.cacheTags) {
        const m = await client.manifest(repos.cache, t);
        if (m) await deleter.deleteDigest(repos.cache, m.digest);
        deleted.push(`${repos.cache}:${t}`);
      }
      if (v["runtime-orphans"]) {
        for (const t of runtimeOrphans) {
          const m = await client.manifest(repos.runtimes, t);
          if (m) await deleter.deleteDigest(repos.runtimes, m.digest);
          deleted.push(`${repos.runtimes}:${t}`);
        }
      }
    }
    if (v.json) {
      process.stdout.write(JSON.stringify({ registry: `${host}/${prefix}`, apply: v.apply === true, ...result, attestations, runtimeOrphans, skipped, deleted }, null, 2) + "\n");
      return 0;
    }
    const out: string[] = [`strata gc: ${host}/${repos.bases}, keep ${keepReleases} release(s), delete only what is older than ${minAgeDays} day(s)${v.apply ? "" : ", dry run"}`];
    out.push(`  releases kept: ${result.releases.length ? result.releases.join(", ") : "(none)"}${result.unattributed.length ? `; ${result.unattributed.length} runtime tag(s) match no tag template (their bases are kept)` : ""}`);
    for (const d of [...result.decisions].sort((a, b) => (a.action === b.action ? (a.tag < b.tag ? -1 : 1) : a.action === "delete" ? -1 : 1))) out.push(`  ${d.action === "delete" ? (v.apply ? "DELETED" : "DELETE ") : "KEEP   "} ${d.tag}  ${d.why}`);
    for (const t of attestations) out.push(`  ${v.apply ? "DELETED" : "DELETE "} ${t}  attestation of a deleted base, or of an image no longer in the registry`);
    for (const t of result.cacheTags) out.push(`  ${v.apply ? "DELETED" : "DELETE "} cache:${t}  build cache of a base name nothing keeps`);
    const orphansGo = v.apply && v["runtime-orphans"];
    for (const t of runtimeOrphans) out.push(`  ${orphansGo ? "DELETED" : v["runtime-orphans"] ? "DELETE " : "ORPHAN "} runtimes:${t}  attestation or signature of a runtime no longer in the registry`);
    if (runtimeOrphans.length && !v["runtime-orphans"]) out.push(`  ${runtimeOrphans.length} runtime orphan(s) left: add --runtime-orphans, with credentials that may delete in ${repos.runtimes} (the gc role may not)`);
    if (skipped.length) out.push(`  left alone: ${skipped.length} tag(s) that are not strata base tags (${skipped.slice(0, 5).join(", ")}${skipped.length > 5 ? ", ..." : ""})`);
    const size = mib(result.freeBytes);
    out.push(
      v.apply
        ? `Deleted ${doomed.length} base tag(s), ${attestations.length} attestation(s), ${result.cacheTags.length} cache tag(s); about ${size} of blobs no kept image references (a distribution registry frees them at its next garbage-collect; ECR at once).`
        : `Would free about ${size} (blobs no kept image references): ${doomed.length} base tag(s), ${attestations.length} attestation(s), ${result.cacheTags.length} cache tag(s). Run with --apply to delete them.`,
    );
    process.stdout.write(out.join("\n") + "\n");
    return 0;
  } catch (err) {
    if (err instanceof RegistryError) {
      process.stderr.write(`strata gc: ${err.message}\nstrata gc: stopped; ${deleted.length ? `deleted before the error: ${deleted.join(", ")}` : "nothing was deleted"}\n`);
      return 1;
    }
    throw err;
  }
}

function mib(bytes: number): string {
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1 << 30) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
}

