import type { Location, Problems } from "./errors.ts";

/**
 * Checks of the build args the CUDA/PyTorch base Dockerfiles understand. Each check reads only the args it
 * knows, so matrices with other args (derived bases, plain images) pass untouched.
 */
export interface ArgContext {
  base: string;
  args: Record<string, string>;
  cuda?: string;
  argAt: (name: string) => Location;
  cudaAt: () => Location;
}

/** Compute capabilities nvcc accepts in TORCH_CUDA_ARCH_LIST style lists (Kepler to Blackwell). */
const KNOWN_ARCHS = new Set([
  "3.5", "3.7", "5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5",
  "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "10.1", "10.3", "11.0", "12.0", "12.1",
]);

export function checkBuildArgs(ctx: ArgContext, problems: Problems): void {
  const { args, base } = ctx;

  const archList = args.CUDA_ARCH_LIST;
  if (archList !== undefined) {
    const entries = archList.split(/[;\s]+/).filter(Boolean);
    const bad = entries.filter((e) => {
      const m = /^(\d{1,2}\.\d)[af]?(\+PTX)?$/.exec(e);
      return !m || !KNOWN_ARCHS.has(m[1]);
    });
    if (entries.length === 0 || bad.length > 0) {
      problems.error(
        ctx.argAt("CUDA_ARCH_LIST"),
        `base '${base}': CUDA_ARCH_LIST '${archList}' is not a valid CUDA arch list${bad.length ? ` (${bad.map((b) => `'${b}'`).join(", ")})` : ""}`,
        "list compute capabilities separated by ';', e.g. \"7.5\", \"8.0;8.6\" or \"9.0+PTX\" (known: " + [...KNOWN_ARCHS].join(", ") + ")",
      );
    }
  }

  const channel = args.TORCH_CHANNEL;
  if (channel !== undefined && !["stable", "nightly", "test"].includes(channel)) {
    problems.error(ctx.argAt("TORCH_CHANNEL"), `base '${base}': TORCH_CHANNEL '${channel}' is not a PyTorch channel`, "use stable, nightly or test");
  }

  const suffix = args.TORCH_CUDA_SUFFIX;
  let suffixCuda: [number, number] | undefined;
  if (suffix !== undefined) {
    suffixCuda = parseCudaSuffix(suffix);
    if (!suffixCuda) {
      problems.error(ctx.argAt("TORCH_CUDA_SUFFIX"), `base '${base}': TORCH_CUDA_SUFFIX '${suffix}' is not a CUDA wheel suffix`, "write cu<major><minor>, e.g. cu126 for CUDA 12.6");
    }
  }

  const torch = args.TORCH_VER;
  if (torch !== undefined && torch !== "") {
    const m = /^\d+\.\d+(\.\d+)?([.a-z0-9]*)?(\+(cu\d+|cpu|rocm[\d.]+))?$/.exec(torch);
    if (!m) {
      problems.error(ctx.argAt("TORCH_VER"), `base '${base}': TORCH_VER '${torch}' is not a PyTorch version`, "write a version such as 2.7.1+cu126");
    } else if (m[4]?.startsWith("cu")) {
      const verCuda = parseCudaSuffix(m[4]);
      if (suffix !== undefined && m[4] !== suffix) {
        problems.error(
          ctx.argAt("TORCH_VER"),
          `base '${base}': TORCH_VER '${torch}' is built for ${m[4]} but TORCH_CUDA_SUFFIX is '${suffix}'`,
          "make the +cuXXX of TORCH_VER and TORCH_CUDA_SUFFIX the same",
        );
      } else if (suffix === undefined) {
        suffixCuda = verCuda;
      }
    }
  }

  if (ctx.cuda && suffixCuda) {
    const [major, minor] = ctx.cuda.split(".").map(Number);
    const [tMajor, tMinor] = suffixCuda;
    const where = suffix !== undefined ? ctx.argAt("TORCH_CUDA_SUFFIX") : ctx.argAt("TORCH_VER");
    if (tMajor !== major) {
      problems.error(
        where,
        `base '${base}': torch is built for CUDA ${tMajor}.${tMinor} but the base's CUDA is ${ctx.cuda} (major versions differ)`,
        `use a torch build for CUDA ${major} (e.g. cu${major}${minor}) or change the base's cuda`,
      );
    } else if (tMinor !== minor) {
      problems.warn(
        where,
        `base '${base}': torch is built for CUDA ${tMajor}.${tMinor} but the base's CUDA is ${ctx.cuda} (minor versions differ)`,
        `this usually works within CUDA ${major}.x; use cu${major}${minor} to match exactly`,
      );
    }
  }

  const fa = args.FA_VER;
  if (fa !== undefined && fa !== "" && !/^\d+\.\d+(\.\d+)?(\.post\d+)?$/.test(fa)) {
    problems.error(ctx.argAt("FA_VER"), `base '${base}': FA_VER '${fa}' is not a flash-attention version`, "write a release such as 2.7.4.post1, or \"\" to skip flash-attention");
  }

  const jobs = args.MAX_JOBS;
  if (jobs !== undefined && !/^[1-9]\d*$/.test(jobs)) {
    problems.error(ctx.argAt("MAX_JOBS"), `base '${base}': MAX_JOBS '${jobs}' is not a positive whole number`, "use e.g. 4 on small builders, 12 on machines with plenty of memory");
  }
}

/** cu126 → [12, 6]; cu118 → [11, 8]; cu130 → [13, 0]. */
export function parseCudaSuffix(suffix: string): [number, number] | undefined {
  const m = /^cu(\d{2,3})$/.exec(suffix);
  if (!m) return undefined;
  const digits = m[1];
  return [Number(digits.slice(0, -1)), Number(digits.slice(-1))];
}
