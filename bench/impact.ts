/**
 * Impact bench: wall time of `strata impact` between two commits of a repository holding the 457-entry LocalAI
 * fixture matrix, one consumer changed between them. In-process (computeImpact) and as a whole CLI process (node
 * + tsx + impactCommand; through bin/strata.mjs once `strata impact` is wired there). Median of a few runs.
 */
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { computeImpact } from "../cli/impact.ts";

const REPO = join(import.meta.dirname, "..");
const FIXTURES = join(REPO, "examples", "localai");
const ENV = { ...process.env, GIT_AUTHOR_NAME: "bench", GIT_AUTHOR_EMAIL: "bench@example.com", GIT_COMMITTER_NAME: "bench", GIT_COMMITTER_EMAIL: "bench@example.com" };

function git(dir: string, ...args: string[]): void {
  const res = spawnSync("git", args, { cwd: dir, env: ENV });
  if (res.status !== 0) throw new Error(`git ${args.join(" ")}: ${res.stderr}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const ms = (x: number) => Math.round(x);

export async function benchImpact(): Promise<Record<string, string | number>> {
  const dir = mkdtempSync(join(tmpdir(), "strata-bench-impact-"));
  try {
    cpSync(FIXTURES, dir, { recursive: true });
    git(dir, "-c", "init.defaultBranch=main", "init", "-q");
    git(dir, "add", "-A");
    git(dir, "commit", "-q", "-m", "fixture");
    const file = join(dir, "backend-matrix-master-linux.json");
    const entries = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>[];
    entries[0]["cuda-minor-version"] = "8"; // a key field: one new base, one runtime moved
    writeFileSync(file, JSON.stringify(entries, null, 1) + "\n");
    git(dir, "commit", "-q", "-am", "one consumer changed");

    const opts = { cwd: dir, base: "HEAD~1", head: "HEAD", matrix: "strata-master.yaml" };
    const inProcess: number[] = [];
    let rebuild = "";
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const { report } = computeImpact(opts);
      inProcess.push(performance.now() - t);
      rebuild = `${report.rebuild.bases.length} base(s), ${report.rebuild.runtimes.length} runtime(s)`;
    }

    // A whole process, as a user runs it: `strata impact` in the repository.
    const processRuns: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      const res = spawnSync(process.execPath, [join(REPO, "bin", "strata.mjs"), "impact", "--base", "HEAD~1", "--head", "HEAD", "--matrix", "strata-master.yaml", "--json"], { cwd: dir });
      processRuns.push(performance.now() - t);
      if (res.status !== 0) throw new Error(`impact process failed (${res.status}): ${res.stderr}`);
    }

    return {
      "impact.fixture": "LocalAI master: 457 consumers, 45 bases; HEAD~1..HEAD, one key field changed",
      "impact.result": rebuild,
      "impact.inProcess.medianMs": ms(median(inProcess)),
      "impact.inProcess.runs": inProcess.map(ms).join(","),
      "impact.process.medianMs": ms(median(processRuns)),
      "impact.process.runs": processRuns.map(ms).join(","),
      "impact.targetMs": 2000,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  console.log(await benchImpact());
}
