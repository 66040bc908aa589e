import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createWebhookHandler, type WebhookDeps } from "../scaler/core.ts";
import { TAGS } from "../scaler/logic.ts";
import { silentLogger, type InstanceState } from "../scaler/ports.ts";
import { FakeEc2, FakeGitHub, FakeParams, seeded } from "../scaler/testing/fakes.ts";
import { delivery, jobPayload, sign, testConfig, testPool } from "../scaler/testing/events.ts";
import type { ScalerConfig } from "../scaler/config.ts";

const SECRET = "It's a Secret to Everybody";
const GPU = ["self-hosted", "linux", "x64", "gpu"];

function setup(o: { config?: ScalerConfig; seed?: number; jitterMs?: number } = {}) {
  const config = o.config ?? testConfig();
  const ec2 = new FakeEc2(config.tagKey, Date.now, { jitterMs: o.jitterMs ?? 2, random: seeded(o.seed ?? 1) });
  const params = new FakeParams(Date.now, { jitterMs: o.jitterMs ?? 2, random: seeded((o.seed ?? 1) + 100) });
  const github = new FakeGitHub();
  let githubCalls = 0;
  const deps: WebhookDeps = {
    config,
    ec2,
    params,
    github: async () => {
      githubCalls++;
      return github;
    },
    webhookSecret: async () => SECRET,
    log: silentLogger,
    sleep: async () => {},
  };
  const handle = createWebhookHandler(deps);
  return { config, ec2, params, github, handle, deps, githubCalls: () => githubCalls };
}

const body = (r: { body: string }) => JSON.parse(r.body) as Record<string, unknown>;

describe("webhook: authenticity and shape", () => {
  it("answers 401 without a signature, and touches nothing", async () => {
    const t = setup();
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 1, GPU), { signature: null }));
    assert.equal(r.statusCode, 401);
    assert.equal(t.ec2.launchAttempts.length, 0);
  });

  it("answers 401 for a wrong secret, a tampered body, a sha1 signature and garbage", async () => {
    const t = setup();
    const payload = JSON.stringify(jobPayload("queued", 1, GPU));
    for (const signature of [sign("wrong", payload), sign(SECRET, payload + " "), "sha1=" + "0".repeat(40), "sha256=zz", "", "sha256="]) {
      const r = await t.handle(delivery(SECRET, payload, { signature }));
      assert.equal(r.statusCode, 401, `signature ${JSON.stringify(signature)}`);
    }
    const tampered = delivery(SECRET, payload);
    tampered.body = payload.replace('"id":1', '"id":2');
    assert.equal((await t.handle(tampered)).statusCode, 401);
    assert.equal(t.ec2.launchAttempts.length, 0);
  });

  it("answers 401 for a signed empty body and for an event with no headers or body at all", async () => {
    const t = setup();
    assert.equal((await t.handle({ headers: { "x-hub-signature-256": sign(SECRET, "x") }, body: "" })).statusCode, 401);
    assert.equal((await t.handle({})).statusCode, 401);
    assert.equal((await t.handle({ headers: null, body: null })).statusCode, 401);
  });

  it("answers 400 for a correctly signed body that is not JSON", async () => {
    const t = setup();
    const r = await t.handle(delivery(SECRET, "{not json"));
    assert.equal(r.statusCode, 400);
  });

  it("answers 400 for a workflow_job payload of the wrong shape or without a delivery id", async () => {
    const t = setup();
    assert.equal((await t.handle(delivery(SECRET, { action: "queued", workflow_job: { id: "x" } }))).statusCode, 400);
    assert.equal((await t.handle(delivery(SECRET, [1, 2]))).statusCode, 400);
    const ev = delivery(SECRET, jobPayload("queued", 1, GPU));
    delete ev.headers!["x-github-delivery"];
    assert.equal((await t.handle(ev)).statusCode, 400);
  });

  it("accepts base64-encoded bodies and mixed-case header names", async () => {
    const t = setup();
    const ev = delivery(SECRET, jobPayload("queued", 7, GPU), { base64: true });
    const headers = Object.fromEntries(Object.entries(ev.headers!).map(([k, v]) => [k.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase()), v]));
    const r = await t.handle({ ...ev, headers });
    assert.equal(r.statusCode, 201, r.body);
  });

  it("answers ping with 200 and other events with a 200 no-op", async () => {
    const t = setup();
    assert.deepEqual(body(await t.handle(delivery(SECRET, { zen: "Keep it simple." }, { event: "ping" }))), { result: "pong" });
    const r = await t.handle(delivery(SECRET, { action: "opened" }, { event: "pull_request" }));
    assert.equal(r.statusCode, 200);
    assert.equal(body(r).result, "noop");
    assert.equal(t.ec2.launchAttempts.length, 0);
  });

  it("no-ops for in_progress/waiting actions, unmatched labels, missing self-hosted and foreign repositories", async () => {
    const t = setup({ config: testConfig({ repo: "app" }) });
    for (const ev of [
      jobPayload("in_progress", 1, GPU),
      jobPayload("waiting", 1, GPU),
      jobPayload("queued", 1, ["ubuntu-latest"]),
      jobPayload("queued", 1, ["linux", "gpu"]), // no self-hosted
      jobPayload("queued", 1, [...GPU, "arm64"]), // one label the pool lacks
      jobPayload("queued", 1, GPU, { repo: "other" }),
      jobPayload("queued", 1, GPU, { owner: "evil" }),
    ]) {
      const r = await t.handle(delivery(SECRET, ev));
      assert.equal(r.statusCode, 200, r.body);
      assert.equal(body(r).result, "noop");
    }
    assert.equal(t.ec2.launchAttempts.length, 0);
    assert.equal(t.githubCalls(), 0);
  });

  it("answers 500 (not a crash) when the webhook secret cannot be read", async () => {
    const t = setup();
    const handle = createWebhookHandler({ ...t.deps, webhookSecret: async () => Promise.reject(new Error("AccessDenied")) });
    assert.equal((await handle(delivery(SECRET, jobPayload("queued", 1, GPU)))).statusCode, 500);
  });
});

describe("webhook: scale up", () => {
  it("launches one tagged spot instance, registers a JIT runner and stores its config under the instance id", async () => {
    const t = setup();
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 42, ["Self-Hosted", "GPU", "linux"]), { delivery: "d-42" }));
    assert.equal(r.statusCode, 201, r.body);
    const b = body(r);
    assert.equal(b.result, "launched");
    const inst = t.ec2.instances.get(String(b.instanceId))!;
    assert.equal(inst.spot, true);
    assert.equal(inst.instanceType, "g6.xlarge");
    assert.deepEqual(inst.tags, { "strata:pool": "gpu", [TAGS.jobId]: "42", [TAGS.delivery]: "d-42", [TAGS.runnerName]: String(b.runnerName) });
    const [jit] = t.github.jitRequests;
    assert.equal(jit!.name, b.runnerName);
    assert.match(jit!.name, /^strata-gpu-42-[0-9a-f]{6}$/);
    assert.deepEqual(jit!.labels, ["self-hosted", "linux", "x64", "gpu"]);
    assert.equal(jit!.runnerGroupId, 1);
    assert.equal(jit!.workFolder, "_work");
    const stored = t.params.store.get(`/strata/test/jit/${inst.id}`);
    assert.ok(stored, "JIT config stored");
    assert.equal(stored.value, Buffer.from(JSON.stringify({ runner: jit!.name, id: 1 })).toString("base64"));
  });

  it("ignores a replayed delivery id, even after the instance finished", async () => {
    const t = setup();
    const ev = delivery(SECRET, jobPayload("queued", 5, GPU), { delivery: "same" });
    assert.equal((await t.handle(ev)).statusCode, 201);
    const again = await t.handle(ev);
    assert.equal(again.statusCode, 200);
    assert.equal(body(again).reason, "replayed delivery");
    for (const i of t.ec2.instances.values()) i.state = "terminated";
    assert.equal(body(await t.handle(ev)).reason, "replayed delivery");
    assert.equal(t.ec2.instances.size, 1);
    assert.equal(t.github.jitRequests.length, 1);
  });

  it("ignores a second delivery for a job that already has an instance", async () => {
    const t = setup();
    assert.equal((await t.handle(delivery(SECRET, jobPayload("queued", 6, GPU)))).statusCode, 201);
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 6, GPU)));
    assert.equal(body(r).reason, "job already has an instance");
    assert.equal(t.ec2.instances.size, 1);
  });

  it("serves a redelivery of a delivery whose launch was rolled back", async () => {
    const t = setup();
    const ev = delivery(SECRET, jobPayload("queued", 8, GPU), { delivery: "redeliver-me" });
    t.github.failures.jit = new Error("GitHub down");
    assert.equal((await t.handle(ev)).statusCode, 500);
    delete t.github.failures.jit;
    const r = await t.handle(ev);
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(t.ec2.active().length, 1);
  });

  it("falls back from spot to on-demand on capacity errors, instance types in priority order", async () => {
    const t = setup({ config: testConfig({ pools: [testPool({ subnetIds: ["subnet-0a", "subnet-0b"] })] }) });
    const codes = ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientCapacity", "UnfulfillableCapacity"];
    let n = 0;
    t.ec2.capacity = (req) => (req.spot ? codes[n++ % codes.length] : req.instanceType === "g6.xlarge" ? "InsufficientInstanceCapacity" : undefined);
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 10, GPU)));
    assert.equal(r.statusCode, 201, r.body);
    const tried = t.ec2.launchAttempts.map((a) => `${a.spot ? "spot" : "od"}:${a.instanceType}:${a.subnetId}`);
    assert.deepEqual(tried, [
      "spot:g6.xlarge:subnet-0a",
      "spot:g6.xlarge:subnet-0b",
      "spot:g5.xlarge:subnet-0a",
      "spot:g5.xlarge:subnet-0b",
      "od:g6.xlarge:subnet-0a",
      "od:g6.xlarge:subnet-0b",
      "od:g5.xlarge:subnet-0a",
    ]);
    const b = body(r);
    assert.equal(b.spot, false);
    assert.equal(b.instanceType, "g5.xlarge");
  });

  it("spreads consecutive jobs over the subnets", async () => {
    const t = setup({ config: testConfig({ pools: [testPool({ maxRunners: 10 })] }) });
    for (let job = 100; job < 106; job++) assert.equal((await t.handle(delivery(SECRET, jobPayload("queued", job, GPU)))).statusCode, 201);
    const perSubnet = new Map<string, number>();
    for (const i of t.ec2.instances.values()) perSubnet.set(i.subnetId, (perSubnet.get(i.subnetId) ?? 0) + 1);
    assert.deepEqual([...perSubnet.values()], [2, 2, 2]);
  });

  it("answers 503 and leaves nothing behind when no placement has capacity", async () => {
    const t = setup();
    t.ec2.capacity = () => "InsufficientInstanceCapacity";
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 11, GPU)));
    assert.equal(r.statusCode, 503);
    assert.equal(t.ec2.launchAttempts.length, 2 * 2 * 3); // markets x types x subnets
    assert.equal(t.ec2.instances.size, 0);
    assert.equal(t.params.store.size, 0);
    assert.equal(t.github.runners.size, 0);
  });

  it("stops at a non-capacity launch error with 500 (no blind retries on e.g. a bad launch template)", async () => {
    const t = setup();
    t.ec2.capacity = () => "InvalidLaunchTemplateId.NotFound";
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 12, GPU)));
    assert.equal(r.statusCode, 500);
    assert.equal(t.ec2.launchAttempts.length, 1);
    assert.equal(t.github.runners.size, 0);
  });

  it("on a GitHub failure answers 500 and releases the instance", async () => {
    const t = setup();
    t.github.failures.jit = new Error("502 Bad Gateway (after retries)");
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 13, GPU)));
    assert.equal(r.statusCode, 500);
    assert.equal(t.ec2.active().length, 0);
    const [inst] = t.ec2.instances.values();
    assert.equal(inst!.state, "terminated");
    assert.equal(inst!.tags[TAGS.jobId], undefined, "released instances lose the job tag");
    assert.equal(t.params.store.size, 0);
  });

  it("when the parameter cannot be written, answers 500, terminates the instance and deletes the runner", async () => {
    const t = setup();
    t.params.failures.put = new Error("ThrottlingException");
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 14, GPU)));
    assert.equal(r.statusCode, 500);
    assert.equal(t.ec2.active().length, 0);
    assert.equal(t.github.jitRequests.length, 1);
    assert.equal(t.github.runners.size, 0, "JIT runner deleted");
  });

  it("does not launch when the GitHub App secret is unusable", async () => {
    const t = setup();
    const handle = createWebhookHandler({ ...t.deps, github: async () => Promise.reject(new Error("secret is not JSON")) });
    assert.equal((await handle(delivery(SECRET, jobPayload("queued", 15, GPU)))).statusCode, 500);
    assert.equal(t.ec2.launchAttempts.length, 0);
  });

  it("no-ops at capacity without asking GitHub, and a pool with maxRunners 0 never launches", async () => {
    const t = setup({ config: testConfig({ pools: [testPool({ maxRunners: 2 }), testPool({ name: "off", labels: ["cpu"], maxRunners: 0 })] }) });
    for (let i = 0; i < 2; i++) t.ec2.seed({ tags: { "strata:pool": "gpu", [TAGS.jobId]: `old-${i}` } });
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 16, GPU)));
    assert.equal(body(r).reason, "pool at capacity");
    const off = await t.handle(delivery(SECRET, jobPayload("queued", 17, ["self-hosted", "cpu"])));
    assert.equal(body(off).reason, "pool at capacity");
    assert.equal(t.ec2.launchAttempts.length, 0);
    assert.equal(t.github.jitRequests.length, 0);
  });

  it("waits for its own instance to become visible before recounting", async () => {
    const t = setup();
    let hidden = 2;
    const list = t.ec2.list.bind(t.ec2);
    t.ec2.list = async (q) => {
      const all = await list(q);
      if (q.pool !== undefined && hidden > 0 && all.some((i) => i.state === "pending")) {
        hidden--;
        return all.filter((i) => i.state !== "pending");
      }
      return all;
    };
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 18, GPU)));
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(hidden, 0);
  });
});

describe("webhook: cap under concurrent deliveries", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`20 concurrent deliveries into an empty pool of 5 leave exactly 5 runners (seed ${seed})`, async () => {
      const t = setup({ seed, jitterMs: 4 });
      let peakArmed = 0;
      t.params.onPut = () => {
        const armed = t.ec2.active("gpu").filter((i) => t.params.store.has(`/strata/test/jit/${i.id}`)).length;
        peakArmed = Math.max(peakArmed, armed);
      };
      const results = await Promise.all(Array.from({ length: 20 }, (_, k) => t.handle(delivery(SECRET, jobPayload("queued", 500 + k, GPU)))));
      const statuses = results.map((r) => r.statusCode);
      assert.ok(statuses.every((s) => s === 201 || s === 200), statuses.join(","));
      const alive = t.ec2.active("gpu");
      assert.equal(alive.length, 5, "cap reached, not exceeded");
      assert.ok(peakArmed <= 5, `at most 5 instances ever held a JIT config while alive (saw ${peakArmed})`);
      // every surviving instance has its config; every 201 names a survivor or an instance a later recount removed
      for (const i of alive) assert.ok(t.params.store.has(`/strata/test/jit/${i.id}`), `survivor ${i.id} is armed`);
      const jobs = new Set(alive.map((i) => i.tags[TAGS.jobId]));
      assert.equal(jobs.size, 5, "one job per survivor");
    });
  }

  it("a burst into a pool with 3 busy runners adds exactly 2 and never touches the old ones", async () => {
    const t = setup({ seed: 9, jitterMs: 4 });
    const old = [0, 1, 2].map((k) => t.ec2.seed({ launchTime: Date.now() - 3600_000, tags: { "strata:pool": "gpu", [TAGS.jobId]: `busy-${k}` } }));
    await Promise.all(Array.from({ length: 20 }, (_, k) => t.handle(delivery(SECRET, jobPayload("queued", 700 + k, GPU)))));
    assert.equal(t.ec2.active("gpu").length, 5);
    for (const o of old) assert.equal(t.ec2.instances.get(o.id)!.state, "running");
  });

  it("an over-cap pool (maxRunners lowered) is left to drain: old instances are not terminated by a delivery", async () => {
    const t = setup({ config: testConfig({ pools: [testPool({ maxRunners: 1 })] }) });
    const a = t.ec2.seed({ launchTime: Date.now() - 600_000, tags: { "strata:pool": "gpu", [TAGS.jobId]: "a" } });
    const b = t.ec2.seed({ launchTime: Date.now() - 500_000, tags: { "strata:pool": "gpu", [TAGS.jobId]: "b" } });
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 800, GPU)));
    assert.equal(body(r).reason, "pool at capacity");
    assert.equal(t.ec2.instances.get(a.id)!.state, "running");
    assert.equal(t.ec2.instances.get(b.id)!.state, "running");
  });

  it("five concurrent copies of one delivery (and two of another for the same job) yield one instance", async () => {
    const t = setup({ seed: 4, jitterMs: 4, config: testConfig({ pools: [testPool({ maxRunners: 50 })] }) });
    const evs = [...Array.from({ length: 5 }, () => delivery(SECRET, jobPayload("queued", 900, GPU), { delivery: "dup" })), delivery(SECRET, jobPayload("queued", 900, GPU)), delivery(SECRET, jobPayload("queued", 900, GPU))];
    const results = await Promise.all(evs.map((e) => t.handle(e)));
    assert.ok(results.every((r) => r.statusCode === 200 || r.statusCode === 201));
    assert.equal(t.ec2.active("gpu").length, 1);
    const armed = [...t.params.store.keys()].filter((k) => t.ec2.active("gpu").some((i) => k.endsWith(i.id)));
    assert.equal(armed.length, 1);
  });
});

describe("webhook: released by a concurrent recount after its own", () => {
  it("cleans up its parameter and runner and answers no-op instead of 201", async () => {
    const t = setup();
    const put = t.params.put.bind(t.params);
    t.params.put = async (name, value) => {
      await t.ec2.release([name.split("/").pop()!]); // another delivery's recount wins the race
      await put(name, value);
    };
    const r = await t.handle(delivery(SECRET, jobPayload("queued", 40, GPU)));
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(body(r).reason, "pool at capacity");
    assert.equal(t.params.store.size, 0);
    assert.equal(t.github.runners.size, 0);
    assert.equal(t.ec2.active().length, 0);
  });
});

describe("webhook: completed jobs", () => {
  async function launched(t: ReturnType<typeof setup>, job: number) {
    const r = await t.handle(delivery(SECRET, jobPayload("queued", job, GPU)));
    assert.equal(r.statusCode, 201, r.body);
    const b = body(r);
    return { id: String(b.instanceId), runnerName: String(b.runnerName) };
  }

  it("terminates the instance of a job cancelled before boot, and deletes its parameter and runner", async () => {
    const t = setup();
    const { id } = await launched(t, 30);
    const r = await t.handle(delivery(SECRET, jobPayload("completed", 30, GPU, { runnerName: null })));
    assert.equal(r.statusCode, 200);
    assert.deepEqual(body(r), { result: "cleaned", instanceIds: [id] });
    assert.equal(t.ec2.instances.get(id)!.state, "terminated");
    assert.equal(t.params.store.size, 0);
    assert.equal(t.github.runners.size, 0);
  });

  it("leaves an instance that already took its config (booted runner may serve another job)", async () => {
    const t = setup();
    const { id } = await launched(t, 31);
    t.params.store.clear(); // the instance read and deleted it at boot
    const r = await t.handle(delivery(SECRET, jobPayload("completed", 31, GPU, { runnerName: "strata-gpu-99-abcdef" })));
    assert.equal(body(r).result, "noop");
    assert.equal(t.ec2.instances.get(id)!.state, "pending");
  });

  it("no-ops when its own runner ran the job, and when the job has no instance", async () => {
    const t = setup();
    const { id, runnerName } = await launched(t, 32);
    assert.equal(body(await t.handle(delivery(SECRET, jobPayload("completed", 32, GPU, { runnerName })))).result, "noop");
    assert.equal(t.ec2.instances.get(id)!.state, "pending");
    assert.equal(body(await t.handle(delivery(SECRET, jobPayload("completed", 12345, GPU)))).reason, "no instance for this job");
  });

  it("answers 500 when EC2 cannot be asked", async () => {
    const t = setup();
    t.ec2.failures.list = new Error("RequestLimitExceeded");
    assert.equal((await t.handle(delivery(SECRET, jobPayload("completed", 33, GPU)))).statusCode, 500);
    assert.equal((await t.handle(delivery(SECRET, jobPayload("queued", 33, GPU)))).statusCode, 500);
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
      const r = await handler(delivery(SECRET, jobPayload("queued", 1, GPU)));
      assert.equal(r.statusCode, 500);
      assert.match(errors.join("\n"), /STRATA_POOLS: not valid JSON/);
      assert.match(errors.join("\n"), /STRATA_WEBHOOK_SECRET_ARN/);
    } finally {
      console.error = orig;
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

// keep the type import used
export type _S = InstanceState;
