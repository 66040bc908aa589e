import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { DescribeInstancesCommand, type Instance } from "@aws-sdk/client-ec2";
import { GetParameterCommand, GetParametersByPathCommand } from "@aws-sdk/client-ssm";
import { createWebhookHandler, handleInterruption, runHousekeeping, runScaleUp } from "../scaler/core.ts";
import { delivery, jobPayload } from "./support/events.ts";
import { GPU, useFleetStack, WEBHOOK_SECRET, type FleetStack } from "./support/fleet-stack.ts";

// Spot interruption → re-run on-demand, and housekeeping's reconciliation, against moto and the loopback GitHub.
// moto emits no interruption notices: the EventBridge event is injected here (our layer), the rest is real.
const fleet = useFleetStack();
const github = fleet.github;
let t: FleetStack;
let webhook: ReturnType<typeof createWebhookHandler>;
const REPO = { owner: "acme", repo: "models" };

beforeEach(async () => {
  t = await fleet.create({ maxRunners: 4 });
  webhook = createWebhookHandler(t.deps);
});

async function active(): Promise<Instance[]> {
  const r = await t.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: "instance-state-name", Values: ["pending", "running"] }] }));
  return (r.Reservations ?? []).flatMap((x) => x.Instances ?? []);
}
const tag = (i: Instance, k: string) => i.Tags?.find((x) => x.Key === k)?.Value;
const spotWarning = (id: string) => ({ "detail-type": "EC2 Spot Instance Interruption Warning", source: "aws.ec2", detail: { "instance-id": id, "instance-action": "terminate" } });

async function launchOne(id: number, name = "base cuda12") {
  github.addJob("acme/models", { id, labels: GPU, run_id: 8000 + id, name });
  assert.equal((await webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", id, GPU, { ...REPO, runId: 8000 + id, name })))).statusCode, 202);
  await runScaleUp(t.deps);
  const inst = (await active()).find((i) => tag(i, "strata:job-id") === String(id))!;
  return { inst, runnerName: tag(inst, "strata:runner-name")! };
}

describe("spot interruption [injected fault: EC2 Spot Instance Interruption Warning]", () => {
  it("records the interruption, removes the idle runner; the failed job is re-run once and its next runner is on-demand", async () => {
    const { inst, runnerName } = await launchOne(1);
    assert.equal(inst.InstanceLifecycle, "spot");
    const report = await handleInterruption(t.deps, spotWarning(inst.InstanceId!));
    assert.deepEqual(report, { result: "recorded", instanceId: inst.InstanceId, runnerName, runnerRemoved: true });
    assert.ok(![...github.runners.values()].some((r) => r.name === runnerName), "runner removed from GitHub");
    assert.ok((await t.ssm.send(new GetParameterCommand({ Name: `/strata/test/state/interrupted/${runnerName}` }))).Parameter);
    // A repeated warning changes nothing.
    assert.equal((await handleInterruption(t.deps, spotWarning(inst.InstanceId!))).runnerRemoved, false);

    // The instance goes; GitHub fails the job; the completed delivery (sent twice) re-runs it once.
    await t.deps.ec2.terminate([inst.InstanceId!]);
    Object.assign(github.jobs.get(1)!, { status: "completed", conclusion: "failure", runner_name: runnerName });
    const done = jobPayload("completed", 1, GPU, { ...REPO, runnerName, conclusion: "failure", runId: 8001, name: "base cuda12" });
    const answers = await Promise.all([webhook(delivery(WEBHOOK_SECRET, done)), webhook(delivery(WEBHOOK_SECRET, done))]);
    assert.deepEqual(answers.map((a) => JSON.parse(a.body).rerun).filter(Boolean), ["done"]);
    assert.deepEqual(github.reruns, [1]);

    // The re-run attempt (new job id, same run and name) is queued; its runner is on-demand although spot has capacity.
    const next = [...github.jobs.values()].find((j) => j.run_id === 8001 && j.run_attempt === 2)!;
    assert.equal((await webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", next.id, GPU, { ...REPO, runId: 8001, runAttempt: 2, name: "base cuda12" })))).statusCode, 202);
    const r = await runScaleUp(t.deps);
    assert.deepEqual(r.launched.map((l) => [l.jobId, l.spot]), [[next.id, false]]);
    assert.equal((await active())[0]!.InstanceLifecycle, undefined);
  });

  it("a job that succeeds on its interrupted runner, or fails on a runner never interrupted, is not re-run", async () => {
    const { inst, runnerName } = await launchOne(2);
    await handleInterruption(t.deps, spotWarning(inst.InstanceId!));
    await webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 2, GPU, { ...REPO, runnerName, conclusion: "success" })));
    await webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 3, GPU, { ...REPO, runnerName: "strata-gpu-base-builder-3-abcdef", conclusion: "failure" })));
    assert.deepEqual(github.reruns, []);
  });

  it("ignores events for instances that are not the fleet's", async () => {
    assert.equal((await handleInterruption(t.deps, spotWarning("i-0123456789abcdef0"))).result, "ignored");
    assert.equal((await handleInterruption(t.deps, { detail: {} })).result, "ignored");
  });

  it("a re-run GitHub refuses (5xx) stays pending and housekeeping re-runs it", async () => {
    const { inst, runnerName } = await launchOne(4);
    await handleInterruption(t.deps, spotWarning(inst.InstanceId!));
    await t.deps.ec2.terminate([inst.InstanceId!]);
    Object.assign(github.jobs.get(4)!, { status: "completed", conclusion: "failure" });
    github.scriptForever("rerun", { status: 503 });
    const r = await webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 4, GPU, { ...REPO, runnerName, conclusion: "failure", runId: 8004 })));
    assert.equal(JSON.parse(r.body).rerun, "pending");
    github.clearScripts();
    const hk = await runHousekeeping(t.deps);
    assert.deepEqual(hk.reruns, [4]);
    assert.deepEqual(github.reruns, [4]);
    assert.deepEqual((await runHousekeeping(t.deps)).reruns, [], "once");
  });
});

describe("housekeeping reconciliation", () => {
  it("a queued job whose webhook was missed is enqueued and then served; one already queued is not enqueued twice", async () => {
    const old = new Date(Date.now() - 10 * 60_000).toISOString();
    github.addJob("acme/models", { id: 51, labels: GPU, created_at: old }); // webhook missed
    github.addJob("acme/models", { id: 52, labels: GPU, created_at: old });
    github.addJob("acme/models", { id: 53, labels: ["self-hosted"], created_at: old }); // not the fleet's
    assert.equal((await webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", 52, GPU, REPO)))).statusCode, 202);
    const hk = await runHousekeeping(t.deps);
    assert.deepEqual(hk.reconciled, [51]);
    assert.deepEqual(hk.errors, []);
    assert.deepEqual((await runHousekeeping(t.deps)).reconciled, [], "the ledger now holds it");
    const r = await runScaleUp(t.deps);
    assert.deepEqual(r.launched.map((l) => l.jobId).sort(), [51, 52]);
  });

  it("a job cancelled while its instance boots leaves no instance, parameter or runner behind", async () => {
    const { inst, runnerName } = await launchOne(61);
    github.jobs.get(61)!.status = "completed";
    const r = await webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 61, GPU, { ...REPO, conclusion: "cancelled" })));
    assert.equal(JSON.parse(r.body).result, "cleaned");
    assert.equal((await active()).length, 0);
    const jit = await t.ssm.send(new GetParametersByPathCommand({ Path: "/strata/test/jit" }));
    assert.equal(jit.Parameters?.length ?? 0, 0);
    assert.ok(![...github.runners.values()].some((x) => x.name === runnerName));
    assert.equal(inst.InstanceId !== undefined, true);
  });
});
