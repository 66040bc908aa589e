import { writeFileSync } from "node:fs";
import { loadMatrix } from "../matrix/load.ts";
import { smokeScript, smokeSpec } from "../workflows/smoke.ts";
import { parseFlags, usageError } from "./args.ts";
import { readStackFile } from "./stack.ts";

export const SMOKE_USAGE = `Usage:
  strata smoke --base NAME [--matrix PATH] [--stack NAME] [--out FILE] [--json]

Writes the GPU gate's smoke test for one base (Python 3, standard library only), generated from the base's matrix
entry: nvidia-smi; torch imports, sees a GPU, torch.version.cuda is the base's CUDA; every CUDA_ARCH_LIST
architecture in torch.cuda.get_arch_list(); flash-attention imports and one tiny call (when FA_VER is set); a small
matmul on the GPU agrees with the CPU. Run it inside the image: python3 smoke.py [--cpu-only] [--report FILE].
--json prints the checks the base gets instead.`;

/** `strata smoke`: the smoke script (or, with --json, the checks) for one base. */
export async function smokeCommand(args: string[]): Promise<number> {
  const flags = parseFlags("smoke", SMOKE_USAGE, args, { base: { type: "string" }, matrix: { type: "string" }, stack: { type: "string" }, out: { type: "string", short: "o" }, json: { type: "boolean" } });
  if (flags.exit !== undefined) return flags.exit;
  const v: Record<string, string | boolean | undefined> = flags.values;
  if (!v.base) return usageError("smoke", SMOKE_USAGE, "--base is required");
  const { config } = readStackFile((v.stack as string | undefined) ?? "dev");
  const plan = loadMatrix((v.matrix as string | undefined) ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml");
  const base = plan.bases.find((b) => b.name === v.base);
  if (!base) {
    process.stderr.write(`strata smoke: no base '${v.base}' in the matrix (bases: ${plan.bases.map((b) => b.name).slice(0, 10).join(", ")})\n`);
    return 2;
  }
  const text = v.json ? JSON.stringify(smokeSpec(base), null, 2) + "\n" : smokeScript(base);
  if (v.out) writeFileSync(v.out as string, text, { mode: 0o755 });
  else process.stdout.write(text);
  return 0;
}
