/**
 * Scale figures (issue 14): check, plan and workflows at 1,000, 5,000 and 20,000 entries, on synthetic matrices
 * generated here from LocalAI's 457-entry one (bench/synthetic.ts) and removed afterwards. The root stack is an
 * ECR stack with the default strata:runtimeShardSize, so above 500 runtimes its plan shows the runtime shards in
 * summary; `plan --shard runtimes-1` is one shard in full (the root's offline plan first, then the shard's).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadMatrix } from "../matrix/load.ts";
import { writeSyntheticMatrix } from "./synthetic.ts";

export const SCALE_SIZES = [1000, 5000, 20000];

/** One measured command: median wall time (ms) and the largest peak RSS (MB) over the runs. */
export type Measure = (args: string[]) => { ms: number; mb: number; stdout: string };

export interface ScaleRow {
  entries: number;
  bases: number;
  shards: number;
  check: { ms: number; mb: number };
  plan: { ms: number; mb: number; resources: number };
  shard: { ms: number; mb: number; runtimes: number } | undefined;
  workflows: { ms: number; mb: number };
}

export function benchScale(measure: Measure, sizes = SCALE_SIZES): ScaleRow[] {
  const rows: ScaleRow[] = [];
  for (const entries of sizes) {
    const m = writeSyntheticMatrix(entries, `bench-${process.pid}`);
    const out = mkdtempSync(join(tmpdir(), "strata-bench-wf-"));
    try {
      const plan = loadMatrix(m.path);
      const check = measure(["check", "--matrix", m.matrix]);
      const planRun = measure(["plan", "--json", "--stack", "bench", "--matrix", m.matrix]);
      const report = JSON.parse(planRun.stdout) as { resources: unknown[]; runtimeShards: unknown[] };
      let shard: ScaleRow["shard"];
      if (report.runtimeShards.length > 0) {
        const s = measure(["plan", "--json", "--stack", "bench", "--matrix", m.matrix, "--shard", "runtimes-1"]);
        shard = { ms: s.ms, mb: s.mb, runtimes: (JSON.parse(s.stdout) as { runtimes: unknown[] }).runtimes.length };
      }
      const workflows = measure(["workflows", "--stack", "bench", "--matrix", m.matrix, "--out", out]);
      rows.push({
        entries,
        bases: plan.bases.length,
        shards: report.runtimeShards.length,
        check: { ms: check.ms, mb: check.mb },
        plan: { ms: planRun.ms, mb: planRun.mb, resources: report.resources.length },
        shard,
        workflows: { ms: workflows.ms, mb: workflows.mb },
      });
    } finally {
      m.remove();
      rmSync(out, { recursive: true, force: true });
    }
  }
  return rows;
}

/** The README's table: one row per size. */
export function scaleTable(rows: ScaleRow[]): string {
  const f = (x: { ms: number; mb: number }) => `${(x.ms / 1000).toFixed(2)} s / ${Math.round(x.mb)} MB`;
  const n = (x: number) => x.toLocaleString("en-US");
  return [
    "| entries | bases | runtime shards | check | plan --json (root) | plan --json --shard runtimes-1 | workflows |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${n(r.entries)} | ${r.bases} | ${r.shards} | ${f(r.check)} | ${f(r.plan)}, ${n(r.plan.resources)} resources | ${r.shard ? `${f(r.shard)}, ${r.shard.runtimes} runtimes` : "-"} | ${f(r.workflows)} |`),
  ].join("\n");
}
