/**
 * The scaler's behaviour over the ports, one function per trigger:
 *   createWebhookHandler  GitHub `workflow_job` → verify, filter, enqueue (and clean up / re-run on `completed`)
 *   runScaleUp            the only launcher, serialised (reserved concurrency 1): serves each pool's queue up to its cap
 *   handleInterruption    EC2 spot interruption warning → record it, remove the idle runner
 *   runHousekeeping       schedule → reap, reconcile missed webhooks, retry pending re-runs, prune state
 * No AWS or HTTP client is created here.
 */
import { verify } from "@octokit/webhooks-methods";
import { z } from "zod";
import type { Pool, ScalerConfig } from "./config.ts";
import {
  backoffSeconds,
  isCapacityError,
  jobsToReconcile,
  matchPool,
  MAX_QUEUED_MS,
  onDemandId,
  placements,
  planHousekeeping,
  pruneFailures,
  runnerLabels,
  runnerName,
  serveDecision,
  spotAllowed,
  stateKey,
  TAGS,
  type HousekeepingPlan,
  type JobLedgerEntry,
} from "./logic.ts";
import {
  ACTIVE_STATES,
  errorMessage,
  LaunchError,
  type Ec2Port,
  type GitHubJob,
  type GitHubPort,
  type GitHubRunner,
  type InstanceState,
  type Logger,
  type ParamPort,
  type QueuedJob,
  type QueueMessage,
  type QueuePort,
  type StatePort,
  type WakePort,
} from "./ports.ts";

const ALL_STATES: readonly InstanceState[] = [...ACTIVE_STATES, "shutting-down", "terminated"];
const MINUTE = 60_000;
/** State documents (ledger, interruptions, re-runs) older than this are pruned by housekeeping. */
export const STATE_RETENTION_MS = 25 * 60 * MINUTE;

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

/** What every handler works with. */
export interface ScalerDeps {
  config: ScalerConfig;
  ec2: Ec2Port;
  params: ParamPort;
  state: StatePort;
  queue: QueuePort;
  /** Resolves the GitHub client (fetches the App secret on first use). */
  github: () => Promise<GitHubPort>;
  log: Logger;
  now?: () => number;
}

export interface WebhookDeps extends ScalerDeps {
  webhookSecret: () => Promise<string>;
  /** Wakes the scale-up consumer after an enqueue; best effort (the schedule wakes it anyway). */
  wake?: WakePort;
}

const jobEventSchema = z.object({
  action: z.string(),
  workflow_job: z.object({
    id: z.number().int().positive(),
    run_id: z.number().int().nonnegative().default(0),
    run_attempt: z.number().int().positive().default(1),
    name: z.string().default(""),
    labels: z.array(z.string()),
    runner_name: z.string().nullish(),
    conclusion: z.string().nullish(),
    created_at: z.string().nullish(),
  }),
  repository: z.object({
    name: z.string(),
    full_name: z.string().optional(),
    owner: z.object({ login: z.string() }),
  }),
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

function parseJson<T>(text: string | undefined): T | undefined {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

/** Interruption record `interrupted/<runner name>`, written by handleInterruption. */
export interface InterruptionRecord {
  instanceId: string;
  pool: string;
  at: number;
}

/** Re-run claim `rerun/<job id>`: "pending" until GitHub accepted the re-run. */
export interface RerunRecord {
  state: "pending" | "done";
  repository: string;
  jobId: number;
  runId: number;
  name: string;
  at: number;
}

// ---------------------------------------------------------------- webhook

export function createWebhookHandler(deps: WebhookDeps): (event: FunctionUrlEvent) => Promise<HttpResult> {
  const now = deps.now ?? Date.now;
  const { config, ec2, params, state, queue, log } = deps;
  const served = new Set(config.repositories.map((r) => r.toLowerCase()));

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
      if (typeof payload === "object" && payload !== null && !("repository" in payload)) {
        log.warn("workflow_job delivery without a repository refused", { delivery });
        return reply(400, { error: "payload has no repository: the fleet serves only its configured repositories" });
      }
      const parsed = jobEventSchema.safeParse(payload);
      if (!parsed.success) return reply(400, { error: "not a workflow_job payload" });
      if (!/^[A-Za-z0-9-]{1,100}$/.test(delivery)) return reply(400, { error: "missing or malformed X-GitHub-Delivery" });
      const ev = parsed.data;
      const repository = `${ev.repository.owner.login}/${ev.repository.name}`.toLowerCase();
      if (!served.has(repository) || (ev.repository.full_name !== undefined && ev.repository.full_name.toLowerCase() !== repository)) {
        log.info("delivery for a repository the fleet does not serve", { delivery, repository });
        return noop("repository not served by this fleet", { repository });
      }
      switch (ev.action) {
        case "queued":
          return await onQueued(ev, repository, delivery);
        case "completed":
          return await onCompleted(ev, repository, delivery);
        default:
          return noop(`action ${ev.action}`);
      }
    } catch (err) {
      log.error("webhook failed", { delivery, event: eventType, error: errorMessage(err) });
      return reply(500, { error: "internal error" });
    }
  };

  async function onQueued(ev: JobEvent, repository: string, delivery: string): Promise<HttpResult> {
    const job = ev.workflow_job;
    const pool = matchPool(config.pools, job.labels);
    if (!pool) return noop("no pool matches the job labels", { labels: job.labels });
    const at = now();
    const queuedAt = job.created_at ? Date.parse(job.created_at) : NaN;
    const entry: JobLedgerEntry = { state: "queued", at };
    // The ledger entry is the claim: concurrent copies and replays (for 25 h) of one job enqueue once.
    if (!(await state.create(stateKey(config.statePrefix, "jobs", job.id), JSON.stringify(entry)))) {
      return noop("job already enqueued", { jobId: job.id });
    }
    const queued: QueuedJob = {
      jobId: job.id,
      repository,
      pool: pool.name,
      runId: job.run_id,
      runAttempt: job.run_attempt,
      name: job.name,
      queuedAt: Number.isFinite(queuedAt) ? Math.min(queuedAt, at) : at,
      source: "webhook",
    };
    try {
      await queue.send(pool.queueUrl, queued);
    } catch (err) {
      await state.delete(stateKey(config.statePrefix, "jobs", job.id)).catch(() => false);
      throw err;
    }
    log.info("job enqueued", { delivery, jobId: job.id, pool: pool.name, repository });
    if (deps.wake) await deps.wake().catch((err: unknown) => log.warn("waking the scale-up consumer failed; the schedule will", { error: errorMessage(err) }));
    return reply(202, { result: "enqueued", pool: pool.name, jobId: job.id });
  }

  async function onCompleted(ev: JobEvent, repository: string, delivery: string): Promise<HttpResult> {
    const job = ev.workflow_job;
    const jobId = String(job.id);
    const ctx = { delivery, jobId, repository };
    const result: Record<string, unknown> = { result: "noop" };

    // An interrupted spot runner's job failed: re-run it once, on-demand.
    if (job.runner_name && job.conclusion !== "success" && job.conclusion !== "skipped") {
      const record = parseJson<InterruptionRecord>(await state.get(stateKey(config.statePrefix, "interrupted", job.runner_name)));
      if (record) {
        const rerun: RerunRecord = { state: "pending", repository, jobId: job.id, runId: job.run_id, name: job.name, at: now() };
        const claimed = await state.create(stateKey(config.statePrefix, "rerun", job.id), JSON.stringify(rerun));
        if (claimed) {
          result.rerun = await rerunOnDemand(deps, rerun);
          log.info("re-running a job its interrupted spot runner failed", { ...ctx, runnerName: job.runner_name, instanceId: record.instanceId, rerun: result.rerun });
        }
      }
    }

    // A job that finished (e.g. was cancelled) while its instance still boots: take the instance back.
    const instances = await ec2.list({ jobId });
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
          log.warn("could not delete runner of cancelled job; housekeeping will", { ...ctx, runnerName: inst.runnerName, error: errorMessage(err) });
        }
      }
    }
    if (cleaned.length > 0) {
      log.info("terminated instance of a job that finished before its runner started", { ...ctx, instanceIds: cleaned });
      Object.assign(result, { result: "cleaned", instanceIds: cleaned });
    } else if (result.rerun) result.result = "rerun";
    else result.reason = instances.length === 0 ? "no instance for this job" : "job's instance already booted";
    return reply(200, result);
  }
}

/**
 * Mark the job's run for on-demand (its re-run has a new job id but the same run and name), then
 * ask GitHub to re-run it. On failure the claim stays "pending" and housekeeping tries again.
 */
async function rerunOnDemand(deps: ScalerDeps, rerun: RerunRecord): Promise<"done" | "pending"> {
  const { config, state, log } = deps;
  await state.put(stateKey(config.statePrefix, "on-demand", onDemandId(rerun.runId, rerun.name)), JSON.stringify({ at: rerun.at, jobId: rerun.jobId }));
  try {
    await (await deps.github()).rerunJob(rerun.repository, rerun.jobId);
  } catch (err) {
    log.warn("re-run request failed; housekeeping retries it", { jobId: rerun.jobId, error: errorMessage(err) });
    return "pending";
  }
  await state.put(stateKey(config.statePrefix, "rerun", rerun.jobId), JSON.stringify({ ...rerun, state: "done" }));
  return "done";
}

// ---------------------------------------------------------------- scale-up consumer

export interface ScaleUpDeps extends ScalerDeps {
  /** Random suffix for runner names. */
  suffix?: () => string;
  /** Stop receiving new messages after this long (the Lambda timeout is longer). Default 240 s. */
  budgetMs?: number;
}

export interface ScaleUpReport {
  launched: { pool: string; jobId: number; instanceId: string; spot: boolean }[];
  dropped: { pool: string; jobId: number; reason: string }[];
  retried: { pool: string; jobId: number; reason: string; delaySeconds: number }[];
  /** Pools that had no free slot when their queue's turn came. */
  atCap: string[];
}

/** Per-pool document `pool/<name>` (written by the consumer only, which is serialised): breaker and recent launches. */
interface PoolDoc {
  /** Times of spot attempts that found no capacity in any spot placement. */
  spotFailures: number[];
  /** Launches of the last few minutes, counted even before DescribeInstances shows them. */
  recentLaunches: { id: string; at: number }[];
}
const RECENT_LAUNCH_MS = 5 * MINUTE;
const RECEIVE_VISIBILITY_SECONDS = 120;

/**
 * Serve every pool's queue, oldest first, while the pool has free slots. Must run serialised (the
 * consumer Lambda has reserved concurrency 1): it is the only launcher, so counting the pool's
 * instances once and launching into the free slots can never exceed the cap.
 */
export async function runScaleUp(deps: ScaleUpDeps): Promise<ScaleUpReport> {
  const { config, ec2, params, state, queue, log } = deps;
  const now = deps.now ?? Date.now;
  const suffix = deps.suffix ?? randomSuffix;
  const started = now();
  const budget = deps.budgetMs ?? 240_000;
  const report: ScaleUpReport = { launched: [], dropped: [], retried: [], atCap: [] };
  const interruptions = (await state.list(`${config.statePrefix}interrupted/`)).map((d) => parseJson<InterruptionRecord>(d.value)).filter((r): r is InterruptionRecord => r !== undefined);

  for (const pool of config.pools) {
    const docKey = stateKey(config.statePrefix, "breaker", pool.name);
    const doc: PoolDoc = { spotFailures: [], recentLaunches: [], ...parseJson<PoolDoc>(await state.get(docKey)) };
    const before = JSON.stringify(doc);
    const all = await ec2.list({ pool: pool.name, states: ALL_STATES });
    const seen = new Set(all.map((i) => i.id));
    const active = new Set(all.filter((i) => (ACTIVE_STATES as readonly string[]).includes(i.state)).map((i) => i.id));
    doc.recentLaunches = doc.recentLaunches.filter((l) => now() - l.at < RECENT_LAUNCH_MS);
    for (const l of doc.recentLaunches) if (!seen.has(l.id)) active.add(l.id); // launched, not yet listed
    const failures = () => pruneFailures([...doc.spotFailures, ...interruptions.filter((r) => r.pool === pool.name).map((r) => r.at)], config.breaker, now());

    let free = pool.maxRunners - active.size;
    if (free <= 0) report.atCap.push(pool.name);
    let blocked = false;
    while (free > 0 && !blocked && now() - started < budget) {
      const batch = await queue.receive(pool.queueUrl, Math.min(10, free), RECEIVE_VISIBILITY_SECONDS);
      if (batch.length === 0) break;
      for (const msg of batch) {
        if (free <= 0 || blocked) {
          // FIFO: hand the rest back at once, in order, for the next run.
          await queue.retryLater(pool.queueUrl, msg.receipt, 0);
          continue;
        }
        const outcome = await serveOne(pool, msg, failures);
        if (outcome.kind === "launched") {
          free--;
          active.add(outcome.instanceId);
          doc.recentLaunches.push({ id: outcome.instanceId, at: now() });
          report.launched.push({ pool: pool.name, jobId: msg.job.jobId, instanceId: outcome.instanceId, spot: outcome.spot });
          await queue.delete(pool.queueUrl, msg.receipt);
        } else if (outcome.kind === "drop") {
          log.info("job leaves the queue without an instance", { pool: pool.name, jobId: msg.job.jobId, repository: msg.job.repository, reason: outcome.reason });
          report.dropped.push({ pool: pool.name, jobId: msg.job.jobId, reason: outcome.reason });
          await state.put(stateKey(config.statePrefix, "jobs", msg.job.jobId), JSON.stringify({ state: "done", at: now() } satisfies JobLedgerEntry));
          await queue.delete(pool.queueUrl, msg.receipt);
        } else {
          const delaySeconds = backoffSeconds(msg.receiveCount);
          log.info("job stays queued", { pool: pool.name, jobId: msg.job.jobId, reason: outcome.reason, delaySeconds, receiveCount: msg.receiveCount });
          report.retried.push({ pool: pool.name, jobId: msg.job.jobId, reason: outcome.reason, delaySeconds });
          await queue.retryLater(pool.queueUrl, msg.receipt, delaySeconds);
          // Later jobs of this pool wait behind it (FIFO order, same placements).
          blocked = true;
        }
        if ((outcome.kind === "launched" || outcome.kind === "retry") && outcome.spotFailed) doc.spotFailures.push(now());
      }
    }
    doc.spotFailures = pruneFailures(doc.spotFailures, config.breaker, now());
    if (JSON.stringify(doc) !== before) await state.put(docKey, JSON.stringify(doc));
  }
  if (report.launched.length + report.dropped.length + report.retried.length > 0) log.info("scale-up done", { launched: report.launched.length, dropped: report.dropped.length, retried: report.retried.length, atCap: report.atCap });
  return report;

  type Outcome = { kind: "launched"; instanceId: string; spot: boolean; spotFailed: boolean } | { kind: "drop"; reason: string } | { kind: "retry"; reason: string; spotFailed?: boolean };

  async function serveOne(pool: Pool, msg: QueueMessage, failures: () => number[]): Promise<Outcome> {
    const job = msg.job;
    const jobId = String(job.jobId);
    const ctx = { pool: pool.name, jobId, repository: job.repository };
    if (now() - job.queuedAt > MAX_QUEUED_MS) return { kind: "drop", reason: "queued longer than GitHub's 24 h limit" };
    const existing = await ec2.list({ jobId });
    let gh: GitHubPort;
    let status: GitHubJob | undefined;
    try {
      gh = await deps.github();
      status = existing.length > 0 ? undefined : await gh.getJob(job.repository, job.jobId);
    } catch (err) {
      log.warn("could not ask GitHub for the job's status", { ...ctx, error: errorMessage(err) });
      if (existing.length === 0) return { kind: "retry", reason: "GitHub did not answer" };
      return { kind: "drop", reason: "job already has an instance" };
    }
    const decision = serveDecision(status, job.queuedAt, now(), existing.length > 0);
    if (decision.kind !== "launch") return decision;

    const rerunOfInterrupted = job.runAttempt > 1 && (await state.get(stateKey(config.statePrefix, "on-demand", onDemandId(job.runId, job.name)))) !== undefined;
    const spotOk = !rerunOfInterrupted && spotAllowed(failures(), config.breaker, now());
    const name = runnerName(pool.name, jobId, suffix());
    const tags = { [config.tagKey]: pool.name, [TAGS.jobId]: jobId, [TAGS.runnerName]: name };
    let instanceId: string | undefined;
    let placed: { instanceType: string; subnetId: string; spot: boolean } | undefined;
    let spotFailed = false;
    const tried: string[] = [];
    for (const p of placements(pool, job.jobId, spotOk)) {
      try {
        instanceId = await ec2.launch({ launchTemplateId: pool.launchTemplateId, instanceType: p.instanceType, subnetId: p.subnetId, spot: p.spot, tags });
        placed = p;
        break;
      } catch (err) {
        if (err instanceof LaunchError && isCapacityError(err.code)) {
          tried.push(`${p.spot ? "spot" : "on-demand"}/${p.instanceType}/${p.subnetId}: ${err.code}`);
          if (p.spot) spotFailed = true;
          continue;
        }
        log.error("launch failed", { ...ctx, error: errorMessage(err) });
        return { kind: "retry", reason: `launch failed: ${errorMessage(err)}`, spotFailed };
      }
    }
    if (!instanceId || !placed) {
      log.warn("no capacity in any placement", { ...ctx, tried });
      return { kind: "retry", reason: "no capacity in any placement", spotFailed };
    }
    log.info("instance launched", { ...ctx, instanceId, ...placed, onDemandBecause: placed.spot ? undefined : rerunOfInterrupted ? "re-run of an interrupted job" : !spotOk ? "spot breaker open" : pool.spot ? "no spot capacity" : "pool is on-demand" });

    try {
      const r = await gh!.generateJitConfig({ name, runnerGroupId: config.runnerGroupId, labels: runnerLabels(pool), workFolder: "_work" });
      try {
        await params.put(`${config.paramPrefix}${instanceId}`, r.encodedJitConfig);
      } catch (err) {
        await gh!.deleteRunner(r.runnerId).catch((e: unknown) => log.error("deleting runner failed", { ...ctx, runnerId: r.runnerId, error: errorMessage(e) }));
        throw err;
      }
    } catch (err) {
      log.error("provisioning the runner failed, releasing instance", { ...ctx, instanceId, error: errorMessage(err) });
      await ec2.release([instanceId]).catch((e: unknown) => log.error("releasing instance failed; housekeeping will", { ...ctx, instanceId, error: errorMessage(e) }));
      return { kind: "retry", reason: "provisioning the runner failed", spotFailed };
    }
    await state.put(stateKey(config.statePrefix, "jobs", job.jobId), JSON.stringify({ state: "launched", at: now(), instanceId } satisfies JobLedgerEntry));
    log.info("runner provisioned", { ...ctx, instanceId, runnerName: name });
    return { kind: "launched", instanceId, spot: placed.spot, spotFailed };
  }
}

// ---------------------------------------------------------------- spot interruption

/** EventBridge `EC2 Spot Instance Interruption Warning` / `EC2 Instance Rebalance Recommendation` (fields used). */
export interface Ec2SpotEvent {
  "detail-type"?: string;
  detail?: { "instance-id"?: string; "instance-action"?: string };
}

export interface InterruptionReport {
  result: "recorded" | "ignored";
  reason?: string;
  instanceId?: string;
  runnerName?: string;
  runnerRemoved?: boolean;
}

/**
 * Record an interruption of one of the fleet's spot instances (for the breaker and for the re-run
 * when its job then fails) and remove its runner from GitHub if it is idle (a busy runner cannot be
 * deleted: it goes offline with the instance, and housekeeping deletes it). A rebalance
 * recommendation only counts towards the breaker.
 */
export async function handleInterruption(deps: ScalerDeps, event: Ec2SpotEvent): Promise<InterruptionReport> {
  const { config, ec2, state, log } = deps;
  const now = deps.now ?? Date.now;
  const instanceId = event?.detail?.["instance-id"];
  if (typeof instanceId !== "string" || !/^i-[0-9a-f]{8,17}$/.test(instanceId)) return { result: "ignored", reason: "no instance id" };
  const [inst] = await ec2.list({ instanceIds: [instanceId], states: ALL_STATES });
  const pool = inst?.pool !== undefined ? config.pools.find((p) => p.name === inst.pool) : undefined;
  if (!inst || !pool) return { result: "ignored", reason: "not a fleet instance", instanceId };
  const kind = event["detail-type"] === "EC2 Instance Rebalance Recommendation" ? "rebalance" : "interruption";
  const key = inst.runnerName ?? instanceId;
  const record: InterruptionRecord = { instanceId, pool: pool.name, at: now() };
  if (kind === "rebalance") {
    // Counted for the breaker under its own key, so a later interruption of the same instance still records.
    await state.create(stateKey(config.statePrefix, "interrupted", `rebalance-${instanceId}`), JSON.stringify(record));
    log.info("spot rebalance recommendation", { instanceId, pool: pool.name });
    return { result: "recorded", reason: "rebalance recommendation", instanceId };
  }
  const fresh = await state.create(stateKey(config.statePrefix, "interrupted", key), JSON.stringify(record));
  let runnerRemoved = false;
  if (fresh && inst.runnerName) {
    try {
      const gh = await deps.github();
      for (const r of await gh.listRunners(inst.runnerName)) {
        if (r.name === inst.runnerName && !r.busy) {
          await gh.deleteRunner(r.id);
          runnerRemoved = true;
        }
      }
    } catch (err) {
      log.warn("could not remove the interrupted runner; housekeeping will", { instanceId, runnerName: inst.runnerName, error: errorMessage(err) });
    }
  }
  log.info("spot interruption recorded", { instanceId, pool: pool.name, runnerName: inst.runnerName, duplicate: !fresh, runnerRemoved });
  return { result: "recorded", instanceId, ...(inst.runnerName ? { runnerName: inst.runnerName } : {}), runnerRemoved };
}

// ---------------------------------------------------------------- housekeeping

export type HousekeepingDeps = ScalerDeps;

export interface HousekeepingReport {
  terminated: HousekeepingPlan["terminate"];
  deletedParams: string[];
  deletedRunners: string[];
  overCap: HousekeepingPlan["overCap"];
  /** Queued jobs the queue did not hold (missed webhooks), enqueued now. */
  reconciled: number[];
  /** Pending re-runs GitHub accepted this time. */
  reruns: number[];
  /** State documents older than STATE_RETENTION_MS, deleted. */
  prunedState: number;
  errors: string[];
}

export async function runHousekeeping(deps: HousekeepingDeps): Promise<HousekeepingReport> {
  const { config, ec2, params, log } = deps;
  const now = (deps.now ?? Date.now)();
  const errors: string[] = [];
  const report: HousekeepingReport = { terminated: [], deletedParams: [], deletedRunners: [], overCap: [], reconciled: [], reruns: [], prunedState: 0, errors };
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
  const github = await attempt("github client", () => deps.github());
  const runners = github ? await attempt("list runners", () => github.listRunners()) : undefined;

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

  // Reconciliation: queued jobs GitHub knows of that the queue does not hold (a missed webhook,
  // or an instance that died before its runner took the job).
  const docs = (await attempt("list state", () => deps.state.list(config.statePrefix))) ?? [];
  const ledger = new Map<number, JobLedgerEntry>();
  const jobsPrefix = `${config.statePrefix}jobs/`;
  for (const d of docs) {
    if (!d.name.startsWith(jobsPrefix)) continue;
    const e = parseJson<JobLedgerEntry>(d.value);
    if (e) ledger.set(Number(d.name.slice(jobsPrefix.length)), e);
  }
  if (github) {
    const queued: { repository: string; job: GitHubJob }[] = [];
    for (const repository of config.repositories) {
      const jobs = await attempt(`list queued jobs of ${repository}`, () => github.listQueuedJobs(repository));
      for (const job of jobs ?? []) queued.push({ repository, job });
    }
    const doomed = new Set(plan.terminate.map((t) => t.id));
    const activeIds = new Set(instances.filter((i) => (ACTIVE_STATES as readonly string[]).includes(i.state) && !doomed.has(i.id)).map((i) => i.id));
    for (const r of jobsToReconcile(queued, config.pools, ledger, activeIds, now)) {
      const ok = await attempt(`enqueue missed job ${r.job.id}`, async () => {
        await deps.state.put(stateKey(config.statePrefix, "jobs", r.job.id), JSON.stringify({ state: "queued", at: now } satisfies JobLedgerEntry));
        const job: QueuedJob = { jobId: r.job.id, repository: r.repository, pool: r.pool.name, runId: r.job.runId, runAttempt: r.job.runAttempt, name: r.job.name, queuedAt: r.job.createdAt, source: "reconcile" };
        await deps.queue.send(r.pool.queueUrl, job, `${r.job.id}-${now}`);
        return true;
      });
      if (ok) {
        report.reconciled.push(r.job.id);
        log.info("enqueued a queued job the queue did not hold (missed webhook)", { jobId: r.job.id, repository: r.repository, pool: r.pool.name });
      }
    }
    // Re-runs GitHub did not accept when the job failed.
    for (const d of docs) {
      if (!d.name.startsWith(`${config.statePrefix}rerun/`)) continue;
      const rerun = parseJson<RerunRecord>(d.value);
      if (rerun?.state !== "pending") continue;
      const outcome = await attempt(`re-run job ${rerun.jobId}`, () => rerunOnDemand(deps, rerun));
      if (outcome === "done") report.reruns.push(rerun.jobId);
    }
  }
  // Prune state documents past GitHub's 24 h queue limit (and the breaker's horizon).
  for (const d of docs) {
    if (d.name.startsWith(`${config.statePrefix}breaker/`)) continue;
    const at = parseJson<{ at?: number }>(d.value)?.at;
    const pending = d.name.startsWith(`${config.statePrefix}rerun/`) && parseJson<RerunRecord>(d.value)?.state === "pending";
    if (typeof at === "number" && now - at > STATE_RETENTION_MS && !pending) {
      const ok = await attempt(`delete state ${d.name}`, () => deps.state.delete(d.name));
      if (ok !== undefined) report.prunedState++;
    }
  }

  log.info("housekeeping done", { ...report, terminated: report.terminated.length });
  return report;
}
