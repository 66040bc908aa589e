/**
 * The whole GPU gate on a GPU machine: `node --import tsx bench/gate.ts --base NAME --image REF [--matrix PATH]`
 * generates the base's smoke test (`strata smoke`) and runs it inside IMAGE with `docker run --gpus all`, exactly
 * as the generated base workflow does, printing each check and exiting 1 naming the failed ones. Needs the host's
 * Docker with the NVIDIA container toolkit; says why and exits 2 where there is no GPU (this repository's CI).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadMatrix } from "../matrix/load.ts";
import { smokeScript } from "../workflows/smoke.ts";

const { values } = parseArgs({ options: { base: { type: "string" }, image: { type: "string" }, matrix: { type: "string", default: "strata.yaml" } } });
if (!values.base || !values.image) {
  process.stderr.write("usage: node --import tsx bench/gate.ts --base NAME --image REF [--matrix PATH]\n");
  process.exit(2);
}
if (spawnSync("nvidia-smi", ["-L"], { encoding: "utf8" }).status !== 0) {
  process.stderr.write("gate: no GPU here (nvidia-smi -L failed); the CPU side runs in test/engine.test.ts\n");
  process.exit(2);
}
const base = loadMatrix(values.matrix!).bases.find((b) => b.name === values.base);
if (!base) {
  process.stderr.write(`gate: no base '${values.base}' in ${values.matrix}\n`);
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), "strata-gate-"));
try {
  writeFileSync(join(dir, "smoke.py"), smokeScript(base));
  const t0 = performance.now();
  const r = spawnSync(
    "docker",
    ["run", "--rm", "--gpus", "all", "--network", "none", "-v", `${dir}/smoke.py:/strata-smoke.py:ro`, "-v", `${dir}:/gate`, "--entrypoint", "sh", values.image, "-c", 'exec "$(command -v python3 || command -v python)" /strata-smoke.py --report /gate/report.json'],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const report = JSON.parse(readFileSync(join(dir, "report.json"), "utf8")) as { passed: boolean; failed: string[] };
  process.stdout.write(`gate.${base.name}.passed ${report.passed}\ngate.${base.name}.ms ${Math.round(performance.now() - t0)}\n`);
  process.exitCode = r.status === 0 && report.passed ? 0 : 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
