/**
 * `npm run bench`: whole-process wall time and peak memory of the CLI on the real fixtures, bake generation,
 * impact between two revisions, the scaler's time per delivery and bundle size, and the build floor. Prints
 * figures against their targets; it asserts nothing (performance is not checked by timed tests).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bakeFile } from "../cli/bake.ts";
import { loadMatrix } from "../matrix/load.ts";
import { benchAttest } from "./attest.ts";
import { benchEngine } from "./engine.ts";
import { benchImpact } from "./impact.ts";
import { benchFleet } from "./fleet.ts";
import { benchScale, scaleTable } from "./scale.ts";
import { benchScaler } from "./scaler.ts";

const REPO = join(import.meta.dirname, "..");
const BIN = join(REPO, "bin", "strata.mjs");
const PEAK = join(import.meta.dirname, "peak-rss.mjs");
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

interface Run {
  ms: number;
  peakMb: number;
  stdout: string;
}

/** Runs the CLI as a user does, once; peak RSS is the process's own maxRSS, reported at exit by a preload. */
function cli(args: string[]): Run {
  const dir = mkdtempSync(join(tmpdir(), "strata-bench-"));
  const rssFile = join(dir, "rss");
  const t = performance.now();
  const r = spawnSync(process.execPath, ["--import", PEAK, BIN, ...args], { cwd: REPO, encoding: "utf8", env: { ...process.env, STRATA_PEAK_RSS_FILE: rssFile }, maxBuffer: 1 << 28 });
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error(`strata ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  const peakMb = Number(readFileSync(rssFile, "utf8")) / 1024;
  rmSync(dir, { recursive: true, force: true });
  return { ms, peakMb, stdout: r.stdout };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const rows: [string, string, string][] = [];
function measure(name: string, args: string[], target?: { ms?: number; mb?: number }): Run[] {
  cli(args); // warm: builds the CLI bundle and the OS file cache, as any second run has them
  const runs = Array.from({ length: RUNS }, () => cli(args));
  const ms = median(runs.map((r) => r.ms));
  const mb = Math.max(...runs.map((r) => r.peakMb));
  rows.push([name, `${(ms / 1000).toFixed(2)} s median of ${RUNS}, peak ${Math.round(mb)} MB`, targetText(ms, mb, target)]);
  return runs;
}

function targetText(ms: number, mb: number, target?: { ms?: number; mb?: number }): string {
  if (!target) return "";
  const parts: string[] = [];
  if (target.ms) parts.push(`< ${target.ms / 1000} s ${ms < target.ms ? "met" : "MISSED"}`);
  if (target.mb) parts.push(`< ${target.mb} MB ${mb < target.mb ? "met" : "MISSED"}`);
  return parts.join(", ");
}

console.log(`strata bench on ${process.platform} ${process.arch}, Node ${process.version}, ${RUNS} runs each\n`);

/** Median time and largest peak memory of `runs` whole CLI processes (after one warm-up run). */
function measured(args: string[], runs = RUNS): { ms: number; mb: number; stdout: string } {
  cli(args);
  const all = Array.from({ length: runs }, () => cli(args));
  return { ms: median(all.map((r) => r.ms)), mb: Math.max(...all.map((r) => r.peakMb)), stdout: all[0].stdout };
}

// Scale: synthetic 1k/5k/20k-entry matrices (`npm run bench -- scale` runs only this part).
const scale = benchScale((args) => measured(args, Number(process.env.BENCH_SCALE_RUNS ?? 3)));
console.log(`Scale (median of ${process.env.BENCH_SCALE_RUNS ?? 3} runs, peak RSS):\n${scaleTable(scale)}\n`);
const big = scale.find((r) => r.entries === 20000);
if (big) rows.push(["plan --json, 20,000 entries (root)", `${(big.plan.ms / 1000).toFixed(2)} s, peak ${Math.round(big.plan.mb)} MB`, `< 20 s ${big.plan.ms < 20000 ? "met" : "MISSED"}, < 1 GB ${big.plan.mb < 1024 ? "met" : "MISSED"}`]);
if (process.argv[2] === "scale") {
  for (const [name, figure, verdict] of rows) console.log(`${name}  ${figure}${verdict ? `  [${verdict}]` : ""}`);
  process.exit(0);
}

measure("check, LocalAI 234 entries", ["check", "--matrix", "examples/localai/strata-pr9672.yaml"], { ms: 300 });
measure("plan --json, default matrix", ["plan", "--json"]);
const plans = measure("plan --json, LocalAI 457 entries", ["plan", "--json", "--matrix", "examples/localai/strata-master.yaml"], { ms: 3000, mb: 400 });

// The floor: one base build per distinct base; and a second plan of unchanged inputs declares identical images.
const [first, second] = plans.map((p) => JSON.parse(p.stdout) as { bases: unknown[]; runtimes: unknown[] });
const master = loadMatrix(join(REPO, "examples/localai/strata-master.yaml"));
const distinct = new Set(master.runtimes.map((r) => r.base)).size;
rows.push(["base builds per matrix", `${first.bases.length} base images for ${master.runtimes.length} runtimes (${distinct} distinct bases)`, first.bases.length === distinct ? "at the floor" : "ABOVE the floor"]);
const changed = first.bases.filter((b, i) => JSON.stringify(b) !== JSON.stringify(second.bases[i])).length + first.runtimes.filter((r, i) => JSON.stringify(r) !== JSON.stringify(second.runtimes[i])).length;
rows.push(["second plan, unchanged inputs", `${changed} image(s) with different inputs`, changed === 0 ? "zero rebuilds" : "REBUILDS"]);

// Bake generation for the 457-entry fixture, in-process (the plan is loaded once, outside the timing).
const opts = { basesRepository: "r/strata/bases", runtimesRepository: "r/strata/runtimes", cacheRepository: "r/strata/cache", release: { version: "v1", branch: "main", sha: "0000000" } };
const bakeTimes = Array.from({ length: RUNS }, () => {
  const t = performance.now();
  bakeFile(master, opts);
  return performance.now() - t;
});
rows.push(["bake file, LocalAI 457 entries (in-process)", `${median(bakeTimes).toFixed(1)} ms median`, ""]);
const bake = measure("bake, LocalAI 457 entries (whole process)", ["bake", "--registry", "localhost:5000", "--matrix", "examples/localai/strata-master.yaml"]);
rows.push(["bake targets", `${Object.keys(JSON.parse(bake[0].stdout).target).length} (${master.bases.length} bases + ${master.runtimes.length} runtimes)`, ""]);

const impact = await benchImpact();
rows.push(["impact, two revisions of LocalAI 457 (in-process)", `${impact["impact.inProcess.medianMs"]} ms median (${impact["impact.result"]})`, Number(impact["impact.inProcess.medianMs"]) < 2000 ? "< 2 s met" : "< 2 s MISSED"]);
rows.push(["impact, two revisions of LocalAI 457 (whole process)", `${impact["impact.process.medianMs"]} ms median`, Number(impact["impact.process.medianMs"]) < 2000 ? "< 2 s met" : "< 2 s MISSED"]);

const scaler = await benchScaler();
for (const [k, v] of Object.entries(scaler)) rows.push([k, String(v), ""]);
for (const [k, v] of await benchFleet()) rows.push([k, v, ""]);
for (const [k, v] of await benchAttest()) rows.push([k, v, ""]);

const engine = await benchEngine();
for (const [k, v] of Object.entries(engine)) rows.push([k, String(v), ""]);

const width = Math.max(...rows.map((r) => r[0].length));
for (const [name, figure, verdict] of rows) console.log(`${name.padEnd(width)}  ${figure}${verdict ? `  [${verdict}]` : ""}`);
