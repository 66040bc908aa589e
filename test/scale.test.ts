import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { writeSyntheticMatrix, type SyntheticMatrix } from "../bench/synthetic.ts";
import { DEFAULT_LABELS } from "../components/fleet/config.ts";
import { checkPlanSize, estimateResources } from "../components/shards.ts";
import { DEFAULT_RUNTIME_SHARD_SIZE, findRuntimeShard, runtimeShards, shardsRuntimes } from "../components/shard-stacks.ts";
import { MatrixError } from "../matrix/errors.ts";
import { touchedRuntimeShards } from "../matrix/impact.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { generateWorkflows, MAX_MATRIX_JOBS, WORKFLOW_FILES } from "../workflows/generate.ts";
import { FIXTURES, REPO } from "./helpers.ts";

/** A plan with `counts[i]` runtimes on base `b<i>` (only the fields sharding reads). */
function fakePlan(counts: number[]): Pick<BuildPlan, "bases" | "runtimes"> {
  const bases = counts.map((_, i) => ({ name: `b${String(i).padStart(2, "0")}`, platforms: ["linux/amd64"] }));
  const runtimes = counts.flatMap((n, i) => Array.from({ length: n }, (_, j) => ({ name: `r${i}-${j}`, base: bases[i].name, platforms: ["linux/amd64"], tags: ["{name}"] })));
  return { bases, runtimes } as unknown as Pick<BuildPlan, "bases" | "runtimes">;
}

describe("runtime shards", () => {
  test("below or at the threshold nothing is sharded; above it, every runtime is in exactly one shard of bounded size", () => {
    const master = loadMatrix(join(FIXTURES, "strata-master.yaml"));
    assert.equal(shardsRuntimes(master), false, "LocalAI's 457 runtimes stay in the root at the default size");
    assert.equal(shardsRuntimes(fakePlan([DEFAULT_RUNTIME_SHARD_SIZE])), false);
    assert.equal(shardsRuntimes(fakePlan([DEFAULT_RUNTIME_SHARD_SIZE, 1])), true);
    const shards = runtimeShards(master, "prod", 100);
    assert.ok(shards.every((s) => s.runtimes.length <= 100 && s.runtimes.length > 0));
    const all = shards.flatMap((s) => s.runtimes);
    assert.equal(all.length, master.runtimes.length);
    assert.deepEqual(new Set(all), new Set(master.runtimes.map((r) => r.name)));
    assert.deepEqual(shards.map((s) => s.stack), shards.map((_, i) => `prod-runtimes-${i + 1}`));
    assert.deepEqual(runtimeShards(loadMatrix(join(FIXTURES, "strata-master.yaml")), "prod", 100), shards, "deterministic");
  });

  test("a base's runtimes stay together; small bases are packed; a base larger than a shard gets shards of its own", () => {
    const shards = runtimeShards(fakePlan([3, 4, 9, 2, 5]), "prod", 8);
    assert.deepEqual(
      shards.map((s) => [s.bases, s.runtimes.length]),
      [
        [["b00", "b01"], 7],
        [["b02"], 8],
        [["b02"], 1],
        [["b03", "b04"], 7],
      ],
    );
    const byBase = new Map<string, Set<string>>();
    for (const s of shards) for (const b of s.bases) byBase.set(b, new Set([...(byBase.get(b) ?? []), s.name]));
    assert.deepEqual([...byBase].filter(([, set]) => set.size > 1).map(([b]) => b), ["b02"], "only the base larger than a shard spans two");
  });

  test("an unknown shard name lists the shards there are", () => {
    const shards = runtimeShards(fakePlan([3, 4]), "prod", 4);
    assert.equal(findRuntimeShard(shards, "prod-runtimes-2").name, "runtimes-2");
    assert.throws(() => findRuntimeShard(shards, "runtimes-9"), /no runtime shard 'runtimes-9'; this stack has 2: runtimes-1, runtimes-2/);
    assert.throws(() => findRuntimeShard([], "runtimes-1"), /do not exceed strata:runtimeShardSize/);
  });

  test("a change touches the shards of its rebuilt runtimes, and shards whose members moved", () => {
    const before = [{ name: "runtimes-1", runtimes: ["a", "b"] }, { name: "runtimes-2", runtimes: ["c", "d"] }, { name: "runtimes-3", runtimes: ["e"] }];
    const after = [{ name: "runtimes-1", runtimes: ["a", "b"] }, { name: "runtimes-2", runtimes: ["c", "d"] }, { name: "runtimes-3", runtimes: ["e"] }];
    const none = { rebuild: { bases: [], runtimes: [] }, runtimes: { added: [], removed: [], rebuilt: [], renamed: [] } };
    assert.deepEqual(touchedRuntimeShards(none, before, after), []);
    assert.deepEqual(touchedRuntimeShards({ ...none, rebuild: { bases: ["x"], runtimes: ["d"] } }, before, after), ["runtimes-2"]);
    // 'c' removed: runtimes-2 must drop it; 'e' moved into runtimes-2 from runtimes-3, which disappears.
    const moved = [{ name: "runtimes-1", runtimes: ["a", "b"] }, { name: "runtimes-2", runtimes: ["d", "e"] }];
    assert.deepEqual(touchedRuntimeShards({ ...none, runtimes: { ...none.runtimes, removed: ["c"] } }, before, moved), ["runtimes-2", "runtimes-3"]);
  });
});

test("a base shard job drops the root's strata:baseShards, which a shard stack may not set", () => {
  const plan = loadMatrix(join(REPO, "strata.yaml"));
  const wf = parse(generateWorkflows(plan, { stack: "prod" })[WORKFLOW_FILES.bases]);
  const up = wf.jobs["build-1"].steps.find((st: { name: string }) => st.name === "pulumi up (shard stack of this base)").run as string;
  const rm = up.indexOf('pulumi config rm --stack "$shard" strata:baseShards');
  assert.ok(rm > up.indexOf("pulumi config cp") && rm < up.indexOf("pulumi up --stack"), up);
});

describe("plan size guard", () => {
  const plan = fakePlan([20000]);
  const at = { file: "big.yaml", line: 1, col: 1 };

  test("a plan that would not fit the heap is an error at the matrix naming the count and the setting", () => {
    const resources = estimateResources(plan, { bases: true, runtimes: true });
    assert.equal(resources, 40 + 2 + 2 * 20000);
    let err: unknown;
    try {
      checkPlanSize(plan, { bases: true, runtimes: true, at, shardSize: 100000, heapBytes: 1024 ** 3 });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof MatrixError);
    const [p] = err.problems;
    assert.equal(p.file, "big.yaml");
    assert.match(p.message, /about 40042 resources \(20000 runtime\(s\), 1 base\(s\)\).*more than the 1024 MB of heap/);
    assert.match(p.fix, /lower strata:runtimeShardSize \(now 100000\)/);
  });

  test("the same plan fits when its runtimes are in shards (only the bases are declared)", () => {
    checkPlanSize(plan, { bases: true, runtimes: false, at, shardSize: 500, heapBytes: 1024 ** 3 });
  });
});

describe("20,000-entry synthetic matrix: workflows", () => {
  let synthetic: SyntheticMatrix;
  let plan: BuildPlan;
  let files: Record<string, string>;
  before(() => {
    synthetic = writeSyntheticMatrix(20000, `test-${process.pid}`);
    plan = loadMatrix(synthetic.path);
    files = generateWorkflows(plan, { stack: "prod", matrix: synthetic.matrix });
  });
  after(() => synthetic?.remove());

  test("the matrix has 20,000 runtimes on 495 bases, sharded into runtime shards of at most the default size", () => {
    assert.equal(plan.runtimes.length, 20000);
    assert.equal(plan.bases.length, 495);
    const shards = runtimeShards(plan, "prod");
    assert.ok(shards.every((s) => s.runtimes.length <= DEFAULT_RUNTIME_SHARD_SIZE));
    const wf = parse(files[WORKFLOW_FILES.runtimes]);
    assert.deepEqual(JSON.parse(wf.jobs.select.steps.at(-1).env.ALL_SHARDS), shards.map((s) => s.name));
  });

  test("each runtime shard job runs pulumi up of its shard stack; the default branch updates the shards strata impact names", () => {
    const wf = parse(files[WORKFLOW_FILES.runtimes]);
    const select = wf.jobs.select.steps.at(-1).run as string;
    assert.match(select, /npx strata impact --json --stack "\$STRATA_STACK" .*\n {2}jq -c '\.shards\.runtimes' impact\.json > shards\.json/);
    const job = wf.jobs["build-1"];
    assert.equal(job.strategy.matrix.shard, "${{ fromJSON(needs.select.outputs.shards_1) }}");
    const up = job.steps.find((st: { name: string }) => st.name === "pulumi up (runtime shard stack)").run as string;
    assert.match(up, /shard="\$\{STRATA_STACK\}-runtimes-\$\{STRATA_SHARD#runtimes-\}"/);
    assert.match(up, /pulumi config set --stack "\$shard" strata:runtimeShard "\$STRATA_SHARD"/);
    assert.match(up, /pulumi config rm --stack "\$shard" strata:runtimes /);
    assert.match(up, /pulumi up --stack "\$shard" --yes/);
  });

  test("every job matrix holds at most 256 jobs", () => {
    for (const [path, content] of Object.entries(files)) {
      const wf = parse(content);
      const select = JSON.stringify(wf.jobs.select ?? {});
      for (const [id, job] of Object.entries(wf.jobs as Record<string, { strategy?: { matrix: Record<string, string> } }>)) {
        if (!job.strategy) continue;
        const [expr] = Object.values(job.strategy.matrix);
        const output = /needs\.select\.outputs\.(\w+)_(\d+)/.exec(expr);
        assert.ok(output, `${path} ${id}: a matrix read from the select job's outputs`);
        const i = Number(output[2]);
        // The select job writes output <name>_i as the jq slice .[(i-1)*size : i*size] of the selected names.
        const slice = new RegExp(`${output[1]}_${i}=\\$\\(jq -c '\\.\\[(\\d+):(\\d+)\\]'`).exec(select);
        assert.ok(slice, `${path} ${id}: its output is a slice`);
        assert.ok(Number(slice[2]) - Number(slice[1]) <= MAX_MATRIX_JOBS, `${path} ${id}: ${slice[2]} - ${slice[1]} jobs`);
      }
    }
    const bases = parse(files[WORKFLOW_FILES.bases]);
    assert.equal(Object.keys(bases.jobs).filter((j) => j.startsWith("build-")).length, Math.ceil(495 / 256));
  });

  test("pass actionlint 1.7.7; the only findings are the fleet pool's own runner labels", () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-lint-"));
    try {
      mkdirSync(join(dir, ".github", "workflows"), { recursive: true });
      for (const [path, content] of Object.entries(files)) writeFileSync(join(dir, path), content);
      const r = spawnSync(process.execPath, [join(REPO, "node_modules", "@tktco", "node-actionlint", "bin", "node-actionlint.js")], { cwd: dir, encoding: "utf8" });
      assert.match(r.stdout, new RegExp(`Checking ${Object.keys(files).length} workflow file\\(s\\)`));
      const found = r.stdout.split("\n").filter((l) => /^\.github\/workflows\/\S+:\d+:\d+ /.test(l));
      const custom = new Set(DEFAULT_LABELS.map((l) => l.toLowerCase()));
      const other = found.filter((l) => {
        const label = /label "([^"]+)" is unknown.*\[ runner-label \]$/.exec(l);
        return !(label && custom.has(label[1].toLowerCase()));
      });
      assert.deepEqual(other, [], r.stdout);
      assert.ok(found.length > 0 ? r.status === 1 : r.status === 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
