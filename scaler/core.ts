/**
 * The scaler's behaviour over the ports: webhook handling (scale up, cancelled-job
 * cleanup) and housekeeping. No AWS or HTTP client is created here.
 */
import { verify } from "@octokit/webhooks-methods";
import { z } from "zod";
import type { Pool, ScalerConfig } from "./config.ts";
import {
  excessInstances,
  isCapacityError,
  matchPool,
  placements,
  planHousekeeping,
  runnerLabels,
  runnerName,
  TAGS,
  type HousekeepingPlan,
} from "./logic.ts";
import { ACTIVE_STATES, errorMessage, LaunchError, type Ec2Port, type GitHubPort, type GitHubRunner, type InstanceState, type Logger, type ParamPort, type RunnerInstance } from "./ports.ts";

const ALL_STATES: readonly InstanceState[] = [...ACTIVE_STATES, "shutting-down", "terminated"];

/** Lambda function URL event, payload format 2.0 (only the fields used). */
export interface FunctionUrlEvent {
  headers?: Record<string, string | undefined> | null;
  body?: string | null;
  isBase64Encoded?: boolean;
  requestContext?: unknown;
}

export interface HttpResult {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

export interface WebhookDeps {
  config: ScalerConfig;
  ec2: Ec2Port;
  params: ParamPort;
  /** Resolves the GitHub client (fetches the App secret on first use). */
  github: () => Promise<GitHubPort>;
  webhookSecret: () => Promise<string>;
  log: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Random suffix for runner names. */
  suffix?: () => string;
  /** How often / how long to wait for our own instance to show up in DescribeInstances. */
  visibilityAttempts?: number;
  visibilityDelayMs?: number;
  /**
   * Excess instances launched by *other* deliveries are only terminated while younger
   * than this: such an instance is still booting and cannot be running a job. Older
   * over-cap instances (e.g. after maxRunners was lowered) are left to drain.
   */
  youngMs?: number;
}

const jobEventSchema = z.object({
  action: z.string(),
  workflow_job: z.object({
    id: z.number().int().nonnegative(),
    labels: z.array(z.string()),
    runner_name: z.string().nullish(),
  }),
  repository: z
    .object({
      name: z.string(),
      owner: z.object({ login: z.string() }),
    })
    .optional(),
});
type JobEvent = z.infer<typeof jobEventSchema>;

function reply(statusCode: number, body: Record<string, unknown>): HttpResult {
  return { statusCode, headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
}
const noop = (reason: string, extra: Record<string, unknown> = {}) => reply(200, { result: "noop", reason, ...extra });

function lowerHeaders(h: FunctionUrlEvent["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  if (h && typeof h === "object") for (const [k, v] of Object.entries(h)) if (typeof v === "string") out[k.toLowerCase()] = v;
  return out;
}

function randomSuffix(): string {
  return Math.floor(Math.random() * 0xffffff)
    .toString(16)
    .padStart(6, "0");
}

export function createWebhookHandler(deps: WebhookDeps): (event: FunctionUrlEvent) => Promise<HttpResult> {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const suffix = deps.suffix ?? randomSuffix;
  const visibilityAttempts = deps.visibilityAttempts ?? 6;
  const visibilityDelayMs = deps.visibilityDelayMs ?? 250;
  const youngMs = deps.youngMs ?? 30_000;
  const { config, ec2, params, log } = deps;

  return async function handle(event: FunctionUrlEvent): Promise<HttpResult> {
    const headers = lowerHeaders(event?.headers);
    const delivery = headers["x-github-delivery"] ?? "";
    const eventType = headers["x-github-event"] ?? "";
    try {
      // 1. authenticity before anything else
      const signature = headers["x-hub-signature-256"];
      if (!signature) return reply(401, { error: "missing signature" });
      const raw = typeof event.body === "string" ? event.body : "";
      const body = event.isBase64Encoded ? Buffer.from(raw, "base64").toString("utf8") : raw;
      const secret = await deps.webhookSecret();
      let ok = false;
      try {
        ok = body.length > 0 && (await verify(secret, body, signature));
      } catch {
        ok = false;
      }
      if (!ok) {
        log.warn("webhook signature rejected", { delivery });
        return reply(401, { error: "bad signature" });
      }
      // 2. shape
      let payload: unknown;
      try {
        payload = JSON.parse(body);
      } catch {
        return reply(400, { error: "body is not JSON" });
      }
      if (eventType === "ping") return reply(200, { result: "pong" });
      if (eventType !== "workflow_job") return noop("ignored event", { event: eventType });
      const parsed = jobEventSchema.safeParse(payload);
      if (!parsed.success) return reply(400, { error: "not a workflow_job payload" });
      if (!/^[A-Za-z0-9-]{1,100}$/.test(delivery)) return reply(400, { error: "missing or malformed X-GitHub-Delivery" });
      const ev = parsed.data;
      if (!repositoryMatches(ev)) return noop("repository not served by this fleet");
      switch (ev.action) {
        case "queued":
          return await onQueued(ev, delivery);
        case "completed":
          return await onCompleted(ev, delivery);
        default:
          return noop(`action ${ev.action}`);
      }
    } catch (err) {
      log.error("webhook failed", { delivery, event: eventType, error: errorMessage(err) });
      return reply(500, { error: "internal error" });
    }
  };

  function repositoryMatches(ev: JobEvent): boolean {
    if (!ev.repository) return true;
    if (ev.repository.owner.login.toLowerCase() !== config.owner.toLowerCase()) return false;
    return config.repo === undefined || ev.repository.name.toLowerCase() === config.repo.toLowerCase();
  }

  async function onQueued(ev: JobEvent, delivery: string): Promise<HttpResult> {
    const job = ev.workflow_job;
    const jobId = String(job.id);
    const pool = matchPool(config.pools, job.labels);
    if (!pool) return noop("no pool matches the job labels", { labels: job.labels });
    const ctx = { delivery, jobId, pool: pool.name };

    // Replay / duplicate: EC2 tags are the only state shared by all Lambda instances.
    // Released instances (launch rolled back) have these tags removed, so a redelivery
    // after a failure is served again.
    const [byDelivery, byJob] = await Promise.all([ec2.list({ delivery, states: ALL_STATES }), ec2.list({ jobId, states: ALL_STATES })]);
    if (byDelivery.length > 0) return noop("replayed delivery", { instanceId: byDelivery[0]!.id });
    if (byJob.length > 0) return noop("job already has an instance", { instanceId: byJob[0]!.id });

    const before = await ec2.list({ pool: pool.name });
    if (before.length >= pool.maxRunners) {
      log.info("pool at capacity", { ...ctx, active: before.length, maxRunners: pool.maxRunners });
      return noop("pool at capacity", { active: before.length, maxRunners: pool.maxRunners });
    }

    // Resolve the GitHub client before launching: a broken App secret must not cost instances.
    const github = await deps.github();

    const name = runnerName(pool.name, jobId, suffix());
    const tags = { [config.tagKey]: pool.name, [TAGS.jobId]: jobId, [TAGS.delivery]: delivery, [TAGS.runnerName]: name };
    let instanceId: string | undefined;
    let placed: { instanceType: string; subnetId: string; spot: boolean } | undefined;
    const tried: string[] = [];
    for (const p of placements(pool, job.id)) {
      try {
        instanceId = await ec2.launch({ launchTemplateId: pool.launchTemplateId, instanceType: p.instanceType, subnetId: p.subnetId, spot: p.spot, tags });
        placed = p;
        break;
      } catch (err) {
        if (err instanceof LaunchError && isCapacityError(err.code)) {
          tried.push(`${p.spot ? "spot" : "on-demand"}/${p.instanceType}/${p.subnetId}: ${err.code}`);
          continue;
        }
        throw err; // configuration / permission problem: 500, nothing was created
      }
    }
    if (!instanceId || !placed) {
      log.error("no capacity in any placement", { ...ctx, tried });
      return reply(503, { error: "no capacity", tried: tried.length });
    }
    const launchedAt = now();
    log.info("instance launched", { ...ctx, instanceId, ...placed });

    // Launch-then-recount keeps the pool at or below maxRunners under concurrent deliveries.
    const view = await recount(pool, instanceId, { id: instanceId, state: "pending", launchTime: launchedAt, pool: pool.name, jobId, delivery, runnerName: name });
    if (view === "released") {
      log.info("own instance was released by a concurrent delivery's recount", { ...ctx, instanceId });
      return noop("pool at capacity", { maxRunners: pool.maxRunners });
    }
    const excess = excessInstances(view, pool.maxRunners);
    const others = excess.filter((i) => i.id !== instanceId && now() - i.launchTime < youngMs);
    if (others.length > 0) await releaseOthers(others, ctx);
    const mine = excess.find((i) => i.id === instanceId);
    if (mine) {
      await releaseQuietly([instanceId], ctx);
      const dup = view.some((i) => i.id !== instanceId && i.jobId === jobId);
      log.info("lost the recount, released own instance", { ...ctx, instanceId, reason: dup ? "duplicate" : "capacity" });
      return dup ? noop("job already has an instance") : noop("pool at capacity", { maxRunners: pool.maxRunners });
    }

    // Only now register a runner: every strata runner has (or had) an instance.
    let runnerId: number;
    let jit: string;
    try {
      const r = await github.generateJitConfig({ name, runnerGroupId: config.runnerGroupId, labels: runnerLabels(pool), workFolder: "_work" });
      runnerId = r.runnerId;
      jit = r.encodedJitConfig;
    } catch (err) {
      log.error("JIT config failed, releasing instance", { ...ctx, instanceId, error: errorMessage(err) });
      await releaseQuietly([instanceId], ctx);
      return reply(500, { error: "GitHub API failed" });
    }
    try {
      await params.put(`${config.paramPrefix}${instanceId}`, jit);
    } catch (err) {
      log.error("writing JIT parameter failed, releasing instance and runner", { ...ctx, instanceId, error: errorMessage(err) });
      await releaseQuietly([instanceId], ctx);
      await github.deleteRunner(runnerId).catch((e: unknown) => log.error("deleting runner failed", { ...ctx, runnerId, error: errorMessage(e) }));
      return reply(500, { error: "parameter store failed" });
    }
    // A concurrent recount may have released our instance after our own recount. It deletes
    // the parameter after terminating; checking after our write closes the gap either way.
    const after = await ec2.list({ pool: pool.name, states: ALL_STATES }).catch(() => undefined);
    const meNow = after?.find((i) => i.id === instanceId);
    if (meNow && !(ACTIVE_STATES as readonly string[]).includes(meNow.state)) {
      log.info("own instance was released by a concurrent delivery after provisioning; cleaning up", { ...ctx, instanceId });
      await params.delete(`${config.paramPrefix}${instanceId}`).catch(() => false);
      await github.deleteRunner(runnerId).catch((e: unknown) => log.warn("deleting runner failed; housekeeping will", { ...ctx, runnerId, error: errorMessage(e) }));
      return noop("pool at capacity", { maxRunners: pool.maxRunners });
    }
    log.info("runner provisioned", { ...ctx, instanceId, runnerId, runnerName: name });
    return reply(201, { result: "launched", pool: pool.name, instanceId, runnerName: name, ...placed });
  }

  /**
   * The pool's active instances as seen after our launch, or "released" if another
   * delivery's recount already removed ours. Waits (bounded) for our own instance to
   * become visible, since DescribeInstances is eventually consistent.
   */
  async function recount(pool: Pool, instanceId: string, self: RunnerInstance): Promise<RunnerInstance[] | "released"> {
    let view: RunnerInstance[] = [];
    for (let attempt = 1; attempt <= visibilityAttempts; attempt++) {
      const all = await ec2.list({ pool: pool.name, states: ALL_STATES });
      view = all.filter((i) => (ACTIVE_STATES as readonly string[]).includes(i.state));
      const me = all.find((i) => i.id === instanceId);
      if (me) return view.includes(me) ? view : "released";
      if (attempt < visibilityAttempts) await sleep(visibilityDelayMs);
    }
    log.warn("own instance not yet visible in DescribeInstances, counting it anyway", { instanceId, pool: pool.name });
    return [...view, self];
  }

  async function releaseOthers(others: RunnerInstance[], ctx: Record<string, string>): Promise<void> {
    log.info("releasing excess instances of concurrent deliveries", { ...ctx, instanceIds: others.map((o) => o.id) });
    await releaseQuietly(
      others.map((o) => o.id),
      ctx,
    );
    await Promise.all(others.map((o) => params.delete(`${config.paramPrefix}${o.id}`).catch(() => false)));
  }

  async function releaseQuietly(ids: string[], ctx: Record<string, string>): Promise<void> {
    try {
      await ec2.release(ids);
    } catch (err) {
      // Housekeeping terminates instances whose runner never registers.
      log.error("releasing instances failed", { ...ctx, instanceIds: ids, error: errorMessage(err) });
    }
  }

  async function onCompleted(ev: JobEvent, delivery: string): Promise<HttpResult> {
    const job = ev.workflow_job;
    const jobId = String(job.id);
    const instances = await ec2.list({ jobId });
    if (instances.length === 0) return noop("no instance for this job");
    const cleaned: string[] = [];
    for (const inst of instances) {
      if (job.runner_name && inst.runnerName === job.runner_name) continue; // it ran the job and shuts itself down
      // Deleting the parameter is the claim: if it is gone, the instance booted and its
      // runner may be serving another queued job with the same labels; leave it alone.
      const claimed = await params.delete(`${config.paramPrefix}${inst.id}`);
      if (!claimed) continue;
      await ec2.terminate([inst.id]);
      cleaned.push(inst.id);
      if (inst.runnerName) {
        try {
          const github = await deps.github();
          const runners: GitHubRunner[] = await github.listRunners(inst.runnerName);
          for (const r of runners) if (r.name === inst.runnerName && !r.busy) await github.deleteRunner(r.id);
        } catch (err) {
          log.warn("could not delete runner of cancelled job; housekeeping will", { delivery, jobId, runnerName: inst.runnerName, error: errorMessage(err) });
        }
      }
    }
    if (cleaned.length === 0) return noop("job's instance already booted");
    log.info("terminated instance of a job that finished before its runner started", { delivery, jobId, instanceIds: cleaned });
    return reply(200, { result: "cleaned", instanceIds: cleaned });
  }
}

// ---------------------------------------------------------------- housekeeping

export interface HousekeepingDeps {
  config: ScalerConfig;
  ec2: Ec2Port;
  params: ParamPort;
  github: () => Promise<GitHubPort>;
  log: Logger;
  now?: () => number;
}

export interface HousekeepingReport {
  terminated: HousekeepingPlan["terminate"];
  deletedParams: string[];
  deletedRunners: string[];
  overCap: HousekeepingPlan["overCap"];
  errors: string[];
}

export async function runHousekeeping(deps: HousekeepingDeps): Promise<HousekeepingReport> {
  const { config, ec2, params, log } = deps;
  const now = (deps.now ?? Date.now)();
  const errors: string[] = [];
  const report: HousekeepingReport = { terminated: [], deletedParams: [], deletedRunners: [], overCap: [], errors };
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      errors.push(`${what}: ${errorMessage(err)}`);
      log.error("housekeeping step failed", { what, error: errorMessage(err) });
      return undefined;
    }
  };

  const instances = await attempt("list instances", () => ec2.list({}));
  if (instances === undefined) return report; // without the instance list every decision would be a guess
  const paramList = (await attempt("list parameters", () => params.list(config.paramPrefix))) ?? [];
  const runners = await attempt("list runners", async () => (await deps.github()).listRunners());

  const plan = planHousekeeping({
    now,
    pools: config.pools,
    instances,
    params: paramList,
    paramPrefix: config.paramPrefix,
    runners,
    registrationTimeoutMinutes: config.registrationTimeoutMinutes,
  });
  report.overCap = plan.overCap;
  for (const o of plan.overCap) log.warn("pool over its cap; no new launches until it drains", o);

  if (plan.terminate.length > 0) {
    const ok = await attempt("terminate", async () => {
      await ec2.terminate(plan.terminate.map((t) => t.id));
      return true;
    });
    if (ok) {
      report.terminated = plan.terminate;
      for (const t of plan.terminate) log.info("terminated instance", t);
    }
  }
  for (const name of plan.deleteParams) {
    const ok = await attempt(`delete parameter ${name}`, () => params.delete(name));
    if (ok !== undefined) report.deletedParams.push(name);
  }
  if (plan.deleteRunners.length > 0) {
    const github = await attempt("github client", () => deps.github());
    if (github) {
      for (const r of plan.deleteRunners) {
        const ok = await attempt(`delete runner ${r.name}`, async () => {
          await github.deleteRunner(r.id);
          return true;
        });
        if (ok) report.deletedRunners.push(r.name);
      }
    }
  }
  log.info("housekeeping done", { ...report, terminated: report.terminated.length });
  return report;
}
