import type { BasePlan } from "../matrix/plan.ts";

/**
 * The GPU gate: a smoke test generated from a base's matrix entry, run inside the freshly built image on the
 * fleet runner's GPU before the base is pushed and published. The checks a base gets follow from what it declares
 * (its CUDA version, torch build args, CUDA_ARCH_LIST, FA_VER), so a user-defined base gets the checks its args
 * imply. The script is Python 3 with the standard library only; `--cpu-only` runs the checks that need no GPU.
 */

export type CheckId =
  | "nvidia-smi"
  | "torch-import"
  | "torch-cuda-version"
  | "matmul-cpu"
  | "torch-sees-gpu"
  | "torch-arch-list"
  | "matmul-gpu"
  | "flash-attn-import"
  | "flash-attn-call";

export interface SmokeCheck {
  id: CheckId;
  /** Needs a GPU (skipped with --cpu-only). */
  gpu: boolean;
  /** Checks that must pass first; when one failed this one is skipped, naming it. */
  needs: CheckId[];
  /** What it asserts, for the report and the README. */
  what: string;
}

export interface SmokeSpec {
  base: string;
  tag: string;
  /** `major.minor` torch must be built for; null when the base declares no CUDA version. */
  cuda: string | null;
  /** `sm_XY` (and `compute_XY` for `+PTX`) entries torch.cuda.get_arch_list() must contain. */
  archs: string[];
  checks: SmokeCheck[];
}

/** Every check, in the order they run. */
export const CHECKS: readonly SmokeCheck[] = [
  { id: "nvidia-smi", gpu: true, needs: [], what: "nvidia-smi runs in the container and lists at least one GPU" },
  { id: "torch-import", gpu: false, needs: [], what: "torch imports" },
  { id: "torch-cuda-version", gpu: false, needs: ["torch-import"], what: "torch.version.cuda is the base's CUDA major.minor" },
  { id: "matmul-cpu", gpu: false, needs: ["torch-import"], what: "a small integer matmul on the CPU equals the exact product" },
  { id: "torch-sees-gpu", gpu: true, needs: ["torch-import"], what: "torch.cuda.is_available() and at least one device" },
  { id: "torch-arch-list", gpu: true, needs: ["torch-sees-gpu"], what: "every CUDA_ARCH_LIST architecture is in torch.cuda.get_arch_list()" },
  { id: "matmul-gpu", gpu: true, needs: ["torch-sees-gpu", "matmul-cpu"], what: "a small float32 matmul on the GPU agrees with the CPU result (TF32 off)" },
  { id: "flash-attn-import", gpu: false, needs: ["torch-import"], what: "flash_attn imports" },
  { id: "flash-attn-call", gpu: true, needs: ["flash-attn-import", "torch-sees-gpu"], what: "one tiny flash_attn_func call agrees with plain attention" },
];

/** `8.0;8.6+PTX 9.0` → `sm_80, sm_86, compute_86, sm_90`. */
export function archEntries(list: string): string[] {
  const out: string[] = [];
  for (const raw of list.split(/[;\s,]+/).filter(Boolean)) {
    const m = /^(\d+)\.(\d+)([a-z]?)(\+PTX)?$/i.exec(raw);
    if (!m) continue;
    const sm = `${m[1]}${m[2]}${m[3].toLowerCase()}`;
    out.push(`sm_${sm}`);
    if (m[4]) out.push(`compute_${sm}`);
  }
  return [...new Set(out)];
}

/** The CUDA major.minor a base declares: its `cuda`, else a `cuXYZ` torch suffix, else CUDA_MAJOR/MINOR_VERSION args. */
export function declaredCuda(base: Pick<BasePlan, "cuda" | "args">): string | null {
  if (base.cuda) return base.cuda.split(".").slice(0, 2).join(".");
  const suffix = /^cu(\d+)(\d)$/.exec(base.args.TORCH_CUDA_SUFFIX ?? "");
  if (suffix) return `${suffix[1]}.${suffix[2]}`;
  const major = base.args.CUDA_MAJOR_VERSION;
  if (major && /^\d+$/.test(major)) return `${major}.${/^\d+$/.test(base.args.CUDA_MINOR_VERSION ?? "") ? base.args.CUDA_MINOR_VERSION : "0"}`;
  return null;
}

const truthy = (v: string | undefined) => v !== undefined && v !== "" && !/^(none|no|off|false|0|skip)$/i.test(v);

/** The checks a base's declaration implies. */
export function smokeSpec(base: Pick<BasePlan, "name" | "tag" | "cuda" | "args">): SmokeSpec {
  const a = base.args;
  const cuda = declaredCuda(base);
  const gpuBase = cuda !== null || /cuda|cublas|gpu/i.test(a.BUILD_TYPE ?? "");
  const torch = truthy(a.TORCH_VER) || truthy(a.TORCH_CHANNEL);
  const archs = archEntries(a.CUDA_ARCH_LIST ?? a.TORCH_CUDA_ARCH_LIST ?? "");
  const flash = truthy(a.FA_VER);
  const want = new Set<CheckId>();
  if (gpuBase) want.add("nvidia-smi");
  if (torch) {
    want.add("torch-import").add("matmul-cpu");
    if (cuda) want.add("torch-cuda-version");
    if (gpuBase) want.add("torch-sees-gpu").add("matmul-gpu");
    if (gpuBase && archs.length) want.add("torch-arch-list");
  }
  if (flash) {
    want.add("flash-attn-import");
    if (gpuBase && torch) want.add("flash-attn-call");
  }
  return { base: base.name, tag: base.tag, cuda, archs, checks: CHECKS.filter((c) => want.has(c.id)).map((c) => ({ ...c, needs: c.needs.filter((n) => want.has(n)) })) };
}

/** The Python smoke test for a base. Exit 0 when every check passed (or was skipped by --cpu-only), else 1. */
export function smokeScript(base: Pick<BasePlan, "name" | "tag" | "cuda" | "args">): string {
  const spec = smokeSpec(base);
  const json = JSON.stringify({ base: spec.base, tag: spec.tag, cuda: spec.cuda, archs: spec.archs, checks: spec.checks.map((c) => ({ id: c.id, gpu: c.gpu, needs: c.needs, what: c.what })) });
  return `#!/usr/bin/env python3
# strata GPU gate for base '${spec.base}' (${spec.tag}). Generated by \`strata smoke\` from the matrix: do not edit.
# Usage: python3 smoke.py [--cpu-only] [--report FILE]   (exit 0: passed; 1: a check failed, named on stderr)
import json, math, os, subprocess, sys, time

SPEC = json.loads(${JSON.stringify(json)})


def check_nvidia_smi(ctx):
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    gpus = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not gpus:
        raise AssertionError("nvidia-smi exit %d, %d GPU(s): %s" % (r.returncode, len(gpus), (r.stderr or r.stdout).strip()[:200]))
    return "; ".join(gpus)


def check_torch_import(ctx):
    import torch
    ctx["torch"] = torch
    return "torch %s" % torch.__version__


def check_torch_cuda_version(ctx):
    got = ctx["torch"].version.cuda
    if got is None:
        raise AssertionError("torch.version.cuda is None: a CPU-only torch build, the base wants CUDA %s" % SPEC["cuda"])
    if ".".join(str(got).split(".")[:2]) != SPEC["cuda"]:
        raise AssertionError("torch.version.cuda is %s, the base's CUDA is %s" % (got, SPEC["cuda"]))
    return "CUDA %s" % got


def small(torch, device):
    a = torch.tensor([[float((i * 7 + j * 3) % 11 - 5) for j in range(16)] for i in range(16)], dtype=torch.float32, device=device)
    b = torch.tensor([[float((i * 5 + j * 2) % 13 - 6) for j in range(16)] for i in range(16)], dtype=torch.float32, device=device)
    return a, b


def exact():
    a = [[(i * 7 + j * 3) % 11 - 5 for j in range(16)] for i in range(16)]
    b = [[(i * 5 + j * 2) % 13 - 6 for j in range(16)] for i in range(16)]
    return [[sum(a[i][k] * b[k][j] for k in range(16)) for j in range(16)] for i in range(16)]


def check_matmul_cpu(ctx):
    torch = ctx["torch"]
    a, b = small(torch, "cpu")
    got = (a @ b).tolist()
    want = exact()
    bad = [(i, j) for i in range(16) for j in range(16) if got[i][j] != want[i][j]]
    if bad:
        i, j = bad[0]
        raise AssertionError("%d of 256 entries differ from the exact product, e.g. [%d][%d] = %s, want %s" % (len(bad), i, j, got[i][j], want[i][j]))
    ctx["cpu_product"] = got
    return "16x16 product exact"


def check_torch_sees_gpu(ctx):
    torch = ctx["torch"]
    if not torch.cuda.is_available():
        raise AssertionError("torch.cuda.is_available() is False")
    n = torch.cuda.device_count()
    if n < 1:
        raise AssertionError("torch.cuda.device_count() is %d" % n)
    return "%d device(s), %s" % (n, torch.cuda.get_device_name(0))


def check_torch_arch_list(ctx):
    have = list(ctx["torch"].cuda.get_arch_list())
    missing = [a for a in SPEC["archs"] if a not in have]
    if missing:
        raise AssertionError("CUDA_ARCH_LIST wants %s; torch.cuda.get_arch_list() is %s" % (", ".join(missing), have))
    return ", ".join(SPEC["archs"])


def check_matmul_gpu(ctx):
    torch = ctx["torch"]
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = small(torch, "cuda")
    got = (a @ b).cpu().tolist()
    want = ctx["cpu_product"]
    worst = max(abs(got[i][j] - want[i][j]) for i in range(16) for j in range(16))
    if worst > 1e-3:
        raise AssertionError("GPU matmul differs from the CPU result by up to %g" % worst)
    return "GPU = CPU (max difference %g)" % worst


def check_flash_attn_import(ctx):
    import flash_attn
    ctx["flash_attn"] = flash_attn
    return "flash_attn %s" % getattr(flash_attn, "__version__", "?")


def check_flash_attn_call(ctx):
    torch = ctx["torch"]
    from flash_attn import flash_attn_func
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 8, 2, 64, generator=g) for _ in range(3))
    out = flash_attn_func(q.cuda().half(), k.cuda().half(), v.cuda().half()).float().cpu()
    # plain attention, (batch, seq, heads, dim) layout
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    ref = torch.softmax(qt @ kt.transpose(-1, -2) / math.sqrt(64), dim=-1) @ vt
    worst = (out - ref.transpose(1, 2)).abs().max().item()
    if worst > 2e-2:
        raise AssertionError("flash_attn_func differs from plain attention by up to %g" % worst)
    return "max difference %g" % worst


RUN = {
    "nvidia-smi": check_nvidia_smi,
    "torch-import": check_torch_import,
    "torch-cuda-version": check_torch_cuda_version,
    "matmul-cpu": check_matmul_cpu,
    "torch-sees-gpu": check_torch_sees_gpu,
    "torch-arch-list": check_torch_arch_list,
    "matmul-gpu": check_matmul_gpu,
    "flash-attn-import": check_flash_attn_import,
    "flash-attn-call": check_flash_attn_call,
}


def main(argv):
    cpu_only = "--cpu-only" in argv
    report_file = argv[argv.index("--report") + 1] if "--report" in argv else None
    ctx, results, status = {}, [], {}
    print("strata GPU gate: base %s (%s), %d check(s)%s" % (SPEC["base"], SPEC["tag"], len(SPEC["checks"]), ", CPU side only" if cpu_only else ""), flush=True)
    for c in SPEC["checks"]:
        t0 = time.time()
        failed_needs = [n for n in c["needs"] if status.get(n) != "passed"]
        if cpu_only and c["gpu"]:
            state, detail = "skipped", "needs a GPU (--cpu-only)"
        elif failed_needs:
            state, detail = "skipped", "needs %s" % ", ".join(failed_needs)
        else:
            try:
                state, detail = "passed", RUN[c["id"]](ctx)
            except Exception as e:  # the check's failure, reported by name
                state, detail = "failed", "%s: %s" % (type(e).__name__, e)
        status[c["id"]] = state
        results.append({"id": c["id"], "gpu": c["gpu"], "state": state, "detail": str(detail), "seconds": round(time.time() - t0, 3)})
        print("%-7s %s: %s" % (state.upper(), c["id"], detail), flush=True)
    failed = [r["id"] for r in results if r["state"] == "failed"]
    summary = {"base": SPEC["base"], "tag": SPEC["tag"], "cpuOnly": cpu_only, "passed": not failed, "failed": failed, "checks": results}
    if report_file:
        with open(report_file, "w") as f:
            json.dump(summary, f, indent=1)
    if not SPEC["checks"]:
        print("no GPU checks apply to this base (no CUDA, torch or flash-attention declared)")
    if failed:
        print("strata GPU gate FAILED for base %s: %s" % (SPEC["base"], ", ".join(failed)), file=sys.stderr)
        return 1
    print("strata GPU gate passed for base %s" % SPEC["base"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
`;
}
