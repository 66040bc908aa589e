import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseAppSecret, parseConfig } from "../scaler/config.ts";
import { backoffSeconds, jobsToReconcile, matchPool, placements, planHousekeeping, runnerLabels, serveDecision, spotAllowed, spotBreakerOpenUntil, TAGS, type JobLedgerEntry } from "../scaler/logic.ts";
import type { GitHubJob, RunnerInstance } from "../scaler/ports.ts";
import { testPool } from "./support/events.ts";

const ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata-x-AbCdEf";
const goodEnv = {
  STRATA_POOLS: JSON.stringify([testPool()]),
  STRATA_WEBHOOK_SECRET_ARN: ARN,
  STRATA_GITHUB_APP_SECRET_ARN: ARN,
  STRATA_RUNNER_OWNER: "acme",
  STRATA_PARAM_PREFIX: "/strata/dev/jit/",
  STRATA_STATE_PREFIX: "/strata/dev/state/",
  STRATA_REPOSITORIES: JSON.stringify(["acme/App", "acme/models"]),
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
    assert.deepEqual(c.repositories, ["acme/app", "acme/models"]);
    assert.deepEqual(c.breaker, { failures: 3, windowMinutes: 30, onDemandMinutes: 60 });
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_REPOSITORIES: "[]" }), /STRATA_REPOSITORIES: must list at least one repository/);
    assert.throws(() => parseConfig({ ...goodEnv, STRATA_REPOSITORIES: '["acme"]' }), /STRATA_REPOSITORIES\[0\]: must be "owner\/name"/);
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
  const gpu = testPool({ labels: ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"] });
  const cpu = testPool({ name: "cpu", labels: ["self-hosted", "linux", "x64"] });
  it("every job label is the pool's and every custom pool label is the job's, case-insensitively; first pool wins", () => {
    assert.equal(matchPool([gpu, cpu], ["self-hosted", "gpu", "strata-base-builder"])?.name, "gpu");
    assert.equal(matchPool([gpu, cpu], ["SELF-HOSTED", "Linux", "X64", "GPU", "Strata-Base-Builder"])?.name, "gpu");
    assert.equal(matchPool([gpu, cpu], ["self-hosted"])?.name, "cpu", "[self-hosted] alone never reaches the GPU pool");
    assert.equal(matchPool([gpu], ["self-hosted"]), undefined);
    assert.equal(matchPool([gpu], ["SELF-HOSTED", "GPU"]), undefined, "the distinguishing label strata-base-builder is missing");
    assert.equal(matchPool([gpu], ["self-hosted", "gpu", "strata-base-builder", "arm64"]), undefined, "a label the pool lacks");
    assert.equal(matchPool([gpu, cpu], []), undefined);
    assert.equal(matchPool([cpu], ["linux", "x64"])?.name, "cpu", "self-hosted is implicit in every pool");
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

describe("scale-up decisions", () => {
  const B = { failures: 3, windowMinutes: 30, onDemandMinutes: 60 };
  const M = 60_000;
  it("the spot breaker opens at N failures within M minutes and closes T minutes after the last", () => {
    assert.equal(spotBreakerOpenUntil([0, 10 * M], B), undefined);
    assert.equal(spotBreakerOpenUntil([0, 31 * M, 62 * M], B), undefined, "spread wider than the window");
    assert.equal(spotBreakerOpenUntil([0, 10 * M, 20 * M], B), 80 * M);
    assert.equal(spotBreakerOpenUntil([20 * M, 0, 10 * M, 25 * M], B), 85 * M, "order does not matter; a later failure extends it");
    assert.equal(spotAllowed([0, 10 * M, 20 * M], B, 79 * M), false);
    assert.equal(spotAllowed([0, 10 * M, 20 * M], B, 80 * M), true);
  });
  it("launches only for a job GitHub reports queued; drops finished, running and over-24 h jobs; retries when unsure", () => {
    const job = (status: string, conclusion: string | null = null): GitHubJob => ({ id: 1, status, conclusion, labels: [], runnerName: null, runId: 1, runAttempt: 1, name: "b", createdAt: 0 });
    assert.deepEqual(serveDecision(job("queued"), 0, 1000, false), { kind: "launch" });
    assert.equal(serveDecision(job("completed", "cancelled"), 0, 1000, false).kind, "drop");
    assert.equal(serveDecision(job("in_progress"), 0, 1000, false).kind, "drop");
    assert.equal(serveDecision(job("queued"), 0, 1000, true).kind, "drop");
    assert.equal(serveDecision(job("queued"), 0, 24 * 60 * M + 1, false).kind, "drop");
    assert.equal(serveDecision(undefined, 0, 1000, false).kind, "retry");
    assert.equal(serveDecision(job("waiting"), 0, 1000, false).kind, "retry");
    assert.deepEqual([1, 2, 3, 4, 5, 9].map(backoffSeconds), [30, 60, 120, 240, 300, 300]);
  });
  it("reconciliation enqueues queued jobs the queue does not hold, or whose instance died", () => {
    const pools = [testPool({ labels: ["self-hosted", "gpu", "strata-base-builder"] })];
    const j = (id: number, labels = ["self-hosted", "gpu", "strata-base-builder"], createdAt = 0): { repository: string; job: GitHubJob } => ({ repository: "acme/app", job: { id, status: "queued", conclusion: null, labels, runnerName: null, runId: id, runAttempt: 1, name: "b", createdAt } });
    const ledger = new Map<number, JobLedgerEntry>([
      [2, { state: "queued", at: 0 }],
      [3, { state: "launched", at: 0, instanceId: "i-alive" }],
      [4, { state: "launched", at: 0, instanceId: "i-dead" }],
    ]);
    const got = jobsToReconcile([j(1), j(2), j(3), j(4), j(5, ["self-hosted"]), j(6, undefined, 9 * M)], pools, ledger, new Set(["i-alive"]), 10 * M);
    assert.deepEqual(got.map((g) => g.job.id), [1, 4], "5 fits no pool; 6 is younger than the grace period");
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
