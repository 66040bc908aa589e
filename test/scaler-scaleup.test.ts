import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DescribeInstancesCommand, type Instance } from "@aws-sdk/client-ec2";
import { GetParameterCommand, GetParametersByPathCommand } from "@aws-sdk/client-ssm";
import { createWebhookHandler, runScaleUp, type ScaleUpDeps } from "../scaler/core.ts";
import { MAX_QUEUED_MS } from "../scaler/logic.ts";
import { delivery, jobPayload } from "./support/events.ts";
import { GPU, InjectedCapacityFaults, useFleetStack, WEBHOOK_SECRET, type FleetStack, type FleetStackOptions } from "./support/fleet-stack.ts";

// The scale-up consumer's contract: real EC2/SSM/SQS calls against moto, GitHub on loopback.
const fleet = useFleetStack();
const github = fleet.github;
let t: FleetStack;
const REPO = { owner: "acme", repo: "models" };

async function stack(o: FleetStackOptions = {}) {
  t = await fleet.create(o);
  return { webhook: createWebhookHandler(t.deps) };
}
async function enqueue(webhook: ReturnType<typeof createWebhookHandler>, ids: number[], extra: Parameters<typeof jobPayload>[3] = {}) {
  for (const id of ids) {
    if (!github.jobs.has(id)) github.addJob("acme/models", { id, labels: GPU, run_id: extra.runId ?? 1000 + id, run_attempt: extra.runAttempt ?? 1, name: extra.name ?? "build" });
    const r = await webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", id, GPU, { ...REPO, ...extra })));
    assert.equal(r.statusCode, 202, r.body);
  }
}
async function instances(): Promise<Instance[]> {
  const r = await t.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: "instance-state-name", Values: ["pending", "running"] }] }));
  return (r.Reservations ?? []).flatMap((x) => x.Instances ?? []);
}
const tag = (i: Instance, k: string) => i.Tags?.find((x) => x.Key === k)?.Value;

describe("scale-up consumer on moto", () => {
  it("launches one tagged spot instance per queued job, registers a JIT runner into the fleet's group and stores its config tagged with the instance ARN", async () => {
    const { webhook } = await stack();
    await enqueue(webhook, [101]);
    const report = await runScaleUp(t.deps);
    assert.equal(report.launched.length, 1);
    const [inst] = await instances();
    assert.equal(inst!.InstanceLifecycle, "spot");
    assert.equal(tag(inst!, "strata:pool"), "gpu-base-builder");
    assert.equal(tag(inst!, "strata:job-id"), "101");
    const runnerName = tag(inst!, "strata:runner-name")!;
    assert.match(runnerName, /^strata-gpu-base-builder-101-/);
    const param = await t.ssm.send(new GetParameterCommand({ Name: `/strata/test/jit/${inst!.InstanceId}`, WithDecryption: true }));
    assert.ok(param.Parameter?.Value);
    const runner = [...github.runners.values()].find((r) => r.name === runnerName)!;
    assert.ok(runner, "runner registered at GitHub");
    assert.equal(await t.queueDepth(), 0, "served jobs leave the queue");
    // Tokens narrowed per call: job status with actions:read on the one repository, runners with the runner permission only.
    assert.ok(github.tokenRequests.some((s) => s.permissions.actions === "read" && JSON.stringify(s.repositories) === '["models"]'));
    assert.ok(github.tokenRequests.some((s) => JSON.stringify(s.permissions) === '{"organization_self_hosted_runners":"write"}' && s.repositories === undefined));
    assert.ok(github.tokenRequests.every((s) => Object.keys(s.permissions).length === 1), "no token carries more than one permission");
  });

  it("never exceeds the cap: 7 jobs into a cap of 2 launch 2; the rest stay queued in order and are served as instances end", async () => {
    const { webhook } = await stack({ maxRunners: 2 });
    await enqueue(webhook, [1, 2, 3, 4, 5, 6, 7]);
    const first = await runScaleUp(t.deps);
    assert.deepEqual(first.launched.map((l) => l.jobId), [1, 2]);
    assert.equal((await instances()).length, 2);
    assert.equal(await t.queueDepth(), 5);
    const again = await runScaleUp(t.deps);
    assert.deepEqual(again.launched, [], "a second wake-up at cap launches nothing");
    assert.deepEqual(again.atCap, ["gpu-base-builder"]);
    // Job 1 finishes: its instance terminates; the next run serves job 3, the oldest waiting.
    github.jobs.get(1)!.status = "completed";
    await t.deps.ec2.terminate([(await instances()).find((i) => tag(i, "strata:job-id") === "1")!.InstanceId!]);
    const third = await runScaleUp(t.deps);
    assert.deepEqual(third.launched.map((l) => l.jobId), [3]);
    assert.equal((await instances()).length, 2);
  });

  it("a replayed job that already has an instance is not launched twice", async () => {
    const { webhook } = await stack();
    await enqueue(webhook, [55]);
    await runScaleUp(t.deps);
    // The ledger stops a replay at the webhook; a message for the job sent anyway (e.g. reconciliation) is dropped.
    await t.deps.queue.send(t.queueUrl, { jobId: 55, repository: "acme/models", pool: "gpu-base-builder", runId: 1055, runAttempt: 1, name: "build", queuedAt: Date.now(), source: "reconcile" }, "55-again");
    const r = await runScaleUp(t.deps);
    assert.deepEqual(r.dropped.map((d) => d.reason), ["job already has an instance"]);
    assert.equal((await instances()).length, 1);
  });

  it("[injected fault: InsufficientInstanceCapacity] spot fails in every type and subnet → on-demand, types in priority order", async () => {
    const { webhook } = await stack();
    const faults = new InjectedCapacityFaults(t.deps.ec2);
    faults.capacity = (req) => (req.spot || req.instanceType === "g6.4xlarge" ? "InsufficientInstanceCapacity" : undefined);
    await enqueue(webhook, [201]);
    const report = await runScaleUp({ ...t.deps, ec2: faults });
    assert.equal(report.launched.length, 1);
    assert.deepEqual(faults.attempts.map((a) => `${a.spot ? "spot" : "od"}/${a.instanceType}`), ["spot/g6.4xlarge", "spot/g6.4xlarge", "spot/g5.4xlarge", "spot/g5.4xlarge", "od/g6.4xlarge", "od/g6.4xlarge", "od/g5.4xlarge"]);
    const [inst] = await instances();
    assert.equal(inst!.InstanceType, "g5.4xlarge");
    assert.equal(inst!.InstanceLifecycle, undefined, "on-demand");
  });

  it("[injected fault: InsufficientInstanceCapacity] no capacity anywhere: the job stays queued with backoff and is served when capacity returns", async () => {
    const { webhook } = await stack();
    const faults = new InjectedCapacityFaults(t.deps.ec2);
    faults.capacity = () => "InsufficientInstanceCapacity";
    await enqueue(webhook, [301, 302]);
    // The backoff is shortened to 1 s through the real SQS call (ChangeMessageVisibility), so the test need not wait 30 s.
    const q = t.deps.queue;
    const queue = { send: q.send.bind(q), receive: q.receive.bind(q), delete: q.delete.bind(q), retryLater: (u: string, h: string, s: number) => q.retryLater(u, h, Math.min(s, 1)) };
    const r = await runScaleUp({ ...t.deps, ec2: faults, queue });
    assert.deepEqual(r.launched, []);
    assert.deepEqual(r.retried.map((x) => [x.jobId, x.reason, x.delaySeconds]), [[301, "no capacity in any placement", 30]]);
    assert.equal(await t.queueDepth(), 2, "both jobs still queued (302 waits behind 301)");
    assert.equal((await instances()).length, 0);
    // Capacity returns; the backoff has passed (made visible again here rather than waiting 30 s).
    faults.capacity = () => undefined;
    assert.deepEqual((await runScaleUp({ ...t.deps, ec2: faults, queue })).launched, [], "not before the backoff has passed");
    await new Promise((r) => setTimeout(r, 1200));
    const later = await runScaleUp({ ...t.deps, ec2: faults, queue });
    assert.deepEqual(later.launched.map((l) => l.jobId), [301, 302]);
  });

  it("[injected fault: InsufficientInstanceCapacity] the spot breaker opens after 3 spot failures and the pool launches on-demand", async () => {
    const { webhook } = await stack({ maxRunners: 10 });
    const faults = new InjectedCapacityFaults(t.deps.ec2);
    faults.capacity = (req) => (req.spot ? "InsufficientInstanceCapacity" : undefined);
    await enqueue(webhook, [401, 402, 403, 404, 405]);
    await runScaleUp({ ...t.deps, ec2: faults });
    const spotTries = faults.attempts.filter((a) => a.spot).length;
    assert.equal(spotTries, 3 * 4, "three jobs tried spot (2 types × 2 subnets each); then the breaker is open");
    const breaker = JSON.parse((await t.ssm.send(new GetParameterCommand({ Name: "/strata/test/state/breaker/gpu-base-builder" }))).Parameter!.Value!);
    assert.equal(breaker.spotFailures.length, 3);
    assert.equal((await instances()).length, 5);
  });

  it("GitHub 5xx on the job status: no launch, the job stays queued", async () => {
    const { webhook } = await stack();
    await enqueue(webhook, [501]);
    github.scriptForever("job", { status: 502 });
    const r = await runScaleUp(t.deps);
    assert.deepEqual(r.retried.map((x) => x.reason), ["GitHub did not answer"]);
    assert.equal((await instances()).length, 0);
    assert.equal(await t.queueDepth(), 1);
  });

  it("a job past GitHub's 24 h limit leaves the queue with a log line and no launch", async () => {
    const { webhook } = await stack();
    await enqueue(webhook, [601]);
    const r = await runScaleUp({ ...t.deps, now: () => Date.now() + MAX_QUEUED_MS + 60_000 } satisfies ScaleUpDeps);
    assert.deepEqual(r.dropped.map((d) => d.reason), ["queued longer than GitHub's 24 h limit"]);
    assert.equal(await t.queueDepth(), 0);
    assert.equal((await instances()).length, 0);
  });

  it("a re-run of an interrupted job (on-demand marker for its run and name) launches on-demand even with spot capacity", async () => {
    const { webhook } = await stack();
    const { onDemandId, stateKey } = await import("../scaler/logic.ts");
    await t.deps.state.put(stateKey("/strata/test/state/", "on-demand", onDemandId(7000, "base cuda")), JSON.stringify({ at: Date.now() }));
    await enqueue(webhook, [701], { runId: 7000, runAttempt: 2, name: "base cuda" });
    await runScaleUp(t.deps);
    const [inst] = await instances();
    assert.equal(inst!.InstanceLifecycle, undefined, "on-demand");
    const ledger = await t.ssm.send(new GetParametersByPathCommand({ Path: "/strata/test/state/jobs", Recursive: true }));
    assert.match(ledger.Parameters![0]!.Value!, /"state":"launched"/);
  });
});

