import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { computeImpact } from "../cli/impact.ts";
import { formatImpact, impactJson } from "../matrix/impact.ts";
import { cleanup, SIMPLE_MATRIX, simpleProject } from "./helpers.ts";

// `strata impact` names the shard stacks a change touches: base shards of the bases it rebuilds and, above the
// stack's strata:runtimeShardSize, the runtime shards holding the runtimes it rebuilds.
const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com" };
const dirs: string[] = [];
after(() => dirs.forEach(cleanup));

function git(dir: string, ...args: string[]): void {
  const r = spawnSync("git", args, { cwd: dir, env: GIT_ENV });
  assert.equal(r.status, 0, `git ${args.join(" ")}: ${r.stderr}`);
}

const TURING = `  - name: turing
    context: app
    dockerfile: docker/Dockerfile.base
    target: base
    cuda: "12.6.3"
    args:
      TORCH_VER: 2.7.1+cu126
      TORCH_CUDA_SUFFIX: cu126
      CUDA_ARCH_LIST: "7.5"
`;
const rt = (name: string, base: string) => `  - { name: ${name}, base: ${base}, context: app, dockerfile: docker/Dockerfile.runtime, target: runtime }\n`;
const MATRIX = SIMPLE_MATRIX.replace("runtimes:\n", TURING + "runtimes:\n").replace(/runtimes:\n[\s\S]*$/, "runtimes:\n" + rt("a", "ampere") + rt("b", "ampere") + rt("c", "turing"));

function project(size: number): string {
  const dir = simpleProject(MATRIX, { "Pulumi.prod.yaml": `config:\n  strata:runtimeShardSize: ${size}\n` });
  dirs.push(dir);
  git(dir, "-c", "init.defaultBranch=main", "init", "-q");
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", "initial");
  return dir;
}

test("a base change names its base shard and the one runtime shard of its runtimes", () => {
  const dir = project(2);
  writeFileSync(join(dir, "strata.yaml"), MATRIX.replace('CUDA_ARCH_LIST: "7.5"', 'CUDA_ARCH_LIST: "7.5;8.0"'));
  const { report } = computeImpact({ cwd: dir, base: "HEAD", matrix: join(dir, "strata.yaml"), stack: "prod" });
  assert.deepEqual(report.rebuild.bases, ["turing"]);
  assert.deepEqual(report.shards, { bases: ["prod-base-turing"], runtimes: ["runtimes-2"] });
  assert.deepEqual(impactJson(report).shards, report.shards);
  assert.match(formatImpact(report), /Shard stacks to update:\n {2}base shards \(1\): prod-base-turing\n {2}runtime shards \(1\): runtimes-2/);
});

test("a runtime added to a packed shard touches that shard, and a shard its neighbours moved into", () => {
  const dir = project(2);
  writeFileSync(join(dir, "strata.yaml"), MATRIX + rt("a2", "ampere"));
  const { report } = computeImpact({ cwd: dir, base: "HEAD", matrix: join(dir, "strata.yaml"), stack: "prod" });
  // ampere now has 3 runtimes (> 2): it is split over runtimes-1 and runtimes-2, and turing's runtime moves to runtimes-3.
  assert.deepEqual(report.shards?.bases, []);
  assert.deepEqual(report.shards?.runtimes, ["runtimes-2", "runtimes-3"]);
});

test("below the threshold no runtime shard is named", () => {
  const dir = project(500);
  writeFileSync(join(dir, "strata.yaml"), MATRIX.replace('CUDA_ARCH_LIST: "7.5"', 'CUDA_ARCH_LIST: "7.5;8.0"'));
  const { report } = computeImpact({ cwd: dir, base: "HEAD", matrix: join(dir, "strata.yaml"), stack: "prod" });
  assert.deepEqual(report.shards, { bases: ["prod-base-turing"], runtimes: [] });
  assert.doesNotMatch(formatImpact(report), /runtime shards/);
});
