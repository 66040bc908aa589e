import assert from "node:assert/strict";
import { before, test } from "node:test";
import { runProgram, type ProgramRun } from "../cli/program.ts";
import { loadMatrix } from "../matrix/load.ts";

// A root stack whose bases are built by shard stacks: it reads their references and builds runtimes FROM them.
const plan = loadMatrix("strata.yaml");
const repo = "localhost:5000/strata/bases";
const published = (name: string, tag: string) => ({ baseRefs: { [name]: `${repo}:${tag}@sha256:${"a".repeat(64)}` } });
let run: ProgramRun;
before(async () => {
  const [turing, ampere, hopper] = plan.bases;
  run = await runProgram({
    stack: "prod",
    config: { "strata:registry": { kind: "local" }, "strata:baseShards": true, "strata:runtimes": false },
    stackOutputs: {
      "prod-base-turing": published("turing", turing.tag),
      "prod-base-ampere": published("ampere", "ampere-000000000000"), // built from an older matrix
      "prod-base-hopper": published("hopper", hopper.tag),
    },
  });
  assert.ok(ampere);
});

test("the root builds no base: it reads one StackReference per base shard", () => {
  assert.equal(run.resources.filter((r) => r.type === "strata:images:BaseImage").length, 0);
  assert.deepEqual(
    run.resources.filter((r) => r.type === "pulumi:pulumi:StackReference").map((r) => String(r.inputs.name).split("/").pop()).sort(),
    ["prod-base-ampere", "prod-base-hopper", "prod-base-turing"],
  );
});

test("only shards that built the identity the matrix wants now are published; a stale one is left out", () => {
  const refs = run.outputs.baseRefs as Record<string, string>;
  assert.deepEqual(Object.keys(refs).sort(), ["hopper", "turing"]);
  assert.equal(refs.turing, `${repo}:${plan.bases[0].tag}@sha256:${"a".repeat(64)}`);
});
