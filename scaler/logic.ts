/**
 * Pure decisions: no I/O, no clock, no randomness unless passed in.
 */
import { createHash } from "node:crypto";
import type { BreakerSettings, Pool } from "./config.ts";
import type { GitHubJob, GitHubRunner, RunnerInstance } from "./ports.ts";

export const RUNNER_NAME_PREFIX = "strata-";
export const SELF_HOSTED = "self-hosted";

/** Tag keys besides the configurable pool key. */
export const TAGS = {
  jobId: "strata:job-id",
  delivery: "strata:delivery",
  runnerName: "strata:runner-name",
} as const;

/** EC2 error codes after which another placement (type / subnet / market) may still succeed. */
export const CAPACITY_ERRORS: ReadonlySet<string> = new Set([
  "InsufficientInstanceCapacity",
  "SpotMaxPriceTooLow",
  "MaxSpotInstanceCountExceeded",
  "InsufficientCapacity",
  "UnfulfillableCapacity",
  "InsufficientHostCapacity",
  "InsufficientReservedInstanceCapacity",
  // Instance type not offered in this subnet's AZ, or the vCPU quota of this market/family is used up:
  // both are per-placement, so the next placement is worth a try.
  "Unsupported",
  "VcpuLimitExceeded",
]);

export function isCapacityError(code: string): boolean {
  return CAPACITY_ERRORS.has(code);
}

/** Labels GitHub gives self-hosted runners by default; every other pool label is the pool's own ("custom"). */
export const DEFAULT_RUNNER_LABELS: ReadonlySet<string> = new Set(["self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64"]);

/**
 * The pool for a job's labels, case-insensitively as GitHub matches: every job label is one of the
 * pool's labels ("self-hosted" implicitly included), and every custom pool label (one that is not a
 * GitHub default label) is among the job's labels, so `[self-hosted]` alone or `[self-hosted, gpu]`
 * never reaches a pool that is distinguished by `strata-base-builder`. First match in configuration order.
 */
export function matchPool(pools: readonly Pool[], jobLabels: readonly string[]): Pool | undefined {
  const wanted = new Set(jobLabels.map((l) => l.trim().toLowerCase()));
  if (wanted.size === 0) return undefined;
  return pools.find((p) => {
    const have = new Set([SELF_HOSTED, ...p.labels.map((l) => l.trim().toLowerCase())]);
    const custom = [...have].filter((l) => !DEFAULT_RUNNER_LABELS.has(l));
    return [...wanted].every((l) => have.has(l)) && custom.every((l) => wanted.has(l));
  });
}

/** Labels to register the JIT runner with: the pool's labels, "self-hosted" first, deduplicated. */
export function runnerLabels(pool: Pool): string[] {
  const out = [SELF_HOSTED];
  const seen = new Set(out);
  for (const l of pool.labels) {
    const k = l.trim().toLowerCase();
    if (!seen.has(k)) {
      seen.add(k);
      out.push(l.trim());
    }
  }
  return out;
}

/** Runner names: strata-<pool>-<job id>-<suffix>; the suffix keeps a relaunch for the same job unique. */
export function runnerName(pool: string, jobId: number | string, suffix: string): string {
  return `${RUNNER_NAME_PREFIX}${pool}-${jobId}-${suffix}`.slice(0, 64);
}

export function isStrataRunnerName(name: string): boolean {
  return name.startsWith(RUNNER_NAME_PREFIX);
}

export interface Placement {
  instanceType: string;
  subnetId: string;
  spot: boolean;
}

/**
 * Placements to try, in order: all spot placements first (if the pool uses spot and
 * `spotAllowed`: the breaker is closed and the job is no re-run of an interrupted one),
 * then all on-demand ones. Within a market, instance types in priority order; for
 * each type, every subnet, starting at `spreadSeed mod subnets` so consecutive jobs
 * land in different subnets/AZs.
 */
export function placements(pool: Pool, spreadSeed: number, spotAllowed = true): Placement[] {
  const n = pool.subnetIds.length;
  const start = ((Math.trunc(spreadSeed) % n) + n) % n;
  const subnets = pool.subnetIds.map((_, i) => pool.subnetIds[(start + i) % n]!);
  const markets = pool.spot && spotAllowed ? [true, false] : [false];
  const out: Placement[] = [];
  for (const spot of markets) for (const instanceType of pool.instanceTypes) for (const subnetId of subnets) out.push({ instanceType, subnetId, spot });
  return out;
}

// ---------------------------------------------------------------- scale-up

const MINUTE = 60_000;
/** GitHub cancels a job still queued for a self-hosted runner after 24 h. */
export const MAX_QUEUED_MS = 24 * 60 * MINUTE;

/**
 * Spot circuit breaker, from the times of a pool's recent spot failures (capacity errors of spot
 * placements and interruptions): open (on-demand only) until `onDemandMinutes` after the latest
 * moment at which `failures` of them fell within `windowMinutes`. Stateless over the times, so
 * several writers of failure times never race over a counter.
 */
export function spotBreakerOpenUntil(failureTimes: readonly number[], s: BreakerSettings): number | undefined {
  const t = [...failureTimes].sort((a, b) => a - b);
  let until: number | undefined;
  for (let i = s.failures - 1; i < t.length; i++) {
    if (t[i]! - t[i - s.failures + 1]! <= s.windowMinutes * MINUTE) until = t[i]! + s.onDemandMinutes * MINUTE;
  }
  return until;
}

export function spotAllowed(failureTimes: readonly number[], s: BreakerSettings, now: number): boolean {
  const until = spotBreakerOpenUntil(failureTimes, s);
  return until === undefined || now >= until;
}

/** Failure times still relevant to the breaker (older ones can neither open nor extend it). */
export function pruneFailures(failureTimes: readonly number[], s: BreakerSettings, now: number): number[] {
  const keep = (s.windowMinutes + s.onDemandMinutes) * MINUTE;
  return failureTimes.filter((t) => now - t <= keep);
}

/** What to do with a queued job once GitHub has answered (or not). */
export type ServeDecision =
  | { kind: "launch" }
  | { kind: "drop"; reason: string }
  | { kind: "retry"; reason: string };

/**
 * Launch only for a job GitHub reports still `queued` (this also ends the replay window of a signed
 * delivery); a job that started elsewhere, finished or was cancelled leaves the queue; one past
 * GitHub's 24 h limit leaves it too; a job not yet queued (waiting for an environment) waits.
 */
export function serveDecision(job: GitHubJob | undefined, queuedAt: number, now: number, hasInstance: boolean): ServeDecision {
  if (now - queuedAt > MAX_QUEUED_MS) return { kind: "drop", reason: "queued longer than GitHub's 24 h limit" };
  if (hasInstance) return { kind: "drop", reason: "job already has an instance" };
  if (job === undefined) return { kind: "retry", reason: "GitHub did not answer" };
  if (job.status === "queued") return { kind: "launch" };
  if (job.status === "completed") return { kind: "drop", reason: `job completed (${job.conclusion ?? "no conclusion"})` };
  if (job.status === "in_progress") return { kind: "drop", reason: "job already running on another runner" };
  return { kind: "retry", reason: `job is ${job.status}` };
}

/** Delay before a job that found no capacity is tried again: 30 s doubling to 5 min. */
export function backoffSeconds(receiveCount: number): number {
  return Math.min(300, 30 * 2 ** Math.max(0, receiveCount - 1));
}

/** Free slots of a pool: its cap minus its active instances (and launches not yet visible). */
export function freeSlots(pool: Pool, activeIds: ReadonlySet<string>): number {
  return Math.max(0, pool.maxRunners - activeIds.size);
}

/** Name of a state document (SSM allows [A-Za-z0-9_.-/]). */
export function stateKey(prefix: string, kind: "jobs" | "interrupted" | "rerun" | "on-demand" | "breaker", id: string | number): string {
  return `${prefix}${kind}/${String(id).replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 200)}`;
}

/** Key of the on-demand marker a re-run job is recognised by: its run and its name (a re-run gets a new job id). */
export function onDemandId(runId: number, jobName: string): string {
  return `${runId}-${createHash("sha256").update(jobName).digest("hex").slice(0, 16)}`;
}

/**
 * Housekeeping's reconciliation: the queued jobs GitHub reports for the served repositories that
 * fit a pool and that the queue does not hold: no ledger entry, or one whose launched instance
 * is gone without having run the job (it stays queued). Younger than `graceMs`: left to the webhook.
 */
export function jobsToReconcile(
  queued: readonly { repository: string; job: GitHubJob }[],
  pools: readonly Pool[],
  ledger: ReadonlyMap<number, JobLedgerEntry>,
  activeIds: ReadonlySet<string>,
  now: number,
  graceMs = 2 * MINUTE,
): { repository: string; job: GitHubJob; pool: Pool }[] {
  const out: { repository: string; job: GitHubJob; pool: Pool }[] = [];
  for (const q of queued) {
    if (q.job.status !== "queued" || now - q.job.createdAt < graceMs || now - q.job.createdAt > MAX_QUEUED_MS) continue;
    const pool = matchPool(pools, q.job.labels);
    if (!pool) continue;
    const entry = ledger.get(q.job.id);
    if (entry?.state === "queued") continue;
    if (entry?.state === "launched" && entry.instanceId !== undefined && activeIds.has(entry.instanceId)) continue;
    out.push({ ...q, pool });
  }
  return out;
}

/** The ledger entry of an enqueued job (state document `jobs/<id>`). */
export interface JobLedgerEntry {
  state: "queued" | "launched" | "done";
  at: number;
  instanceId?: string;
}

// ---------------------------------------------------------------- housekeeping

export interface HousekeepingInput {
  now: number;
  pools: readonly Pool[];
  /** All non-terminated instances carrying the pool tag key. */
  instances: readonly RunnerInstance[];
  /** Parameters under the JIT prefix. */
  params: readonly { name: string; lastModified: number }[];
  paramPrefix: string;
  /** GitHub's runner list, or undefined when GitHub could not be asked. */
  runners: readonly GitHubRunner[] | undefined;
  registrationTimeoutMinutes: number;
}

export interface HousekeepingPlan {
  terminate: { id: string; reason: "max-runtime" | "never-registered" | "unknown-pool" }[];
  deleteParams: string[];
  deleteRunners: { id: number; name: string }[];
  overCap: { pool: string; active: number; maxRunners: number }[];
}

const INSTANCE_ID_RE = /^i-[0-9a-f]{8,17}$/;

export function planHousekeeping(input: HousekeepingInput): HousekeepingPlan {
  const { now, pools, instances, params, paramPrefix, runners } = input;
  const poolByName = new Map(pools.map((p) => [p.name, p]));
  const live = instances.filter((i) => i.state !== "shutting-down" && i.state !== "terminated");
  const runnerByName = new Map((runners ?? []).map((r) => [r.name, r]));
  const plan: HousekeepingPlan = { terminate: [], deleteParams: [], deleteRunners: [], overCap: [] };
  const doomed = new Set<string>();

  for (const inst of live) {
    const pool = inst.pool !== undefined ? poolByName.get(inst.pool) : undefined;
    const ageMin = (now - inst.launchTime) / MINUTE;
    if (!pool) {
      // A pool removed from the configuration: its instances get the longest runtime any pool allows.
      const limit = Math.max(...pools.map((p) => p.maxRuntimeMinutes));
      if (ageMin > limit) {
        plan.terminate.push({ id: inst.id, reason: "unknown-pool" });
        doomed.add(inst.id);
      }
      continue;
    }
    if (ageMin > pool.maxRuntimeMinutes) {
      plan.terminate.push({ id: inst.id, reason: "max-runtime" });
      doomed.add(inst.id);
      continue;
    }
    if (runners !== undefined && ageMin > input.registrationTimeoutMinutes) {
      const r = inst.runnerName !== undefined ? runnerByName.get(inst.runnerName) : undefined;
      // Registered = connected (online) at least now, or busy. An ephemeral runner that finished
      // its job is removed by GitHub and its instance is already shutting itself down.
      const registered = r !== undefined && (r.status === "online" || r.busy);
      if (!registered) {
        plan.terminate.push({ id: inst.id, reason: "never-registered" });
        doomed.add(inst.id);
      }
    }
  }

  const alive = new Set(live.filter((i) => !doomed.has(i.id)).map((i) => i.id));
  for (const p of params) {
    if (!p.name.startsWith(paramPrefix)) continue;
    const id = p.name.slice(paramPrefix.length);
    if (!INSTANCE_ID_RE.test(id)) continue; // not ours to judge
    if (!alive.has(id)) plan.deleteParams.push(p.name);
  }

  if (runners !== undefined) {
    const aliveNames = new Set(live.filter((i) => !doomed.has(i.id) && i.runnerName).map((i) => i.runnerName!));
    for (const r of runners) {
      if (!isStrataRunnerName(r.name) || r.busy) continue;
      if (r.status !== "online" && !aliveNames.has(r.name)) plan.deleteRunners.push({ id: r.id, name: r.name });
    }
  }

  for (const pool of pools) {
    const active = live.filter((i) => i.pool === pool.name && !doomed.has(i.id)).length;
    if (active > pool.maxRunners) plan.overCap.push({ pool: pool.name, active, maxRunners: pool.maxRunners });
  }
  return plan;
}
