import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { DescribeInstancesCommand } from "@aws-sdk/client-ec2";
import { GetParametersByPathCommand } from "@aws-sdk/client-ssm";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { createWebhookHandler, runScaleUp } from "../scaler/core.ts";
import { delivery, jobPayload, sign } from "./support/events.ts";
import { GPU, useFleetStack, WEBHOOK_SECRET as SECRET, type FleetStack } from "./support/fleet-stack.ts";

// The webhook Lambda's contract, against moto (SQS, SSM, Secrets Manager, EC2) and the loopback GitHub.
const fleet = useFleetStack();
const github = fleet.github;
let t: FleetStack;
let handle: ReturnType<typeof createWebhookHandler>;
const REPO = { owner: "acme", repo: "models" };

beforeEach(async () => {
  t = await fleet.create();
  handle = createWebhookHandler(t.deps);
});

const body = (r: { body: string }) => JSON.parse(r.body) as Record<string, unknown>;
async function instanceCount(): Promise<number> {
  const r = await t.ec2.send(new DescribeInstancesCommand({}));
  return (r.Reservations ?? []).flatMap((x) => x.Instances ?? []).length;
}
async function wakeMessages(): Promise<number> {
  const r = await t.sqs.send(new ReceiveMessageCommand({ QueueUrl: t.wakeQueueUrl, MaxNumberOfMessages: 10 }));
  return (r.Messages ?? []).length;
}

describe("webhook: authenticity and shape", () => {
  it("answers 401 without a signature, for a wrong secret, a tampered body, a sha1 signature and garbage; enqueues nothing", async () => {
    const payload = JSON.stringify(jobPayload("queued", 1, GPU, REPO));
    assert.equal((await handle(delivery(SECRET, payload, { signature: null }))).statusCode, 401);
    for (const signature of [sign("wrong", payload), sign(SECRET, payload + " "), "sha1=" + "0".repeat(40), "sha256=zz", ""]) {
      assert.equal((await handle(delivery(SECRET, payload, { signature }))).statusCode, 401, `signature ${JSON.stringify(signature)}`);
    }
    assert.equal((await handle({})).statusCode, 401);
    assert.equal((await handle({ headers: null, body: null })).statusCode, 401);
    assert.equal(await t.queueDepth(), 0);
  });

  it("answers 400 for a signed body that is not JSON, a payload of the wrong shape, or no delivery id", async () => {
    assert.equal((await handle(delivery(SECRET, "{not json"))).statusCode, 400);
    assert.equal((await handle(delivery(SECRET, { action: "queued", workflow_job: { id: "x" }, repository: { name: "models", owner: { login: "acme" } } }))).statusCode, 400);
    const ev = delivery(SECRET, jobPayload("queued", 1, GPU, REPO));
    delete ev.headers!["x-github-delivery"];
    assert.equal((await handle(ev)).statusCode, 400);
    assert.equal(await t.queueDepth(), 0);
  });

  it("answers ping with 200 and other events with a 200 no-op", async () => {
    assert.deepEqual(body(await handle(delivery(SECRET, { zen: "Keep it simple." }, { event: "ping" }))), { result: "pong" });
    assert.equal(body(await handle(delivery(SECRET, { action: "opened" }, { event: "pull_request" }))).result, "noop");
  });

  it("accepts base64-encoded bodies and mixed-case header names", async () => {
    const ev = delivery(SECRET, jobPayload("queued", 7, GPU, REPO), { base64: true });
    const headers = Object.fromEntries(Object.entries(ev.headers!).map(([k, v]) => [k.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase()), v]));
    assert.equal((await handle({ ...ev, headers })).statusCode, 202);
  });
});

describe("webhook: bad input launches nothing (issue 11)", () => {
  it("a repository that is not configured: 200 no-op, nothing enqueued, GitHub never asked", async () => {
    for (const p of [jobPayload("queued", 1, GPU, { owner: "acme", repo: "other" }), jobPayload("queued", 2, GPU, { owner: "evil", repo: "models" })]) {
      const r = await handle(delivery(SECRET, p));
      assert.equal(r.statusCode, 200);
      assert.equal(body(r).reason, "repository not served by this fleet");
    }
    const spoofed = jobPayload("queued", 3, GPU, REPO) as { repository: { full_name: string } };
    spoofed.repository.full_name = "evil/models";
    assert.equal(body(await handle(delivery(SECRET, spoofed))).reason, "repository not served by this fleet");
    assert.equal(await t.queueDepth(), 0);
    assert.equal(github.requests.length, 0);
  });

  it("a payload without a repository: 400, nothing enqueued", async () => {
    const p = jobPayload("queued", 1, GPU, REPO) as Record<string, unknown>;
    delete p.repository;
    const r = await handle(delivery(SECRET, p));
    assert.equal(r.statusCode, 400);
    assert.match(String(body(r).error), /no repository/);
    assert.equal(await t.queueDepth(), 0);
  });

  it("labels that only partly match: [self-hosted], [SELF-HOSTED, GPU], a label the pool lacks: 200 no-op", async () => {
    for (const labels of [["self-hosted"], ["SELF-HOSTED", "GPU"], ["self-hosted", "linux", "x64", "gpu"], [...GPU, "arm64"], ["ubuntu-latest"], []]) {
      const r = await handle(delivery(SECRET, jobPayload("queued", 1, labels, REPO)));
      assert.equal(r.statusCode, 200, JSON.stringify(labels));
      assert.equal(body(r).reason, "no pool matches the job labels", JSON.stringify(labels));
    }
    // Case-insensitively, as GitHub matches, the full set is served.
    assert.equal((await handle(delivery(SECRET, jobPayload("queued", 2, GPU.map((l) => l.toUpperCase()), REPO)))).statusCode, 202);
    assert.equal(await t.queueDepth(), 1);
  });

  it("an unexpected action (in_progress, waiting, requested, something new): 200 no-op", async () => {
    for (const action of ["in_progress", "waiting", "requested", "teleported"]) {
      const r = await handle(delivery(SECRET, jobPayload(action, 1, GPU, REPO)));
      assert.equal(r.statusCode, 200);
      assert.equal(body(r).reason, `action ${action}`);
    }
    assert.equal(await t.queueDepth(), 0);
  });

  it("a job GitHub does not report as queued: enqueued (202), then dropped by the consumer with no launch", async () => {
    github.addJob("acme/models", { id: 11, labels: GPU, status: "completed", conclusion: "cancelled" });
    github.addJob("acme/models", { id: 12, labels: GPU, status: "in_progress" });
    for (const id of [11, 12]) assert.equal((await handle(delivery(SECRET, jobPayload("queued", id, GPU, REPO)))).statusCode, 202);
    const report = await runScaleUp(t.deps);
    assert.deepEqual(report.launched, []);
    assert.deepEqual(report.dropped.map((d) => [d.jobId, d.reason]), [[11, "job completed (cancelled)"], [12, "job already running on another runner"]]);
    assert.equal(await instanceCount(), 0);
    assert.equal(await t.queueDepth(), 0);
  });
});

describe("webhook: enqueue", () => {
  it("a queued job becomes one FIFO message with a ledger entry, and the consumer is woken; answered 202", async () => {
    const r = await handle(delivery(SECRET, jobPayload("queued", 21, GPU, { ...REPO, runId: 900, name: "base cuda12" })));
    assert.equal(r.statusCode, 202);
    assert.deepEqual(body(r), { result: "enqueued", pool: "gpu-base-builder", jobId: 21 });
    const msgs = (await t.sqs.send(new ReceiveMessageCommand({ QueueUrl: t.queueUrl, MaxNumberOfMessages: 10 }))).Messages ?? [];
    assert.equal(msgs.length, 1);
    const job = JSON.parse(msgs[0]!.Body!);
    assert.equal(job.jobId, 21);
    assert.equal(job.repository, "acme/models");
    assert.equal(job.runId, 900);
    assert.equal(job.name, "base cuda12");
    const ledger = await t.ssm.send(new GetParametersByPathCommand({ Path: "/strata/test/state/jobs", Recursive: true }));
    assert.equal(ledger.Parameters?.length, 1);
    assert.equal(await wakeMessages(), 1);
    assert.equal(await instanceCount(), 0, "the webhook never launches");
  });

  it("50 concurrent copies of one delivery, and replays later, are one message", async () => {
    const ev = delivery(SECRET, jobPayload("queued", 31, GPU, REPO));
    const answers = await Promise.all(Array.from({ length: 50 }, () => handle(ev)));
    assert.equal(answers.filter((a) => a.statusCode === 202).length, 1);
    assert.equal(answers.filter((a) => a.statusCode === 200 && body(a).reason === "job already enqueued").length, 49);
    assert.equal((await handle(ev)).statusCode, 200, "a replay is ignored");
    assert.equal(await t.queueDepth(), 1);
  });

  it("answers 500 (not a crash) when the webhook secret cannot be read", async () => {
    const h = createWebhookHandler({ ...t.deps, webhookSecret: async () => Promise.reject(new Error("AccessDenied")) });
    assert.equal((await h(delivery(SECRET, jobPayload("queued", 1, GPU, REPO)))).statusCode, 500);
  });
});

describe("webhook entry (scaler/webhook.ts)", () => {
  it("answers 500 with a logged configuration error instead of crashing on a bad environment", async () => {
    const saved = { ...process.env };
    const errors: string[] = [];
    const orig = console.error;
    console.error = (m: string) => errors.push(m);
    try {
      for (const k of Object.keys(process.env)) if (k.startsWith("STRATA_")) delete process.env[k];
      process.env.STRATA_POOLS = "[{]";
      const { handler } = await import("../scaler/webhook.ts");
      const r = await handler(delivery(SECRET, jobPayload("queued", 1, GPU, REPO)));
      assert.equal(r.statusCode, 500);
      assert.match(errors.join("\n"), /STRATA_POOLS: not valid JSON/);
      assert.match(errors.join("\n"), /STRATA_REPOSITORIES: Invalid input/);
    } finally {
      console.error = orig;
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
