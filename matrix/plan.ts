import { MatrixError, type Location, type Problem } from "./errors.ts";
import type { IdentityInputs } from "./identity.ts";

/** An upstream image a build starts FROM or copies from (after build-arg substitution), and its locked digests. */
export interface UpstreamImage {
  /** The short reference with its tag, as the lock file keys it: `nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04`. */
  ref: string;
  /** Platforms the build needs it for, sorted. */
  platforms: string[];
  /** The first Dockerfile line naming it. */
  at: Location;
  /** The digest the lock pins its tag to (the index digest of a multi-platform image); absent: built by tag. */
  digest?: string;
  /** Platform → manifest digest from the lock, for `platforms`. */
  platformDigests?: Record<string, string>;
  /**
   * Only the Dockerfile frontend of its `# syntax=` line (run on the builder, so needed for linux/amd64): pinned
   * through the BUILDKIT_SYNTAX build arg, not a named context.
   */
  frontend?: true;
}

/** The lock file beside the matrix, compared with the upstream images the plan needs. */
export interface LockState {
  /** The lock file, as messages name it (relative to the working directory). */
  file: string;
  exists: boolean;
  /** Needed but not locked: `ref` or `ref (platform)`. */
  missing: string[];
  /** Locked but no longer needed. */
  extra: string[];
  /** FROMs that give no image reference after substitution: `strata lock` fails on them. */
  problems: Problem[];
}

/** A base image as strata will build it, with its content-addressed identity. */
export interface BasePlan {
  name: string;
  /** Readable prefix plus the short identity hash, e.g. `ampere-3f2a9c1d0b7e`. */
  tag: string;
  /** Full sha256 identity. */
  hash: string;
  /** Build context, relative to the matrix file's directory. */
  context: string;
  /** Dockerfile, relative to the matrix file's directory. */
  dockerfile: string;
  target: string;
  args: Record<string, string>;
  platforms: string[];
  /** CUDA toolkit version, passed to the build as CUDA_VERSION. */
  cuda?: string;
  /** Names of the runtimes built FROM this base. */
  consumers: string[];
  /** For derived bases: the key field values that define the base. */
  key?: Record<string, string>;
  /** Upstream images its stages start FROM or copy from, pinned when the lock holds them. */
  upstream?: UpstreamImage[];
  /** The identity inputs and the per-file context digests behind them, for explaining changes. */
  inputs: IdentityInputs & { contextFiles: Record<string, string> };
  at: Location;
}

/** A runtime image built FROM its base through the BASE_IMAGE build arg. */
export interface RuntimePlan {
  name: string;
  base: string;
  context: string;
  dockerfile: string;
  target: string;
  args: Record<string, string>;
  platforms: string[];
  /** Tag templates, rendered with the release of the stack ({name}, {base}, {version}, {branch}, {sha}). */
  tags: string[];
  /** For derived runtimes: the mapped fields of the consumer entry. */
  fields?: Record<string, string>;
  /** Upstream images other than its base (BASE_IMAGE), pinned when the lock holds them. */
  upstream?: UpstreamImage[];
  at: Location;
}

/** The validated matrix with everything derived: what every consumer of the matrix works from. */
export interface BuildPlan {
  /** The matrix file as given. */
  file: string;
  /** Absolute directory of the matrix file; plan paths are relative to it. */
  dir: string;
  bases: BasePlan[];
  runtimes: RuntimePlan[];
  warnings: Problem[];
  /** The upstream lock, when the matrix was loaded with it. */
  lock?: LockState;
}

/** The registry cache tag of a base or runtime (per platform when a base builds several). */
export function cacheTag(kind: "base" | "runtime", name: string, platform?: string): string {
  return `cache-${kind}-${name}${platform ? `-${platform.replace(/\//g, "-")}` : ""}`;
}

/** Placeholders allowed in runtime tag templates. */
export const TAG_PLACEHOLDERS = ["name", "base", "version", "branch", "sha"] as const;
export type TagVars = Record<(typeof TAG_PLACEHOLDERS)[number], string>;

/** Default runtime tags: `<runtime>-<version>` (e.g. `turing-v0.1.1`), the scheme release workflows use. */
export const DEFAULT_RUNTIME_TAGS = ["{name}-{version}"];

/** OCI distribution spec: a tag is at most 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'. */
export const OCI_TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** Fills `{placeholder}`s from `vars`; unknown placeholders are returned in `missing`. */
export function renderTemplate(template: string, vars: Record<string, string>): { value: string; missing: string[] } {
  const missing: string[] = [];
  const value = template.replace(/\{([A-Za-z][A-Za-z0-9]*)\}/g, (_, name: string) => {
    if (!Object.hasOwn(vars, name)) {
      missing.push(name);
      return "";
    }
    return vars[name];
  });
  return { value, missing };
}

/** Renders a runtime's tags for a release; a tag that is not a valid OCI tag is a MatrixError at the runtime. */
export function runtimeTags(runtime: RuntimePlan, release: Omit<TagVars, "name" | "base">): string[] {
  return runtime.tags.map((t) => {
    const { value } = renderTemplate(t, { ...release, name: runtime.name, base: runtime.base });
    if (!OCI_TAG.test(value)) {
      throw new MatrixError([
        {
          ...runtime.at,
          message: `runtime '${runtime.name}': tag template '${t}' gives '${value}', which is not a valid OCI tag`,
          fix: "tags are 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'; check the template and strata:release",
        },
      ]);
    }
    return value;
  });
}

/**
 * Narrows a plan to some bases and the runtimes built on them: one shard of a large matrix, built by a stack of
 * its own. Unknown names are an error at `at` (the stack config).
 */
export function selectBases(plan: BuildPlan, names: string[] | undefined, at: Location): BuildPlan {
  if (!names) return plan;
  const known = new Set(plan.bases.map((b) => b.name));
  const unknown = names.filter((n) => !known.has(n));
  if (unknown.length > 0) {
    throw new MatrixError([{ ...at, message: `strata:bases names base(s) not in the matrix: ${unknown.join(", ")}`, fix: `use names from \`strata check\`: ${[...known].slice(0, 10).join(", ")}${known.size > 10 ? ", ..." : ""}` }]);
  }
  const keep = new Set(names);
  return { ...plan, bases: plan.bases.filter((b) => keep.has(b.name)), runtimes: plan.runtimes.filter((r) => keep.has(r.base)) };
}
