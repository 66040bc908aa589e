import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { loadMatrix } from "../matrix/load.ts";
import { generateWorkflows, WORKFLOW_FILES } from "../workflows/generate.ts";
import { archEntries, declaredCuda, smokeScript, smokeSpec } from "../workflows/smoke.ts";
import { FIXTURES, REPO } from "./helpers.ts";

const plan = loadMatrix(`${REPO}/strata.yaml`);
const base = (name: string) => plan.bases.find((b) => b.name === name)!;
const ids = (name: string) => smokeSpec(base(name)).checks.map((c) => c.id);

describe("GPU gate: checks follow from a base's declaration", () => {
  test("ampere (torch, CUDA 12.6, arch list, flash-attention) gets every check", () => {
    const spec = smokeSpec(base("ampere"));
    assert.equal(spec.cuda, "12.6");
    assert.deepEqual(spec.archs, ["sm_80", "sm_86"]);
    assert.deepEqual(ids("ampere"), ["nvidia-smi", "torch-import", "torch-cuda-version", "matmul-cpu", "torch-sees-gpu", "torch-arch-list", "matmul-gpu", "flash-attn-import", "flash-attn-call"]);
  });

  test("turing declares no flash-attention: no flash-attention checks", () => {
    assert.ok(!ids("turing").some((c) => c.startsWith("flash-attn")));
    assert.deepEqual(smokeSpec(base("turing")).archs, ["sm_75"]);
  });

  test("a user-defined base gets what its args imply", () => {
    const cpu = smokeSpec({ name: "cpu", tag: "cpu-0", args: { OS_IMAGE: "ubuntu:24.04" } });
    assert.deepEqual(cpu.checks, []);
    const cublas = smokeSpec({ name: "cpp", tag: "cpp-0", args: { BUILD_TYPE: "cublas", CUDA_MAJOR_VERSION: "12", CUDA_MINOR_VERSION: "8" } });
    assert.deepEqual(cublas.checks.map((c) => c.id), ["nvidia-smi"]);
    assert.equal(cublas.cuda, "12.8");
    const nightly = smokeSpec({ name: "n", tag: "n-0", args: { TORCH_CHANNEL: "nightly", TORCH_CUDA_SUFFIX: "cu128", TORCH_CUDA_ARCH_LIST: "9.0+PTX" } });
    assert.equal(nightly.cuda, "12.8");
    assert.deepEqual(nightly.archs, ["sm_90", "compute_90"]);
    assert.ok(nightly.checks.some((c) => c.id === "torch-arch-list"));
    const skipFa = smokeSpec({ name: "s", tag: "s-0", cuda: "12.6.3", args: { TORCH_VER: "2.7.1", FA_VER: "none" } });
    assert.ok(!skipFa.checks.some((c) => c.id.startsWith("flash")));
  });

  test("LocalAI's derived bases: the CUDA ones get nvidia-smi, the CPU ones nothing", () => {
    const localai = loadMatrix(`${FIXTURES}/strata-pr9672.yaml`);
    const specs = localai.bases.map((b) => smokeSpec(b));
    assert.ok(specs.some((s) => s.checks.length === 0));
    assert.ok(specs.some((s) => s.checks.some((c) => c.id === "nvidia-smi")));
  });

  test("arch lists and CUDA versions parse as torch writes them", () => {
    assert.deepEqual(archEntries("8.0;8.6+PTX 9.0a"), ["sm_80", "sm_86", "compute_86", "sm_90a"]);
    assert.equal(declaredCuda({ cuda: "12.6.3", args: {} }), "12.6");
    assert.equal(declaredCuda({ args: { TORCH_CUDA_SUFFIX: "cu118" } }), "11.8");
    assert.equal(declaredCuda({ args: {} }), null);
  });

  test("the script carries the spec as data, so build args cannot inject code", () => {
    const script = smokeScript({ name: "x", tag: "x-0", cuda: "12.6", args: { TORCH_VER: `2.7"; import os; os.system("id") #`, CUDA_ARCH_LIST: "8.0" } });
    assert.match(script, /^SPEC = json\.loads\(".*"\)$/m);
    assert.doesNotMatch(script, /^import os; os.system/m);
    assert.match(script, /strata GPU gate FAILED for base %s: %s/);
  });
});

describe("GPU gate in the generated base workflow", () => {
  const wf = parse(generateWorkflows(plan, { stack: "prod" })[WORKFLOW_FILES.bases]);
  const steps = wf.jobs["build-1"].steps as { id?: string; name: string; run?: string; if?: string }[];
  const at = (re: RegExp) => steps.findIndex((s) => re.test(s.name));

  test("build locally, gate, then pulumi up (the push), then record; publish only after every job passed", () => {
    const build = at(/^Build the base for the GPU gate/);
    const gate = at(/^GPU gate/);
    const up = at(/^pulumi up/);
    const rec = at(/^Record what the build cost/);
    assert.ok(build >= 0 && build < gate && gate < up && up < rec, JSON.stringify(steps.map((s) => s.name)));
    assert.match(steps[build].run!, /--set "base-\$STRATA_BASE\.output=type=docker"/);
    assert.match(steps[build].run!, /tee build\.log/);
    assert.match(steps[gate].run!, /npx strata smoke .*--base "\$STRATA_BASE" --out smoke\.py/);
    assert.match(steps[gate].run!, /docker run --rm --gpus all --network none/);
    assert.match(steps[gate].run!, /::error title=strata GPU gate::base \$STRATA_BASE failed: \$failed/);
    assert.equal(steps[up].if, undefined, "pulumi up runs only when the gate passed (the default success())");
    assert.equal(steps[rec].if, "${{ always() && steps.build.outcome == 'success' }}");
    assert.match(steps[rec].run!, /npx strata record .*--build-log build\.log --outcome "\$outcome"/s);
    assert.match(steps[rec].run!, /instance-life-cycle/);
    assert.equal(wf.jobs.publish.if, "${{ !failure() && !cancelled() && needs.select.outputs.any == 'true' }}");
  });

  test("the pull-request check writes the forecast into the job summary, reading history with the read-only role", () => {
    const pr = parse(generateWorkflows(plan, { stack: "prod" })[WORKFLOW_FILES.prCheck]);
    const prSteps = pr.jobs.check.steps as { id?: string; with?: Record<string, string>; run?: string }[];
    assert.equal(prSteps.find((s) => s.id === "aws")!.with!["role-to-assume"], "${{ vars.STRATA_ROLE_READ_ONLY }}");
    const run = prSteps.map((s) => s.run ?? "").join("\n");
    assert.match(run, /--history-registry "\$REGISTRY"/);
    assert.match(run, /Forecast: \\\(\.forecast\.headline\)/);
    assert.deepEqual(pr.jobs.check.permissions, { contents: "read", "id-token": "write" });
  });

  test("the scheduled GC workflow lists open pull requests' bases, then runs strata gc", () => {
    const gc = parse(generateWorkflows(plan, { stack: "prod" })[WORKFLOW_FILES.gc]);
    assert.deepEqual(gc.on.schedule, [{ cron: "17 4 * * 0" }]);
    const run = gc.jobs.gc.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(run, /gh pr list --state open/);
    assert.match(run, /npx strata check --matrix "\.\.\/pr-\$pr\/\$STRATA_MATRIX" --json/);
    assert.match(run, /--in-use in-use\.txt --keep-releases 3 --min-age-days 30/);
    assert.match(run, /if \[ "\$APPLY" = true \]; then args\+=\(--apply\); fi/);
    assert.throws(() => generateWorkflows(plan, { stack: "prod", gcMinAgeDays: 0 }), /delete nothing younger than 1 day/);
  });
});
