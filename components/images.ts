import { join, relative } from "node:path";
import * as dockerbuild from "@pulumi/docker-build";
import * as pulumi from "@pulumi/pulumi";
import { MatrixError, type Location } from "../matrix/errors.ts";
import { frontendBuildArgs, namedContexts } from "../matrix/lock.ts";
import { cacheTag, type BasePlan, type RuntimePlan, type UpstreamImage } from "../matrix/plan.ts";
import type { RegistryAuth } from "./registry.ts";

/** Where an image is pushed and cached. */
export interface ImageDestination {
  /** Repository the image is pushed to, e.g. `<account>.dkr.ecr.<region>.amazonaws.com/strata/bases`. */
  repository: pulumi.Input<string>;
  /** Repository of the registry build cache; each image caches under its own `cache-*` tags there. */
  cacheRepository: pulumi.Input<string>;
  /** Credentials to push with; none for a registry that needs none. */
  auth?: RegistryAuth;
}

export interface BaseImageArgs extends ImageDestination {
  /** The base as the build plan derived it: build inputs and content-addressed tag. */
  plan: BasePlan;
  /** Directory the plan's paths are relative to (the matrix file's directory). */
  dir: string;
}

/**
 * A CUDA/PyTorch base image, tagged with its content-addressed identity. It never builds on preview (a base
 * build takes hours) and never sets `pull` (that forces a rebuild on every up). Several platforms build as one
 * cached Image per platform, joined by an Index under the identity tag.
 */
export class BaseImage extends pulumi.ComponentResource {
  /** The digest-pinned reference `repository:tag@sha256:...` that runtimes build FROM. */
  readonly ref: pulumi.Output<string>;
  readonly tag: string;

  constructor(name: string, args: BaseImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("strata:images:BaseImage", name, {}, opts);
    const { plan } = args;
    this.tag = plan.tag;
    this.ref = buildImage(this, name, {
      ...args,
      tag: plan.tag,
      build: plan,
      cacheTag: (platform) => cacheTag("base", plan.name, platform),
      labels: { "dev.strata.base": plan.name, "dev.strata.identity": plan.hash },
    });
    this.registerOutputs({ ref: this.ref, tag: this.tag });
  }
}

export interface RuntimeImageArgs extends ImageDestination {
  /** The runtime as the build plan derived it. */
  plan: RuntimePlan;
  dir: string;
  /** The digest-pinned reference of its base, passed as the BASE_IMAGE build arg. */
  baseRef: pulumi.Input<string>;
  /** Rendered tags (the runtime's tag templates filled in with the stack's release). At least one. */
  tags: string[];
}

/**
 * A runtime image built FROM its base by digest: when a base changes, `pulumi preview` shows an update of exactly
 * that base and the runtimes built on it.
 */
export class RuntimeImage extends pulumi.ComponentResource {
  /** Digest-pinned reference of the first tag. */
  readonly ref: pulumi.Output<string>;

  constructor(name: string, args: RuntimeImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("strata:images:RuntimeImage", name, {}, opts);
    const { plan } = args;
    this.ref = buildImage(this, name, {
      ...args,
      tag: args.tags[0],
      extraTags: args.tags.slice(1),
      build: { ...plan, args: { ...plan.args, BASE_IMAGE: args.baseRef } },
      cacheTag: (platform) => cacheTag("runtime", plan.name, platform),
      labels: { "dev.strata.runtime": plan.name, "dev.strata.base": plan.base },
    });
    this.registerOutputs({ ref: this.ref });
  }
}

interface BuildSpec extends ImageDestination {
  dir: string;
  tag: string;
  extraTags?: string[];
  build: { context: string; dockerfile: string; target: string; platforms: string[]; args: Record<string, pulumi.Input<string>>; upstream?: UpstreamImage[]; at: Location };
  cacheTag: (platform?: string) => string;
  labels: Record<string, string>;
}

const PLATFORMS = new Set<string>(Object.values(dockerbuild.Platform));

/** Declares the Image (or per-platform Images and an Index) and returns the pushed, digest-pinned reference. */
function buildImage(parent: pulumi.Resource, name: string, spec: BuildSpec): pulumi.Output<string> {
  const { build } = spec;
  const unsupported = build.platforms.filter((p) => !PLATFORMS.has(p));
  if (unsupported.length > 0) {
    throw new MatrixError([{ ...build.at, message: `platform(s) ${unsupported.join(", ")} cannot be built by docker-build`, fix: `use one of: ${[...PLATFORMS].join(", ")}` }]);
  }
  const tagRef = (tag: string) => pulumi.interpolate`${spec.repository}:${tag}`;
  const registries = spec.auth ? [{ address: spec.auth.address, username: spec.auth.username, password: spec.auth.password }] : undefined;
  // Locked upstream images: each FROM resolves to its locked digest through a named context, not to its tag, and
  // the `# syntax=` frontend through BUILDKIT_SYNTAX.
  const named = Object.entries(namedContexts(build.upstream));
  const common = {
    push: true,
    buildOnPreview: false,
    context: { location: projectPath(spec.dir, build.context), ...(named.length > 0 ? { named: Object.fromEntries(named.map(([k, location]) => [k, { location }])) } : {}) },
    dockerfile: { location: projectPath(spec.dir, build.dockerfile) },
    target: build.target || undefined,
    buildArgs: { ...build.args, ...frontendBuildArgs(build.upstream) },
    labels: spec.labels,
    registries,
  };
  const cache = (platform?: string) => {
    const ref = pulumi.interpolate`${spec.cacheRepository}:${spec.cacheTag(platform)}`;
    return {
      cacheFrom: [{ registry: { ref } }],
      cacheTo: [{ registry: { ref, mode: dockerbuild.CacheMode.Max, imageManifest: true, ociMediaTypes: true } }],
    };
  };
  const allTags = [spec.tag, ...(spec.extraTags ?? [])];

  if (build.platforms.length === 1) {
    const image = new dockerbuild.Image(
      name,
      { ...common, ...cache(), platforms: build.platforms as dockerbuild.Platform[], tags: allTags.map(tagRef) },
      { parent },
    );
    return image.ref;
  }
  const perPlatform = build.platforms.map((platform) => {
    const suffix = `-${platform.replace(/\//g, "-")}`;
    return new dockerbuild.Image(
      `${name}${suffix}`,
      { ...common, ...cache(platform), platforms: [platform as dockerbuild.Platform], tags: [tagRef(`${spec.tag}${suffix}`)] },
      { parent },
    );
  });
  const indexes = allTags.map(
    (tag, i) =>
      new dockerbuild.Index(
        i === 0 ? name : `${name}-${tag}`,
        { sources: perPlatform.map((img) => img.ref), tag: tagRef(tag), push: true, registry: registries?.[0] },
        { parent },
      ),
  );
  return indexes[0].ref;
}

/** Paths as the docker-build provider takes them: relative to the project, so state is the same on every machine. */
function projectPath(dir: string, path: string): string {
  return relative(process.cwd(), join(dir, path)) || ".";
}
