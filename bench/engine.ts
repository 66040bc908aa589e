/**
 * Engine bench: the fixture base/runtime pair of test/fixtures/engine built from `strata bake` on a real Docker
 * engine, cold, then again after wiping every local image and all build cache, so the rebuild can only take
 * its steps from the registry cache. Reports both wall times and their ratio; skipped where no engine can start.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { engineAvailable, REPO_ROOT, startEngine } from "../test/engine/harness.ts";

export async function benchEngine(): Promise<Record<string, string | number>> {
  const available = engineAvailable();
  if (!available.ok) return { "engine.skipped": available.why };
  const engine = await startEngine();
  const work = mkdtempSync(join(tmpdir(), "strata-bench-engine-"));
  try {
    const bake = join(work, "bake.json");
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, "bin", "strata.mjs"), "bake", "--matrix", "test/fixtures/engine/strata.yaml", "--registry", engine.registry, ...args], { cwd: REPO_ROOT, encoding: "utf8" });
      if (r.status !== 0) throw new Error(`strata bake failed: ${r.stderr}`);
    };
    const build = async (file: string, group: string, meta: string) => {
      const t = performance.now();
      const r = await engine.docker(["buildx", "bake", "-f", file, group, "--metadata-file", meta], { cwd: REPO_ROOT, env: { SOURCE_DATE_EPOCH: "0" }, timeoutMs: 240_000 });
      if (r.code !== 0) throw new Error(`bake ${group} failed: ${r.stderr.slice(-2000)}`);
      return performance.now() - t;
    };
    const round = async (n: number) => {
      cli(["--out", bake]);
      const meta = join(work, `bases-${n}.json`);
      const bases = await build(bake, "bases", meta);
      const pinned = join(work, `bake-pinned-${n}.json`);
      cli(["--pin", meta, "--out", pinned]);
      const runtimes = await build(pinned, "runtimes", join(work, `runtimes-${n}.json`));
      return { bases, runtimes, digests: readFileSync(meta, "utf8") };
    };
    const cold = await round(1);
    await engine.wipeLocal();
    const cached = await round(2);
    const total = (r: { bases: number; runtimes: number }) => r.bases + r.runtimes;
    return {
      "engine.versions": Object.entries(engine.versions).map(([k, v]) => `${k} ${v}`).join(", "),
      "engine.start_ms": Math.round(engine.startMs),
      "engine.cold_ms": Math.round(total(cold)),
      "engine.registry_cache_rebuild_ms": Math.round(total(cached)),
      "engine.cold_to_cached_ratio": Math.round((total(cold) / total(cached)) * 10) / 10,
      "engine.base_builds": Object.keys(JSON.parse(cold.digests)).filter((k) => k.startsWith("base-")).length,
    };
  } finally {
    await engine.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
