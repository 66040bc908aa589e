import { join, relative } from "node:path";
import { frontendBuildArgs, namedContexts } from "../matrix/lock.ts";
import { cacheTag, runtimeTags, type BuildPlan, type TagVars } from "../matrix/plan.ts";

/** A `docker buildx bake` file in its JSON form. */
export interface BakeFile {
  group: Record<string, { targets: string[] }>;
  target: Record<string, BakeTarget>;
}

export interface BakeTarget {
  context: string;
  dockerfile: string;
  target?: string;
  /** Named contexts: each locked upstream image's FROM → `docker-image://<ref>@<digest>`. */
  contexts?: Record<string, string>;
  args: Record<string, string>;
  platforms: string[];
  tags: string[];
  labels: Record<string, string>;
  "cache-from": string[];
  "cache-to": string[];
  output: string[];
  attest: string[];
}

export interface BakeOptions {
  /** Repository bases are pushed to, e.g. `localhost:5000/strata/bases`. */
  basesRepository: string;
  runtimesRepository: string;
  cacheRepository: string;
  release: Omit<TagVars, "name" | "base">;
  /** Base target name → pushed digest (`sha256:...`), from `docker buildx bake --metadata-file`. */
  pins?: Record<string, string>;
}

/**
 * The same builds `pulumi up` declares, as a bake file: group `bases` (also `default`) and group `runtimes`.
 * Runtimes take BASE_IMAGE as the base's identity tag, or `tag@digest` once the bases' digests are pinned from
 * the metadata file of the bases build. Locked upstream images come in as named contexts pinned by digest. Paths
 * are relative to the working directory, where bake is run.
 */
export function bakeFile(plan: BuildPlan, opts: BakeOptions): BakeFile {
  const target: Record<string, BakeTarget> = {};
  const cache = (tag: string) => ({
    "cache-from": [`type=registry,ref=${opts.cacheRepository}:${tag}`],
    "cache-to": [`type=registry,ref=${opts.cacheRepository}:${tag},mode=max,image-manifest=true,oci-mediatypes=true`],
  });
  const paths = (context: string, dockerfile: string) => {
    const contextAbs = join(plan.dir, context);
    return { context: relative(process.cwd(), contextAbs) || ".", dockerfile: relative(contextAbs, join(plan.dir, dockerfile)) };
  };
  // BuildKit's own attestations stay off: `strata attest` attaches the SBOM and provenance of both build paths
  // (docker-build cannot produce BuildKit's), and BuildKit's would put a timestamped manifest into the index, so an
  // identical rebuild would no longer give an identical digest.
  const common = { output: ["type=registry"], attest: ["type=provenance,disabled=true", "type=sbom,disabled=true"] };

  const contexts = (images: Parameters<typeof namedContexts>[0]) => {
    const named = namedContexts(images);
    return Object.keys(named).length > 0 ? { contexts: named } : {};
  };
  for (const b of plan.bases) {
    target[`base-${b.name}`] = {
      ...paths(b.context, b.dockerfile),
      ...(b.target ? { target: b.target } : {}),
      ...contexts(b.upstream),
      args: { ...b.args, ...frontendBuildArgs(b.upstream) },
      platforms: b.platforms,
      tags: [`${opts.basesRepository}:${b.tag}`],
      labels: { "dev.strata.base": b.name, "dev.strata.identity": b.hash },
      ...cache(cacheTag("base", b.name)),
      ...common,
    };
  }
  for (const r of plan.runtimes) {
    const base = plan.bases.find((b) => b.name === r.base)!;
    const pin = opts.pins?.[`base-${base.name}`];
    target[`runtime-${r.name}`] = {
      ...paths(r.context, r.dockerfile),
      ...(r.target ? { target: r.target } : {}),
      ...contexts(r.upstream),
      args: { ...r.args, ...frontendBuildArgs(r.upstream), BASE_IMAGE: `${opts.basesRepository}:${base.tag}${pin ? `@${pin}` : ""}` },
      platforms: r.platforms,
      tags: runtimeTags(r, opts.release).map((t) => `${opts.runtimesRepository}:${t}`),
      labels: { "dev.strata.runtime": r.name, "dev.strata.base": r.base },
      ...cache(cacheTag("runtime", r.name)),
      ...common,
    };
  }
  const bases = plan.bases.map((b) => `base-${b.name}`);
  return {
    group: { default: { targets: bases }, bases: { targets: bases }, runtimes: { targets: plan.runtimes.map((r) => `runtime-${r.name}`) } },
    target,
  };
}

/** Reads base digests out of a `docker buildx bake --metadata-file` result. */
export function pinsFromMetadata(metadata: unknown): Record<string, string> {
  const pins: Record<string, string> = {};
  if (metadata && typeof metadata === "object") {
    for (const [name, entry] of Object.entries(metadata as Record<string, unknown>)) {
      const digest = (entry as Record<string, unknown> | null)?.["containerimage.digest"];
      if (typeof digest === "string" && /^sha256:[0-9a-f]{64}$/.test(digest)) pins[name] = digest;
    }
  }
  return pins;
}
