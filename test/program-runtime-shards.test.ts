import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { runProgram, type ProgramRun } from "../cli/program.ts";
import { runtimeShards } from "../components/shard-stacks.ts";
import { loadMatrix } from "../matrix/load.ts";
import { FIXTURES } from "./helpers.ts";

// LocalAI's 457 runtimes with strata:runtimeShardSize 100: the root declares the bases and no runtime; each
// runtime shard stack declares its group FROM the root's published base refs. Runs share one process in turn.
const MATRIX = "examples/localai/strata-master.yaml";
const plan = loadMatrix(`${FIXTURES}/strata-master.yaml`);
const CONFIG = { "strata:registry": { kind: "ecr" }, "strata:matrix": MATRIX, "strata:runtimeShardSize": 100, "aws:region": "eu-west-1" };
const shards = runtimeShards(plan, "prod", 100);
let root: ProgramRun;
let shard: ProgramRun;
let stale: unknown;
let small: ProgramRun;
let contradictory: unknown;
before(async () => {
  root = await runProgram({ stack: "prod", config: CONFIG, lean: true });
  const two = shards[1];
  shard = await runProgram({ stack: two.stack, config: { ...CONFIG, ...two.config }, stackOutputs: { prod: root.outputs }, lean: true });
  // The same shard when the root publishes an older tag of one of its bases.
  const refs = { ...(root.outputs.baseRefs as Record<string, string>) };
  refs[two.bases[0]] = refs[two.bases[0]].replace(/:[^:@]+@/, ":old-000000000000@");
  try {
    await runProgram({ stack: two.stack, config: { ...CONFIG, ...two.config }, stackOutputs: { prod: { ...root.outputs, baseRefs: refs } }, lean: true });
  } catch (err) {
    stale = err;
  }
  // The default matrix's 3 runtimes at shard size 1, on a root that declares no runtimes itself (the CI layout).
  small = await runProgram({ stack: "ci", config: { "strata:registry": { kind: "local" }, "strata:runtimeShardSize": 1, "strata:runtimes": false }, lean: true });
  try {
    await runProgram({ stack: "ci-runtimes-1", config: { "strata:registry": { kind: "local" }, "strata:runtimeShardSize": 1, "strata:runtimes": false, "strata:shardOf": "ci", "strata:runtimeShard": "runtimes-1" }, stackOutputs: { ci: small.outputs }, lean: true });
  } catch (err) {
    contradictory = err;
  }
});

describe("program: runtimes above strata:runtimeShardSize", () => {
  test("the root declares every base and no runtime, and lists its runtime shards in summary", () => {
    assert.equal(root.resources.filter((r) => r.type === "strata:images:BaseImage").length, plan.bases.length);
    assert.equal(root.resources.filter((r) => r.type === "strata:images:RuntimeImage").length, 0);
    const summary = root.outputs.runtimeShards as { name: string; stack: string; bases: string[]; runtimes: number }[];
    assert.deepEqual(summary, shards.map((s) => ({ name: s.name, stack: s.stack, bases: s.bases, runtimes: s.runtimes.length })));
    assert.equal(summary.reduce((n, s) => n + s.runtimes, 0), 457);
    assert.ok(summary.every((s) => s.runtimes <= 100));
  });

  test("a runtime shard declares exactly its runtimes and no base, registry, fleet or GitHub wiring", () => {
    const names = shard.resources.filter((r) => r.type === "strata:images:RuntimeImage").map((r) => r.name.replace(/^runtime-/, ""));
    assert.deepEqual(names.sort(), [...shards[1].runtimes].sort());
    assert.equal(shard.resources.filter((r) => r.type === "strata:images:BaseImage").length, 0);
    assert.equal(shard.resources.filter((r) => r.type.startsWith("aws:")).length, 0);
    assert.equal(shard.outputs.runtimeShard, "runtimes-2");
  });

  test("its runtimes build FROM the digests the root publishes, into the root's repositories", () => {
    const refs = root.outputs.baseRefs as Record<string, string>;
    const byName = new Map(plan.runtimes.map((r) => [r.name, r]));
    for (const image of shard.resources.filter((r) => r.type === "docker-build:index:Image" && r.parentType === "strata:images:RuntimeImage")) {
      const runtime = byName.get(image.parent!.replace(/^runtime-/, ""))!;
      assert.equal((image.inputs.buildArgs as Record<string, string>).BASE_IMAGE, refs[runtime.base]);
      assert.match((image.inputs.tags as string[])[0], /^123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/strata\/runtimes:/);
    }
  });

  test("a base the root publishes under another tag fails the shard, naming the base, the root and what to run", () => {
    assert.ok(stale instanceof Error);
    assert.match(stale.message, /^root stack 'prod' has not published 1 of the \d+ base\(s\) this runtime shard builds FROM:/);
    assert.match(stale.message, new RegExp(`base '${shards[1].bases[0].replace(/\./g, "\\.")}': publishes '.*:old-000000000000@.*', the matrix wants tag '`));
    assert.match(stale.message, /strata-build-bases/);
  });
});

describe("program: runtime shards and strata:runtimes", () => {
  test("a root with strata:runtimes false still lists the shards that declare its runtimes", () => {
    assert.deepEqual((small.outputs.runtimeShards as { name: string; runtimes: number }[]).map((s) => [s.name, s.runtimes]), [["runtimes-1", 1], ["runtimes-2", 1], ["runtimes-3", 1]]);
    assert.equal(small.resources.filter((r) => r.type === "strata:images:RuntimeImage").length, 0);
  });

  test("a runtime shard with strata:runtimes false is a config error, not an empty shard", () => {
    assert.ok(contradictory instanceof Error);
    assert.match(contradictory.message, /a runtime shard \(strata:runtimeShard\) declares runtimes: strata:runtimes cannot be false/);
  });
});
