import assert from "node:assert/strict";
import { before, test } from "node:test";
import { runProgram, type ProgramRun } from "../cli/program.ts";
import { loadMatrix } from "../matrix/load.ts";

// A base shard stack of root stack `prod`: it builds one base into the root's registry, read by StackReference.
const ampere = loadMatrix("strata.yaml").bases.find((b) => b.name === "ampere")!;
const ROOT = { registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com", basesRepository: "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata/bases", runtimesRepository: "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata/runtimes", cacheRepository: "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata/cache" };
let run: ProgramRun;
before(async () => {
  run = await runProgram({
    stack: "prod-base-ampere",
    config: { "strata:registry": { kind: "ecr" }, "strata:shardOf": "prod", "strata:bases": ["ampere"], "strata:runtimes": false },
    stackOutputs: { prod: ROOT },
  });
});

test("a shard declares only its base, pushed to the root stack's repositories, and no registry of its own", () => {
  assert.deepEqual(run.resources.filter((r) => r.type === "strata:images:BaseImage").map((r) => r.name), ["base-ampere"]);
  assert.equal(run.resources.filter((r) => r.type === "strata:images:RuntimeImage").length, 0);
  assert.equal(run.resources.filter((r) => r.type.startsWith("aws:ecr/repository")).length, 0);
  const image = run.resources.find((r) => r.type === "docker-build:index:Image" && r.name === "base-ampere")!;
  assert.deepEqual(image.inputs.tags, [`${ROOT.basesRepository}:${ampere.tag}`]);
  assert.equal((image.inputs.cacheTo as { registry: { ref: string } }[])[0].registry.ref, `${ROOT.cacheRepository}:cache-base-ampere`);
});

test("the shard publishes its base's digest-pinned reference for the root stack to read", () => {
  assert.match((run.outputs.baseRefs as Record<string, string>).ampere, new RegExp(`^${ROOT.basesRepository}:${ampere.tag}@sha256:[0-9a-f]{64}$`));
});
