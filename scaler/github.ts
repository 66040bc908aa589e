/**
 * GitHubPort over the REST API, authenticated as the GitHub App installation
 * (@octokit/auth-app), with bounded exponential backoff on 5xx and rate limits.
 */
import { createAppAuth } from "@octokit/auth-app";
import { request as baseRequest } from "@octokit/request";
import type { AppSecret } from "./config.ts";
import type { GitHubJob, GitHubPort, GitHubRunner, JitRequest, JitRunner, Logger } from "./ports.ts";
import { errorMessage, silentLogger } from "./ports.ts";

export interface RetryPolicy {
  /** Total attempts including the first. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /**
   * Wall-clock budget for one logical call including waits. GitHub gives a webhook
   * 10 s to answer, so the webhook default stays well below that.
   */
  budgetMs: number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  now: () => number;
}

export const defaultRetryPolicy: RetryPolicy = {
  maxAttempts: 4,
  baseDelayMs: 300,
  maxDelayMs: 3_000,
  budgetMs: 6_000,
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  random: Math.random,
  now: Date.now,
};

/** An error after which retrying is pointless or retries were used up. */
export class GitHubApiError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly attempts: number,
  ) {
    super(message);
    this.name = "GitHubApiError";
  }
}

interface HttpishError {
  status?: number;
  name?: string;
  response?: { headers?: Record<string, string | number | undefined> };
}

function header(err: HttpishError, name: string): string | undefined {
  const v = err.response?.headers?.[name];
  return v === undefined ? undefined : String(v);
}

/**
 * How long to wait before retrying after `err`, or undefined if it is not retryable.
 * Retryable: 5xx (and network errors, which @octokit/request reports as 500),
 * timeouts, 429, and 403 that is a rate limit (retry-after, or x-ratelimit-remaining: 0).
 */
export function retryDelay(err: unknown, attempt: number, policy: Pick<RetryPolicy, "baseDelayMs" | "maxDelayMs" | "random" | "now">): number | undefined {
  const e = (err ?? {}) as HttpishError;
  const backoff = () => {
    const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
    return Math.round(exp / 2 + (policy.random() * exp) / 2); // "equal jitter"
  };
  if (e.status === undefined) return e.name === "TimeoutError" || e.name === "AbortError" ? backoff() : undefined;
  if (e.status >= 500) return backoff();
  if (e.status === 429 || e.status === 403) {
    const retryAfter = header(e, "retry-after");
    if (retryAfter !== undefined) {
      const s = Number(retryAfter);
      if (Number.isFinite(s) && s >= 0) return Math.max(s * 1000, policy.baseDelayMs);
      const at = Date.parse(retryAfter);
      if (!Number.isNaN(at)) return Math.max(at - policy.now(), policy.baseDelayMs);
    }
    if (header(e, "x-ratelimit-remaining") === "0") {
      const reset = Number(header(e, "x-ratelimit-reset"));
      if (Number.isFinite(reset) && reset > 0) return Math.max(reset * 1000 - policy.now(), policy.baseDelayMs);
      return backoff();
    }
    if (e.status === 429) return backoff();
  }
  return undefined;
}

export async function withRetry<T>(what: string, fn: () => Promise<T>, policy: RetryPolicy, log: Logger): Promise<T> {
  const start = policy.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const status = (err as HttpishError)?.status;
      const delay = retryDelay(err, attempt, policy);
      const spent = policy.now() - start;
      if (delay === undefined) throw new GitHubApiError(`${what}: ${errorMessage(err)}`, status, attempt);
      if (attempt >= policy.maxAttempts || spent + delay > policy.budgetMs) {
        throw new GitHubApiError(`${what}: giving up after ${attempt} attempt(s): ${errorMessage(err)}`, status, attempt);
      }
      log.warn("github call failed, retrying", { what, status, attempt, delayMs: delay });
      await policy.sleep(delay);
    }
  }
}

export interface GitHubClientOptions {
  apiUrl: string;
  owner: string;
  repo?: string;
  app: AppSecret;
  retry?: Partial<RetryPolicy>;
  /** Per-HTTP-request timeout. */
  timeoutMs?: number;
  log?: Logger;
}

type RunnerJson = { id: number; name: string; status: string; busy: boolean };

export function createGitHubClient(opts: GitHubClientOptions): GitHubPort {
  const policy: RetryPolicy = { ...defaultRetryPolicy, ...opts.retry };
  const log = opts.log ?? silentLogger;
  const timeoutMs = opts.timeoutMs ?? 4_000;
  const fetchWithTimeout: typeof fetch = (input, init) => fetch(input, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const plain = baseRequest.defaults({
    baseUrl: opts.apiUrl,
    headers: { "x-github-api-version": "2022-11-28", "user-agent": "strata-scaler" },
    request: { fetch: fetchWithTimeout },
  });
  // One auth instance per client: it caches the installation token (valid ~1 h) across warm invocations.
  const auth = createAppAuth({
    appId: opts.app.appId,
    privateKey: opts.app.privateKey,
    installationId: opts.app.installationId,
    request: plain,
    log: { warn: (m: string) => log.warn(m), info: () => {}, debug: () => {}, error: (m: string) => log.error(m) },
  });
  // Every call gets an installation token narrowed to the permissions and repositories it needs
  // (auth-app caches one per permission set for its hour).
  type Scope = { permissions: Record<string, "read" | "write">; repositoryNames?: string[] };
  const scoped = (scope: Scope) => async (route: string, params: Record<string, unknown>) => {
    const { token } = (await auth({ type: "installation", ...scope })) as { token: string };
    return plain(route, { ...params, headers: { authorization: `token ${token}` } });
  };
  const req = scoped(opts.repo ? { permissions: { administration: "write" }, repositoryNames: [opts.repo] } : { permissions: { organization_self_hosted_runners: "write" } });
  const base = opts.repo
    ? { prefix: "/repos/{owner}/{repo}/actions/runners", params: { owner: opts.owner, repo: opts.repo } }
    : { prefix: "/orgs/{org}/actions/runners", params: { org: opts.owner } };
  const split = (repository: string) => {
    const [owner, repo] = repository.split("/");
    if (!owner || !repo || owner.toLowerCase() !== opts.owner.toLowerCase()) throw new GitHubApiError(`repository ${repository} is not one of ${opts.owner}'s`, undefined, 0);
    return { owner, repo };
  };
  const actions = (repository: string, access: "read" | "write") => scoped({ permissions: { actions: access }, repositoryNames: [split(repository).repo] });

  return {
    async generateJitConfig(r: JitRequest): Promise<JitRunner> {
      const res = await withRetry(
        "generate-jitconfig",
        () =>
          req(`POST ${base.prefix}/generate-jitconfig`, {
            ...base.params,
            name: r.name,
            runner_group_id: r.runnerGroupId,
            labels: r.labels,
            work_folder: r.workFolder,
          }),
        policy,
        log,
      );
      const data = res.data as { runner?: { id?: unknown }; encoded_jit_config?: unknown };
      if (typeof data?.runner?.id !== "number" || typeof data.encoded_jit_config !== "string" || data.encoded_jit_config === "") {
        throw new GitHubApiError("generate-jitconfig: unexpected response shape", res.status, 1);
      }
      return { runnerId: data.runner.id, encodedJitConfig: data.encoded_jit_config };
    },

    async listRunners(name?: string): Promise<GitHubRunner[]> {
      const out: GitHubRunner[] = [];
      for (let page = 1; page <= 100; page++) {
        const res = await withRetry(
          "list runners",
          () => req(`GET ${base.prefix}`, { ...base.params, per_page: 100, page, ...(name ? { name } : {}) }),
          policy,
          log,
        );
        const data = res.data as { total_count?: number; runners?: RunnerJson[] };
        const runners = Array.isArray(data?.runners) ? data.runners : [];
        for (const r of runners) {
          if (typeof r?.id === "number" && typeof r.name === "string") out.push({ id: r.id, name: r.name, status: String(r.status), busy: r.busy === true });
        }
        if (runners.length < 100 || (typeof data.total_count === "number" && out.length >= data.total_count)) break;
      }
      return out;
    },

    async getJob(repository: string, jobId: number): Promise<GitHubJob> {
      const res = await withRetry("get job", () => actions(repository, "read")("GET /repos/{owner}/{repo}/actions/jobs/{job_id}", { ...split(repository), job_id: jobId }), policy, log);
      const job = toJob(res.data);
      if (!job) throw new GitHubApiError("get job: unexpected response shape", res.status, 1);
      return job;
    },

    async rerunJob(repository: string, jobId: number): Promise<void> {
      await withRetry("re-run job", () => actions(repository, "write")("POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun", { ...split(repository), job_id: jobId }), policy, log);
    },

    async listQueuedJobs(repository: string): Promise<GitHubJob[]> {
      const call = actions(repository, "read");
      const out: GitHubJob[] = [];
      for (let page = 1; page <= 10; page++) {
        const res = await withRetry("list queued runs", () => call("GET /repos/{owner}/{repo}/actions/runs", { ...split(repository), status: "queued", per_page: 100, page }), policy, log);
        const runs = ((res.data as { workflow_runs?: { id?: unknown }[] })?.workflow_runs ?? []).filter((r) => typeof r?.id === "number");
        for (const run of runs) {
          for (let jp = 1; jp <= 10; jp++) {
            const jr = await withRetry("list run jobs", () => call("GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs", { ...split(repository), run_id: run.id, filter: "latest", per_page: 100, page: jp }), policy, log);
            const jobs = (jr.data as { jobs?: unknown[] })?.jobs ?? [];
            for (const j of jobs) {
              const job = toJob(j);
              if (job?.status === "queued") out.push(job);
            }
            if (jobs.length < 100) break;
          }
        }
        if (runs.length < 100) break;
      }
      return out;
    },

    async deleteRunner(id: number): Promise<void> {
      try {
        await withRetry("delete runner", () => req(`DELETE ${base.prefix}/{runner_id}`, { ...base.params, runner_id: id }), policy, log);
      } catch (err) {
        if (err instanceof GitHubApiError && err.status === 404) return; // already gone: fine
        throw err;
      }
    },
  };
}

/** A workflow job as the REST API returns it, or undefined if the shape is not one. */
export function toJob(data: unknown): GitHubJob | undefined {
  const j = data as { id?: unknown; status?: unknown; conclusion?: unknown; labels?: unknown; runner_name?: unknown; run_id?: unknown; run_attempt?: unknown; name?: unknown; created_at?: unknown };
  if (typeof j?.id !== "number" || typeof j.status !== "string") return undefined;
  const created = typeof j.created_at === "string" ? Date.parse(j.created_at) : NaN;
  return {
    id: j.id,
    status: j.status,
    conclusion: typeof j.conclusion === "string" ? j.conclusion : null,
    labels: Array.isArray(j.labels) ? j.labels.filter((l): l is string => typeof l === "string") : [],
    runnerName: typeof j.runner_name === "string" ? j.runner_name : null,
    runId: typeof j.run_id === "number" ? j.run_id : 0,
    runAttempt: typeof j.run_attempt === "number" ? j.run_attempt : 1,
    name: typeof j.name === "string" ? j.name : "",
    createdAt: Number.isFinite(created) ? created : 0,
  };
}
