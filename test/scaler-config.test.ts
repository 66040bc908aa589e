import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseAppSecret, parseConfig } from "../scaler/config.ts";
import { excessInstances, matchPool, placements, planHousekeeping, runnerLabels, TAGS } from "../scaler/logic.ts";
import type { RunnerInstance } from "../scaler/ports.ts";
import { testPool } from "../scaler/testing/events.ts";

const ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata-x-AbCdEf";
const goodEnv = {
  STRATA_POOLS: JSON.stringify([testPool()]),
  STRATA_WEBHOOK_SECRET_ARN: ARN,
  STRATA_GITHUB_APP_SECRET_ARN: ARN,
  STRATA_RUNNER_OWNER: "acme",
  STRATA_PARAM_PREFIX: "/strata/dev/jit/",
  PATH: "/usr/bin",
};

describe("parseConfig", () => {
  it("parses a good environment and applies defaults", () => {
    const c = parseConfig(goodEnv);
    assert.equal(c.githubApiUrl, "https://api.github.com");
    assert.equal(c.runnerGroupId, 1);
    assert.equal(c.tagKey, "strata:pool");
    assert.equal(c.repo, undefined);
    assert.equal(c.pools[0]!.name, "gpu");
    const c2 = parseConfig({ ...goodEnv, STRATA_RUNNER_REPO: "app", STRATA_RUNNER_GROUP_ID: "3", STRATA_GITHUB_API_URL: "https://ghe.example.com/api/v3/", STRATA_TAG_KEY: "" });
    assert.equal(c2.repo, "app");
    assert.equal(c2.runnerGroupId, 3);
    assert.equal(c2.githubApiUrl, "https://ghe.example.com/api/v3");
    assert.equal(c2.tagKey, "strata:pool");
  });

  it("names every bad variable in one error", () => {
    try {
      parseConfig({ STRATA_POOLS: JSON.stringify([{ ...testPool(), maxRunners: -1, subnetIds: [] }, testPool()]), STRATA_PARAM_PREFIX: "strata/no-slash", STRATA_RUNNER_GROUP_ID: "x" });
      assert.fail("should throw");
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      const msg = e.message;
      for (const needle of ["STRATA_WEBHOOK_SECRET_ARN", "STRATA_GITHUB_APP_SECRET_ARN", "STRATA_RUNNER_OWNER", "STRATA_PARAM_PREFIX", "STRATA_RUNNER_GROUP_ID", "STRATA_POOLS[0].maxRunners", "STRATA_POOLS[0].subnetIds", 'duplicate pool name "gpu"']) {
        assert.ok(msg.includes(needle), `${needle} in:\n${msg}`);
      }
    }
  });

  it("rejects STRATA_POOLS that is not JSON, empty, or not an array", () => {
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_POOLS: "nope" }), /STRATA_POOLS: not valid JSON/);
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_POOLS: "[]" }), /STRATA_POOLS/);
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_POOLS: '{"name":"x"}' }), /STRATA_POOLS/);
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_POOLS: undefined }), /STRATA_POOLS/);
  });

  it("parses the App secret, accepting string ids and escaped newlines", () => {
    const s = parseAppSecret(JSON.stringify({ appId: "12", installationId: 34, privateKey: "-----BEGIN RSA PRIVATE KEY-----\\nabc\\n-----END RSA PRIVATE KEY-----" }));
    assert.equal(s.appId, 12);
    assert.equal(s.installationId, 34);
    assert.ok(s.privateKey.includes("\nabc\n"));
    assert.throws(() => parseAppSecret("not json"), ConfigError);
    assert.throws(() => parseAppSecret(JSON.stringify({ appId: 1 })), /installationId|privateKey/);
  });
});

describe("matchPool / runnerLabels", () => {
  const gpu = testPool();
  const cpu = testPool({ name: "cpu", labels: ["linux", "x64"] });
  it("needs self-hosted and every job label in the pool, case-insensitively; first pool wins", () => {
    assert.equal(matchPool([gpu, cpu], ["self-hosted", "GPU"])?.name, "gpu");
    assert.equal(matchPool([gpu, cpu], ["SELF-HOSTED", "linux"])?.name, "gpu");
    assert.equal(matchPool([cpu, gpu], ["self-hosted", "linux"])?.name, "cpu");
    assert.equal(matchPool([cpu, gpu], ["self-hosted", "linux", "gpu"])?.name, "gpu");
    assert.equal(matchPool([gpu, cpu], ["linux", "gpu"]), undefined);
    assert.equal(matchPool([gpu, cpu], ["self-hosted", "arm64"]), undefined);
    assert.equal(matchPool([gpu, cpu], []), undefined);
    assert.equal(matchPool([cpu], ["self-hosted"])?.name, "cpu", "self-hosted is implicit in every pool");
  });
  it("registers runners with self-hosted first and no duplicates", () => {
    assert.deepEqual(runnerLabels(testPool({ labels: ["GPU", "Self-Hosted", "gpu"] })), ["self-hosted", "GPU"]);
  });
});

describe("placements", () => {
  it("spot before on-demand, types in priority order, subnets rotated by seed", () => {
    const p = testPool({ instanceTypes: ["a.x", "b.x"], subnetIds: ["subnet-1", "subnet-2", "subnet-3"] });
    const got = placements(p, 4).map((x) => `${x.spot ? "S" : "O"}${x.instanceType}${x.subnetId.slice(-1)}`);
    assert.deepEqual(got, ["Sa.x2", "Sa.x3", "Sa.x1", "Sb.x2", "Sb.x3", "Sb.x1", "Oa.x2", "Oa.x3", "Oa.x1", "Ob.x2", "Ob.x3", "Ob.x1"]);
    assert.ok(placements({ ...p, spot: false }, -7).every((x) => !x.spot));
    assert.equal(placements({ ...p, spot: false }, -7).length, 6);
  });
});

describe("excessInstances", () => {
  const inst = (id: string, t: number, jobId?: string): RunnerInstance => ({ id, state: "pending", launchTime: t, ...(jobId ? { jobId } : {}) });
  it("keeps the oldest maxRunners (ties broken by id) and one instance per job", () => {
    const view = [inst("i-c", 2, "3"), inst("i-a", 1, "1"), inst("i-b", 2, "2"), inst("i-d", 2, "1"), inst("i-e", 3, "4")];
    assert.deepEqual(
      excessInstances(view, 3).map((i) => i.id),
      ["i-d", "i-e"],
    );
    assert.deepEqual(excessInstances(view, 0).length, 5);
    assert.deepEqual(excessInstances([], 3), []);
  });
  it("gives the same verdict for every observer that sees the same instances", () => {
    const view = Array.from({ length: 12 }, (_, k) => inst(`i-${(k * 7919) % 97}`, 1000 * (k % 3)));
    const a = excessInstances(view, 5).map((i) => i.id).sort();
    const b = excessInstances([...view].reverse(), 5).map((i) => i.id).sort();
    assert.deepEqual(a, b);
  });
});

describe("planHousekeeping", () => {
  const MIN = 60_000;
  const now = 10_000 * MIN;
  const pool = testPool({ maxRuntimeMinutes: 60, maxRunners: 2 });
  const mk = (id: string, ageMin: number, runnerName: string, extra: Partial<RunnerInstance> = {}): RunnerInstance => ({ id, state: "running", launchTime: now - ageMin * MIN, pool: "gpu", runnerName, ...extra });

  it("terminates overdue and never-registered instances; deletes orphan params and offline strata runners", () => {
    const plan = planHousekeeping({
      now,
      pools: [pool],
      instances: [
        mk("i-0000000000000001", 61, "strata-gpu-1-a"), // overdue
        mk("i-0000000000000002", 11, "strata-gpu-2-a"), // offline after 11 min: never registered
        mk("i-0000000000000003", 11, "strata-gpu-3-a"), // online: fine
        mk("i-0000000000000004", 2, "strata-gpu-4-a"), // booting: fine
        mk("i-0000000000000005", 30, "strata-gpu-5-a"), // busy: fine
        mk("i-0000000000000006", 300, "x", { pool: "gone" }), // pool removed from config, older than any max runtime
        { ...mk("i-0000000000000007", 1, "strata-gpu-7-a"), state: "shutting-down" },
      ],
      params: [
        { name: "/p/i-0000000000000004", lastModified: now },
        { name: "/p/i-0000000000000002", lastModified: now }, // its instance is being terminated
        { name: "/p/i-00000000000000ff", lastModified: now }, // no instance
        { name: "/p/i-0000000000000007", lastModified: now }, // instance shutting down
        { name: "/p/not-an-instance", lastModified: now },
      ],
      paramPrefix: "/p/",
      runners: [
        { id: 1, name: "strata-gpu-1-a", status: "online", busy: true },
        { id: 2, name: "strata-gpu-2-a", status: "offline", busy: false },
        { id: 3, name: "strata-gpu-3-a", status: "online", busy: false },
        { id: 4, name: "strata-gpu-4-a", status: "offline", busy: false },
        { id: 5, name: "strata-gpu-5-a", status: "online", busy: true },
        { id: 8, name: "strata-gpu-8-a", status: "offline", busy: false }, // orphan
        { id: 9, name: "someone-elses", status: "offline", busy: false },
      ],
      registrationTimeoutMinutes: 10,
    });
    assert.deepEqual(plan.terminate, [
      { id: "i-0000000000000001", reason: "max-runtime" },
      { id: "i-0000000000000002", reason: "never-registered" },
      { id: "i-0000000000000006", reason: "unknown-pool" },
    ]);
    assert.deepEqual(plan.deleteParams.sort(), ["/p/i-0000000000000002", "/p/i-0000000000000007", "/p/i-00000000000000ff"]);
    assert.deepEqual(plan.deleteRunners.map((r) => r.name).sort(), ["strata-gpu-2-a", "strata-gpu-8-a"]);
    assert.deepEqual(plan.overCap, [{ pool: "gpu", active: 3, maxRunners: 2 }]);
  });

  it("without GitHub's runner list only runtime and parameter rules apply", () => {
    const plan = planHousekeeping({ now, pools: [pool], instances: [mk("i-0000000000000002", 30, "strata-gpu-2-a")], params: [], paramPrefix: "/p/", runners: undefined, registrationTimeoutMinutes: 10 });
    assert.deepEqual(plan.terminate, []);
    assert.deepEqual(plan.deleteRunners, []);
  });

  it("uses the tag constants", () => {
    assert.equal(TAGS.jobId, "strata:job-id");
    assert.equal(TAGS.delivery, "strata:delivery");
    assert.equal(TAGS.runnerName, "strata:runner-name");
  });
});
