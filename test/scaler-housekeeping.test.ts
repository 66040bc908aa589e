import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { runHousekeeping } from "../scaler/core.ts";
import { createGitHubClient } from "../scaler/github.ts";
import { TAGS } from "../scaler/logic.ts";
import { silentLogger } from "../scaler/ports.ts";
import { testConfig, testPool } from "./support/events.ts";
import { FakeEc2, FakeGitHub, FakeParams, FakeQueue, FakeState } from "./support/fakes.ts";
import { FakeGitHubServer, generateAppKey } from "./support/github-server.ts";

const MIN = 60_000;
const NOW = 1_900_000_000_000;
const PREFIX = "/strata/test/jit/";

function fleet() {
  const config = testConfig({ pools: [testPool({ maxRuntimeMinutes: 60 })] });
  const ec2 = new FakeEc2(config.tagKey, () => NOW);
  const params = new FakeParams(() => NOW);
  const tags = (job: string, runner: string) => ({ "strata:pool": "gpu", [TAGS.jobId]: job, [TAGS.runnerName]: runner });
  const overdue = ec2.seed({ id: "i-0000000000000001", launchTime: NOW - 61 * MIN, tags: tags("1", "strata-gpu-1-aaaaaa") });
  const stuck = ec2.seed({ id: "i-0000000000000002", launchTime: NOW - 15 * MIN, tags: tags("2", "strata-gpu-2-aaaaaa") });
  const healthy = ec2.seed({ id: "i-0000000000000003", launchTime: NOW - 15 * MIN, tags: tags("3", "strata-gpu-3-aaaaaa") });
  const booting = ec2.seed({ id: "i-0000000000000004", state: "pending", launchTime: NOW - 1 * MIN, tags: tags("4", "strata-gpu-4-aaaaaa") });
  const untagged = ec2.seed({ id: "i-0000000000000005", launchTime: NOW - 999 * MIN, tags: { Name: "not ours" } });
  params.store.set(`${PREFIX}${booting.id}`, { value: "jit", lastModified: NOW });
  params.store.set(`${PREFIX}${stuck.id}`, { value: "jit", lastModified: NOW });
  params.store.set(`${PREFIX}i-00000000000000aa`, { value: "jit", lastModified: NOW });
  return { config, ec2, params, overdue, stuck, healthy, booting, untagged };
}

describe("housekeeping with fakes", () => {
  it("cleans up by the rules and leaves healthy, booting and foreign instances alone", async () => {
    const f = fleet();
    const gh = new FakeGitHub();
    const add = (name: string, status: string, busy: boolean) => {
      const id = gh.runners.size + 100;
      gh.runners.set(id, { id, name, status, busy, labels: [] });
      return id;
    };
    add("strata-gpu-1-aaaaaa", "online", true);
    add("strata-gpu-2-aaaaaa", "offline", false);
    add("strata-gpu-3-aaaaaa", "online", false);
    add("strata-gpu-4-aaaaaa", "offline", false);
    const orphan = add("strata-gpu-77-bbbbbb", "offline", false);
    const foreign = add("build-box-1", "offline", false);
    const report = await runHousekeeping({ config: f.config, ec2: f.ec2, params: f.params, state: new FakeState(), queue: new FakeQueue(), github: async () => gh, log: silentLogger, now: () => NOW });
    assert.deepEqual(report.errors, []);
    assert.deepEqual(report.terminated.map((t) => `${t.id}:${t.reason}`).sort(), ["i-0000000000000001:max-runtime", "i-0000000000000002:never-registered"]);
    assert.equal(f.ec2.instances.get(f.overdue.id)!.state, "terminated");
    assert.equal(f.ec2.instances.get(f.stuck.id)!.state, "terminated");
    assert.equal(f.ec2.instances.get(f.healthy.id)!.state, "running");
    assert.equal(f.ec2.instances.get(f.booting.id)!.state, "pending");
    assert.equal(f.ec2.instances.get(f.untagged.id)!.state, "running");
    assert.deepEqual([...f.params.store.keys()], [`${PREFIX}${f.booting.id}`]);
    assert.deepEqual(report.deletedRunners.sort(), ["strata-gpu-2-aaaaaa", "strata-gpu-77-bbbbbb"]);
    assert.ok(!gh.runners.has(orphan));
    assert.ok(gh.runners.has(foreign));
    assert.equal(gh.runners.size, 4);
  });

  it("keeps going when GitHub is down: runtime and parameter rules still apply, the error is reported", async () => {
    const f = fleet();
    const report = await runHousekeeping({ config: f.config, ec2: f.ec2, params: f.params, state: new FakeState(), queue: new FakeQueue(), github: async () => Promise.reject(new Error("secret missing")), log: silentLogger, now: () => NOW });
    assert.equal(report.errors.length, 1);
    assert.match(report.errors[0]!, /github client: secret missing/);
    assert.deepEqual(report.terminated.map((t) => t.id), [f.overdue.id]);
    assert.equal(f.ec2.instances.get(f.stuck.id)!.state, "running", "without the runner list nobody is judged unregistered");
    assert.deepEqual([...f.params.store.keys()].sort(), [`${PREFIX}${f.stuck.id}`, `${PREFIX}${f.booting.id}`].sort());
  });

  it("does nothing when EC2 cannot be listed (no guessing)", async () => {
    const f = fleet();
    f.ec2.failures.list = new Error("UnauthorizedOperation");
    const report = await runHousekeeping({ config: f.config, ec2: f.ec2, params: f.params, state: new FakeState(), queue: new FakeQueue(), github: async () => new FakeGitHub(), log: silentLogger, now: () => NOW });
    assert.equal(report.errors.length, 1);
    assert.equal(f.params.store.size, 3);
    assert.equal(report.terminated.length, 0);
  });

  it("reports a failed terminate and still deletes parameters", async () => {
    const f = fleet();
    f.ec2.failures.terminate = new Error("RequestLimitExceeded");
    const report = await runHousekeeping({ config: f.config, ec2: f.ec2, params: f.params, state: new FakeState(), queue: new FakeQueue(), github: async () => new FakeGitHub(), log: silentLogger, now: () => NOW });
    assert.equal(report.terminated.length, 0);
    assert.match(report.errors.join(), /terminate/);
    assert.ok(report.deletedParams.includes(`${PREFIX}i-00000000000000aa`));
  });
});

describe("housekeeping against the loopback GitHub", () => {
  const key = generateAppKey();
  const server = new FakeGitHubServer({ appId: 1, installationId: 2, publicKey: key.publicKey, scope: "orgs/acme" });
  before(async () => void (await server.start()));
  after(async () => server.close());

  it("lists runners and deletes offline strata runners via DELETE /orgs/{org}/actions/runners/{id}", async () => {
    const f = fleet();
    server.addRunner("strata-gpu-3-aaaaaa", "online");
    const stuckId = server.addRunner("strata-gpu-2-aaaaaa", "offline");
    const orphanId = server.addRunner("strata-gpu-99-cccccc", "offline");
    const busyOffline = server.addRunner("strata-gpu-98-dddddd", "offline", true);
    const gh = createGitHubClient({ apiUrl: server.url, owner: "acme", app: { appId: 1, installationId: 2, privateKey: key.privateKeyPem } });
    const report = await runHousekeeping({ config: f.config, ec2: f.ec2, params: f.params, state: new FakeState(), queue: new FakeQueue(), github: async () => gh, log: silentLogger, now: () => NOW });
    assert.deepEqual(report.errors, []);
    assert.ok(!server.runners.has(stuckId));
    assert.ok(!server.runners.has(orphanId));
    assert.ok(server.runners.has(busyOffline));
    assert.ok(server.requests.some((r) => r.method === "DELETE" && r.path === `/orgs/acme/actions/runners/${orphanId}` && r.status === 204));
    assert.deepEqual(server.jwtProblems, []);
  });
});
