import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { createGitHubClient, GitHubApiError, retryDelay, type RetryPolicy } from "../scaler/github.ts";
import { FakeGitHubServer, generateAppKey } from "./support/github-server.ts";

const APP_ID = 123456;
const INSTALLATION_ID = 987654;
const key = generateAppKey();

function fastRetry(delays: number[], over: Partial<RetryPolicy> = {}): Partial<RetryPolicy> {
  return { sleep: async (ms) => void delays.push(ms), random: () => 0.5, ...over };
}

describe("GitHub client against a loopback GitHub (org scope)", () => {
  const server = new FakeGitHubServer({ appId: APP_ID, installationId: INSTALLATION_ID, publicKey: key.publicKey, scope: "orgs/acme" });
  let delays: number[] = [];
  const client = (over: Partial<RetryPolicy> = {}) =>
    createGitHubClient({ apiUrl: server.url, owner: "acme", app: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: key.privateKeyPem }, retry: fastRetry(delays, over) });

  before(async () => {
    await server.start();
  });
  after(async () => {
    await server.close();
  });
  beforeEach(() => {
    delays = [];
    server.clearScripts();
    server.requests.length = 0;
  });

  it("authenticates with an RS256 App JWT, then uses the installation token; caches the token", async () => {
    const gh = client();
    const jit = await gh.generateJitConfig({ name: "strata-gpu-1-aaaaaa", runnerGroupId: 1, labels: ["self-hosted", "gpu"], workFolder: "_work" });
    assert.equal(typeof jit.runnerId, "number");
    assert.ok(jit.encodedJitConfig.length > 20);
    await gh.listRunners();
    assert.deepEqual(server.jwtProblems, []);
    assert.equal(server.count("access_tokens"), 1, "installation token fetched once");
    assert.deepEqual(
      server.requests.map((r) => `${r.method} ${r.path.split("?")[0]} ${r.status}`),
      [`POST /app/installations/${INSTALLATION_ID}/access_tokens 201`, "POST /orgs/acme/actions/runners/generate-jitconfig 201", "GET /orgs/acme/actions/runners 200"],
    );
    assert.equal(server.runners.get(jit.runnerId)!.name, "strata-gpu-1-aaaaaa");
    assert.deepEqual(server.runners.get(jit.runnerId)!.labels, ["self-hosted", "gpu"]);
  });

  it("a wrong private key is refused by the server (the JWT check is real)", async () => {
    const other = generateAppKey();
    const gh = createGitHubClient({ apiUrl: server.url, owner: "acme", app: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: other.privateKeyPem }, retry: fastRetry(delays) });
    await assert.rejects(gh.listRunners(), (e: unknown) => e instanceof GitHubApiError && e.status === 401);
    assert.ok(server.jwtProblems.includes("JWT signature invalid"));
    server.jwtProblems.length = 0;
  });

  it("retries after a 403 rate limit (x-ratelimit-remaining: 0) and then succeeds", async () => {
    const reset = Math.floor(Date.now() / 1000) + 2;
    server.script("jit", { status: 403, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) }, body: { message: "API rate limit exceeded" } });
    const jit = await client().generateJitConfig({ name: "strata-gpu-2-aaaaaa", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" });
    assert.ok(jit.runnerId > 0);
    assert.equal(delays.length, 1);
    assert.ok(delays[0]! > 0 && delays[0]! <= 2000, `waited until the reset (${delays[0]} ms)`);
    assert.equal(server.count("jit"), 2);
  });

  it("retries after 429 with retry-after, and after a secondary rate limit 403 with retry-after", async () => {
    server.script("list", { status: 429, headers: { "retry-after": "1" } }, { status: 403, headers: { "retry-after": "2" }, body: { message: "You have exceeded a secondary rate limit" } });
    await client().listRunners();
    assert.deepEqual(delays, [1000, 2000]);
  });

  it("retries 5xx with exponential backoff and succeeds", async () => {
    server.script("jit", { status: 502 }, { status: 503 }, { status: 500 });
    await client().generateJitConfig({ name: "strata-gpu-3-aaaaaa", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" });
    assert.deepEqual(delays, [225, 450, 900]); // base 300 ms doubling, "equal jitter" at random()=0.5
  });

  it("gives up on persistent 5xx after maxAttempts with a GitHubApiError", async () => {
    server.scriptForever("jit", { status: 503 });
    await assert.rejects(client({ maxAttempts: 4 }).generateJitConfig({ name: "strata-gpu-4-aaaaaa", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" }), (e: unknown) => {
      assert.ok(e instanceof GitHubApiError);
      assert.equal(e.status, 503);
      assert.equal(e.attempts, 4);
      return true;
    });
    assert.equal(server.count("jit"), 4);
    assert.equal(delays.length, 3);
  });

  it("gives up at once when the rate limit resets later than the time budget", async () => {
    const reset = Math.floor(Date.now() / 1000) + 3600;
    server.script("list", { status: 403, headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) } });
    await assert.rejects(client().listRunners(), (e: unknown) => e instanceof GitHubApiError && e.attempts === 1);
    assert.deepEqual(delays, []);
  });

  it("does not retry other 4xx (403 without rate-limit headers, 404, 422)", async () => {
    server.script("jit", { status: 403, body: { message: "Resource not accessible by integration" } });
    await assert.rejects(client().generateJitConfig({ name: "x", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" }), (e: unknown) => e instanceof GitHubApiError && e.status === 403 && e.attempts === 1);
    server.script("jit", { status: 422 });
    await assert.rejects(client().generateJitConfig({ name: "x", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" }), (e: unknown) => e instanceof GitHubApiError && e.status === 422);
    assert.deepEqual(delays, []);
  });

  it("retries when the access-token endpoint itself is rate limited", async () => {
    server.script("access_tokens", { status: 429, headers: { "retry-after": "1" } });
    await client().listRunners();
    assert.deepEqual(delays, [1000]);
    assert.equal(server.count("access_tokens"), 2);
  });

  it("lists runners across pages, filters by name, deletes a runner and treats 404 on delete as done", async () => {
    for (let i = 0; i < 230; i++) server.addRunner(`other-${i}`, "online");
    const id = server.addRunner("strata-gpu-9-abcdef", "offline");
    const gh = client();
    const all = await gh.listRunners();
    assert.ok(all.length >= 231);
    assert.equal(server.requests.filter((r) => r.route === "list").length, 3);
    const named = await gh.listRunners("strata-gpu-9-abcdef");
    assert.deepEqual(named, [{ id, name: "strata-gpu-9-abcdef", status: "offline", busy: false }]);
    await gh.deleteRunner(id);
    assert.equal(server.runners.has(id), false);
    await gh.deleteRunner(id); // 404: already gone
    for (const [rid, r] of server.runners) if (r.name.startsWith("other-")) server.runners.delete(rid);
  });

  it("a response of the wrong shape is an error, not a crash", async () => {
    server.script("jit", { status: 201, body: { runner: { id: "nope" } } });
    await assert.rejects(client().generateJitConfig({ name: "y", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" }), GitHubApiError);
  });

  it("network failure (server gone) is retried and then reported", async () => {
    const dead = createGitHubClient({ apiUrl: "http://127.0.0.1:9", owner: "acme", app: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: key.privateKeyPem }, retry: fastRetry(delays, { maxAttempts: 2 }) });
    await assert.rejects(dead.listRunners(), (e: unknown) => e instanceof GitHubApiError && e.attempts === 2);
  });
});

describe("GitHub client, repository scope", () => {
  const server = new FakeGitHubServer({ appId: APP_ID, installationId: INSTALLATION_ID, publicKey: key.publicKey, scope: "repos/acme/app" });
  before(async () => void (await server.start()));
  after(async () => server.close());

  it("uses /repos/{owner}/{repo}/actions/runners/generate-jitconfig when STRATA_RUNNER_REPO is set", async () => {
    const gh = createGitHubClient({ apiUrl: server.url, owner: "acme", repo: "app", app: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: key.privateKeyPem } });
    const jit = await gh.generateJitConfig({ name: "strata-gpu-5-aaaaaa", runnerGroupId: 1, labels: ["self-hosted"], workFolder: "_work" });
    assert.ok(server.requests.some((r) => r.path === "/repos/acme/app/actions/runners/generate-jitconfig" && r.status === 201));
    await gh.deleteRunner(jit.runnerId);
    assert.ok(server.requests.some((r) => r.path === `/repos/acme/app/actions/runners/${jit.runnerId}` && r.status === 204));
  });
});

describe("GitHub client: jobs, re-runs and narrowed tokens", () => {
  const server = new FakeGitHubServer({ appId: APP_ID, installationId: INSTALLATION_ID, publicKey: key.publicKey, scope: "orgs/acme" });
  before(async () => void (await server.start()));
  after(async () => server.close());
  const gh = () => createGitHubClient({ apiUrl: server.url, owner: "acme", app: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: key.privateKeyPem }, retry: fastRetry([]) });

  it("reads a job's status with an actions:read token for that repository only", async () => {
    server.addJob("acme/models", { id: 42, labels: ["self-hosted", "gpu"], run_id: 9, name: "base", created_at: "2026-01-01T00:00:00Z" });
    const job = await gh().getJob("acme/models", 42);
    assert.deepEqual({ ...job }, { id: 42, status: "queued", conclusion: null, labels: ["self-hosted", "gpu"], runnerName: null, runId: 9, runAttempt: 1, name: "base", createdAt: Date.parse("2026-01-01T00:00:00Z") });
    assert.deepEqual(server.tokenRequests.at(-1), { permissions: { actions: "read" }, repositories: ["models"] });
    await assert.rejects(gh().getJob("acme/other", 42), (e: unknown) => e instanceof GitHubApiError && e.status === 404);
    await assert.rejects(gh().getJob("evil/models", 42), /not one of acme's/);
  });

  it("re-runs a completed job with actions:write (a new attempt, new job id) and lists queued jobs of the latest attempts", async () => {
    server.addJob("acme/models", { id: 43, labels: ["self-hosted"], run_id: 10, name: "build", status: "completed", conclusion: "failure" });
    await gh().rerunJob("acme/models", 43);
    assert.deepEqual(server.tokenRequests.at(-1), { permissions: { actions: "write" }, repositories: ["models"] });
    assert.deepEqual(server.reruns, [43]);
    const queued = await gh().listQueuedJobs("acme/models");
    const rerun = queued.find((j) => j.runId === 10)!;
    assert.equal(rerun.runAttempt, 2);
    assert.notEqual(rerun.id, 43);
    assert.ok(queued.some((j) => j.id === 42));
    await assert.rejects(gh().rerunJob("acme/models", 42), (e: unknown) => e instanceof GitHubApiError && e.status === 403, "a queued job cannot be re-run");
  });
});

describe("retryDelay", () => {
  const p = { baseDelayMs: 100, maxDelayMs: 1000, random: () => 1, now: () => 1_000_000 };
  it("classifies errors", () => {
    assert.equal(retryDelay({ status: 500 }, 1, p), 100);
    assert.equal(retryDelay({ status: 502 }, 5, p), 1000);
    assert.equal(retryDelay({ status: 404 }, 1, p), undefined);
    assert.equal(retryDelay({ status: 403 }, 1, p), undefined);
    assert.equal(retryDelay({ status: 403, response: { headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1005" } } }, 1, p), 5000);
    assert.equal(retryDelay({ status: 429, response: { headers: { "retry-after": "3" } } }, 1, p), 3000);
    assert.equal(retryDelay({ status: 429 }, 2, p), 200);
    assert.equal(retryDelay({ name: "TimeoutError" }, 1, p), 100);
    assert.equal(retryDelay(new TypeError("boom"), 1, p), undefined);
    assert.equal(retryDelay(undefined, 1, p), undefined);
  });
});
