/**
 * Pure decisions: no I/O, no clock, no randomness unless passed in.
 */
import type { Pool } from "./config.ts";
import type { GitHubRunner, RunnerInstance } from "./ports.ts";

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

/**
 * The pool for a job's labels: every job label must be one of the pool's labels
 * (case-insensitive), and the job must ask for "self-hosted". "self-hosted" is
 * implicitly a label of every pool. First matching pool in configuration order wins.
 */
export function matchPool(pools: readonly Pool[], jobLabels: readonly string[]): Pool | undefined {
  const wanted = jobLabels.map((l) => l.trim().toLowerCase());
  if (!wanted.includes(SELF_HOSTED)) return undefined;
  return pools.find((p) => {
    const have = new Set([SELF_HOSTED, ...p.labels.map((l) => l.trim().toLowerCase())]);
    return wanted.every((l) => have.has(l));
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
 * Placements to try, in order: all spot placements first (if the pool uses spot),
 * then all on-demand ones. Within a market, instance types in priority order; for
 * each type, every subnet, starting at `spreadSeed mod subnets` so consecutive jobs
 * land in different subnets/AZs.
 */
export function placements(pool: Pool, spreadSeed: number): Placement[] {
  const n = pool.subnetIds.length;
  const start = ((Math.trunc(spreadSeed) % n) + n) % n;
  const subnets = pool.subnetIds.map((_, i) => pool.subnetIds[(start + i) % n]!);
  const markets = pool.spot ? [true, false] : [false];
  const out: Placement[] = [];
  for (const spot of markets) for (const instanceType of pool.instanceTypes) for (const subnetId of subnets) out.push({ instanceType, subnetId, spot });
  return out;
}

/** Stable order for "who came first": launch time, then instance id. Every scaler computes the same order. */
export function byAge(a: RunnerInstance, b: RunnerInstance): number {
  return a.launchTime - b.launchTime || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Launch-then-recount: given the active instances of one pool as seen right after
 * our own launch, which of them must go? Oldest first, an instance is kept if its
 * job does not already have a kept instance and fewer than maxRunners are kept;
 * everything else is excess. Because the order is the same for every observer, the
 * oldest maxRunners instances are never excess in anyone's view, and the observer
 * that recounts last sees every launch and removes all the rest.
 */
export function excessInstances(active: readonly RunnerInstance[], maxRunners: number): RunnerInstance[] {
  const kept = new Set<string>();
  const jobs = new Set<string>();
  const excess: RunnerInstance[] = [];
  for (const inst of [...active].sort(byAge)) {
    const dupJob = inst.jobId !== undefined && jobs.has(inst.jobId);
    if (!dupJob && kept.size < maxRunners) {
      kept.add(inst.id);
      if (inst.jobId !== undefined) jobs.add(inst.jobId);
    } else excess.push(inst);
  }
  return excess;
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
const MINUTE = 60_000;

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
