/**
 * Fleet simulation on a simulated clock: the real handlers (webhook, scale-up consumer, interruption
 * handler, housekeeping) over the in-memory ports, driven by a discrete-event loop that plays GitHub
 * (jobs, runners picking jobs, deliveries sent twice or missed, 5xx/429) and EC2 (boot, capacity
 * errors, spot interruptions, terminations). Prints served / lost / max active / duplicates /
 * orphans / re-runs per scenario and the makespan against an ideal scheduler.
 * `node --import tsx bench/fleet.ts`; wired into `npm run bench` by bench/run.ts.
 */
import { fileURLToPath } from "node:url";
import { createWebhookHandler, handleInterruption, runHousekeeping, runScaleUp, type ScalerDeps } from "../scaler/core.ts";
import { TAGS } from "../scaler/logic.ts";
import { silentLogger, type GitHubJob, type LaunchRequest } from "../scaler/ports.ts";
import { delivery, jobPayload, testConfig, testPool } from "../test/support/events.ts";
import { FakeEc2, FakeGitHub, FakeParams, FakeQueue, FakeState, seeded } from "../test/support/fakes.ts";

const MIN = 60_000;
const SECRET = "sim-secret";
const LABELS = ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"];
const REPO = "acme/models";

export interface Scenario {
  name: string;
  jobs: number;
  maxRunners: number;
  /** Job run time range, minutes. */
  durationMin: [number, number];
  /** Arrivals spread uniformly over this many minutes (0: all at once, in order). */
  arrivalSpreadMin: number;
  bootMin: number;
  capacityErrorRate: number;
  interruptionRate: number;
  githubErrorRate: number;
  missedWebhookRate: number;
  duplicateDeliveries: boolean;
  seed: number;
}

export interface SimResult {
  served: number;
  /** Jobs GitHub cancelled after 24 h in its queue (a job for self-hosted runners may wait at most 24 h). */
  cancelledByGitHub: number;
  /** What the ideal scheduler would serve under the same 24 h limit. */
  idealServed: number;
  jobs: number;
  lost: number;
  maxActive: number;
  cap: number;
  duplicateLaunches: number;
  orphans: number;
  interruptions: number;
  reruns: number;
  spotLaunchesForReruns: number;
  makespanMin: number;
  idealMakespanMin: number;
  maxQueueWaitMin: number;
  launches: number;
  wallMs: number;
}

interface SimJob extends GitHubJob {
  repository: string;
  duration: number;
  original: number;
}

export async function simulate(sc: Scenario): Promise<SimResult> {
  const wall = performance.now();
  let now = 0;
  const clock = () => now;
  const rand = seeded(sc.seed);
  const instant = { jitterMs: -1, random: rand };
  const pool = testPool({ name: "gpu-base-builder", labels: LABELS, maxRunners: sc.maxRunners, maxRuntimeMinutes: Math.ceil(sc.durationMin[1] + sc.bootMin + 30), spot: true });
  const config = testConfig({ pools: [pool], repositories: [REPO] });
  const ec2 = new FakeEc2(config.tagKey, clock, instant);
  const params = new FakeParams(clock, instant);
  const state = new FakeState();
  const queue = new FakeQueue(clock);
  const github = new FakeGitHub();
  const deps: ScalerDeps = { config, ec2, params, state, queue, github: async () => github, log: silentLogger, now: clock };

  // --- faults in our layer: capacity errors per placement, GitHub 5xx/429 per call
  ec2.capacity = () => (rand() < sc.capacityErrorRate ? "InsufficientInstanceCapacity" : undefined);
  github.beforeCall = () => {
    if (rand() < sc.githubErrorRate) throw Object.assign(new Error("injected 502"), { status: rand() < 0.5 ? 502 : 429 });
  };
  let duplicateLaunches = 0;
  let spotLaunchesForReruns = 0;
  let launches = 0;
  const launch = ec2.launch.bind(ec2);
  ec2.launch = async (req: LaunchRequest) => {
    const id = await launch(req);
    launches++;
    const jobId = req.tags[TAGS.jobId];
    if (ec2.active().some((i) => i.id !== id && i.tags[TAGS.jobId] === jobId)) duplicateLaunches++;
    const job = jobs.get(Number(jobId));
    if (job && job.runAttempt > 1 && req.spot) spotLaunchesForReruns++;
    schedule(now + sc.bootMin * MIN, () => boot(id));
    return id;
  };

  // --- event loop
  type Ev = { t: number; seq: number; fn: () => Promise<void> | void };
  const events: Ev[] = [];
  let seq = 0;
  function schedule(t: number, fn: Ev["fn"]): void {
    const ev = { t, seq: seq++, fn };
    let lo = 0;
    let hi = events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = events[mid]!;
      if (m.t < t || (m.t === t && m.seq < ev.seq)) lo = mid + 1;
      else hi = mid;
    }
    events.splice(lo, 0, ev);
  }
  let wakePending = false;
  const wake = async () => {
    if (wakePending) return;
    wakePending = true;
    schedule(now + 1000, async () => {
      wakePending = false;
      await runScaleUp(deps);
    });
  };
  const webhook = createWebhookHandler({ ...deps, webhookSecret: async () => SECRET, wake });
  const deliver = async (payload: unknown) => {
    const ev = delivery(SECRET, payload);
    await webhook(ev);
    if (sc.duplicateDeliveries) await webhook(ev); // the same delivery id, sent twice
  };

  // --- GitHub's side: jobs and the runners that take them
  const jobs = new Map<number, SimJob>();
  const running = new Map<string, number>(); // instance id → job id
  const idle = new Set<string>(); // booted runners without a job
  const finished = new Map<number, number>(); // original job id → completion time of its successful attempt
  const cancelled = new Set<number>(); // original job ids GitHub cancelled after 24 h queued
  const doomed = new Set<string>(); // interrupted instances: their job fails, whatever its run time
  let interruptions = 0;
  let maxQueueWait = 0;
  const runnerOf = (instanceId: string) => ec2.instances.get(instanceId)?.tags[TAGS.runnerName];

  function queueJob(job: SimJob, sendWebhook: boolean): void {
    jobs.set(job.id, job);
    github.jobs.set(job.id, job);
    schedule(job.createdAt + 24 * 60 * MIN, async () => {
      if (job.status !== "queued") return;
      Object.assign(job, { status: "completed", conclusion: "cancelled" });
      cancelled.add(job.original);
      await deliver(jobPayload("completed", job.id, LABELS, { owner: "acme", repo: "models", conclusion: "cancelled", runId: job.runId, runAttempt: job.runAttempt, name: job.name }));
    });
    const taker = [...idle][0];
    if (taker) return void startJob(taker, job);
    if (sendWebhook && rand() >= sc.missedWebhookRate) schedule(now + 500, () => deliver(jobPayload("queued", job.id, LABELS, { owner: "acme", repo: "models", runId: job.runId, runAttempt: job.runAttempt, name: job.name, createdAt: job.createdAt })));
  }
  github.onRerun = (next) => {
    const prev = [...jobs.values()].find((j) => j.runId === next.runId && j.runAttempt === next.runAttempt - 1)!;
    const job: SimJob = { ...next, createdAt: now, duration: prev.duration, original: prev.original };
    github.jobs.set(job.id, job);
    schedule(now + 1000, () => queueJob(job, true));
  };

  function startJob(instanceId: string, job: SimJob): void {
    idle.delete(instanceId);
    maxQueueWait = Math.max(maxQueueWait, now - job.createdAt);
    Object.assign(job, { status: "in_progress", runnerName: runnerOf(instanceId) ?? null });
    running.set(instanceId, job.id);
    for (const r of github.runners.values()) if (r.name === job.runnerName) Object.assign(r, { status: "online", busy: true });
    const inst = ec2.instances.get(instanceId)!;
    if (inst.spot && rand() < sc.interruptionRate) {
      const at = now + rand() * job.duration;
      schedule(at, async () => {
        if (running.get(instanceId) !== job.id) return;
        interruptions++;
        doomed.add(instanceId);
        await handleInterruption(deps, { "detail-type": "EC2 Spot Instance Interruption Warning", detail: { "instance-id": instanceId, "instance-action": "terminate" } });
        schedule(now + 2 * MIN, () => endInstance(instanceId, "failure"));
      });
    }
    schedule(now + job.duration, () => endInstance(instanceId, "success"));
  }

  function boot(instanceId: string): void {
    const inst = ec2.instances.get(instanceId);
    if (!inst || inst.state !== "pending") return;
    inst.state = "running";
    if (!params.store.delete(`${config.paramPrefix}${instanceId}`)) return void endInstance(instanceId, undefined); // no JIT config: user data powers off
    for (const r of github.runners.values()) if (r.name === inst.tags[TAGS.runnerName]) r.status = "online";
    const own = jobs.get(Number(inst.tags[TAGS.jobId]));
    const next = own?.status === "queued" ? own : [...jobs.values()].filter((j) => j.status === "queued").sort((a, b) => a.createdAt - b.createdAt)[0];
    if (next) startJob(instanceId, next);
    else idle.add(instanceId);
  }

  async function endInstance(instanceId: string, conclusion: "success" | "failure" | undefined): Promise<void> {
    const inst = ec2.instances.get(instanceId);
    if (!inst || inst.state === "terminated") return;
    if (running.get(instanceId) === undefined && conclusion !== undefined) return;
    if (conclusion === "success" && doomed.has(instanceId)) return; // interrupted: the failure end comes
    const jobId = running.get(instanceId);
    running.delete(instanceId);
    idle.delete(instanceId);
    inst.state = "terminated";
    const runnerName = inst.tags[TAGS.runnerName];
    for (const [id, r] of github.runners) {
      if (r.name !== runnerName) continue;
      if (conclusion === "success") github.runners.delete(id); // ephemeral: gone after its job
      else Object.assign(r, { status: "offline", busy: false }); // lost with its instance
    }
    schedule(now + 1000, () => runScaleUp(deps).then(() => undefined)); // EventBridge: instance state change
    if (jobId === undefined || conclusion === undefined) return;
    const job = jobs.get(jobId)!;
    Object.assign(job, { status: "completed", conclusion });
    if (conclusion === "success") finished.set(job.original, now);
    await deliver(jobPayload("completed", job.id, LABELS, { owner: "acme", repo: "models", runnerName, conclusion, runId: job.runId, runAttempt: job.runAttempt, name: job.name }));
  }

  // --- workload
  const durations: number[] = [];
  for (let i = 1; i <= sc.jobs; i++) {
    const duration = Math.round((sc.durationMin[0] + rand() * (sc.durationMin[1] - sc.durationMin[0])) * MIN);
    durations.push(duration);
    const at = sc.arrivalSpreadMin > 0 ? Math.floor(rand() * sc.arrivalSpreadMin * MIN) : i * 1000;
    schedule(at, () => queueJob({ id: i, status: "queued", conclusion: null, labels: LABELS, runnerName: null, runId: 10_000 + i, runAttempt: 1, name: `base-${i}`, createdAt: now, repository: REPO, duration, original: i }, true));
  }
  const arrivals = events.map((e) => e.t);
  const tick = (every: number, fn: () => Promise<unknown>) => {
    const loop = async () => {
      await fn();
      if (finished.size + cancelled.size < sc.jobs) schedule(now + every, loop);
    };
    schedule(every, loop);
  };
  tick(MIN, () => runScaleUp(deps));
  tick(5 * MIN, () => runHousekeeping(deps));

  const limit = 4 * 24 * 60 * MIN;
  while (events.length > 0 && now < limit) {
    const ev = events.shift()!;
    now = ev.t;
    await ev.fn();
    if (finished.size + cancelled.size >= sc.jobs && running.size === 0) break;
  }
  const makespan = Math.max(...finished.values()) - Math.min(...arrivals);

  // After the last job: housekeeping runs (past the registration timeout) and what is left is an orphan.
  now += 15 * MIN;
  await runHousekeeping(deps);
  now += 5 * MIN;
  await runHousekeeping(deps);
  const orphans = ec2.active().length + params.store.size + [...github.runners.values()].filter((r) => r.name.startsWith("strata-")).length;

  // Ideal: each job in arrival order starts the instant a slot frees, with the same boot time.
  const order = arrivals.map((t, i) => ({ t, d: durations[i]! })).sort((a, b) => a.t - b.t);
  const slots = Array.from({ length: sc.maxRunners }, () => 0);
  let idealEnd = 0;
  let idealServed = 0;
  for (const j of order) {
    slots.sort((a, b) => a - b);
    const start = Math.max(j.t, slots[0]!);
    if (start + sc.bootMin * MIN - j.t > 24 * 60 * MIN) continue; // GitHub would have cancelled it
    idealServed++;
    const end = start + sc.bootMin * MIN + j.d;
    slots[0] = end;
    idealEnd = Math.max(idealEnd, end);
  }
  return {
    served: finished.size,
    cancelledByGitHub: cancelled.size,
    idealServed,
    jobs: sc.jobs,
    lost: sc.jobs - finished.size - cancelled.size,
    maxActive: ec2.peakActive(pool.name),
    cap: sc.maxRunners,
    duplicateLaunches,
    orphans,
    interruptions,
    reruns: github.reruns.length,
    spotLaunchesForReruns,
    makespanMin: Math.round(makespan / MIN),
    idealMakespanMin: Math.round((idealEnd - Math.min(...arrivals)) / MIN),
    maxQueueWaitMin: Math.round(maxQueueWait / MIN),
    launches,
    wallMs: Math.round(performance.now() - wall),
  };
}

export const SCENARIOS: Scenario[] = [
  { name: "45 base jobs of 1-6 h into a cap of 8", jobs: 45, maxRunners: 8, durationMin: [60, 360], arrivalSpreadMin: 0, bootMin: 3, capacityErrorRate: 0, interruptionRate: 0, githubErrorRate: 0, missedWebhookRate: 0, duplicateDeliveries: false, seed: 45 },
  { name: "45 base jobs of 1-6 h into a cap of 4", jobs: 45, maxRunners: 4, durationMin: [60, 360], arrivalSpreadMin: 0, bootMin: 3, capacityErrorRate: 0, interruptionRate: 0, githubErrorRate: 0, missedWebhookRate: 0, duplicateDeliveries: false, seed: 45 },
  { name: "45 base jobs of 1-6 h into a cap of 4, arriving over 48 h", jobs: 45, maxRunners: 4, durationMin: [60, 360], arrivalSpreadMin: 48 * 60, bootMin: 3, capacityErrorRate: 0, interruptionRate: 0, githubErrorRate: 0, missedWebhookRate: 0, duplicateDeliveries: false, seed: 45 },
  { name: "1,000 jobs into a cap of 20, 30% capacity errors, 20% interruptions, 10% GitHub 5xx/429, 5% missed webhooks, every delivery twice", jobs: 1000, maxRunners: 20, durationMin: [5, 30], arrivalSpreadMin: 8 * 60, bootMin: 3, capacityErrorRate: 0.3, interruptionRate: 0.2, githubErrorRate: 0.1, missedWebhookRate: 0.05, duplicateDeliveries: true, seed: 1000 },
];

export function describeResult(r: SimResult): Record<string, string> {
  return {
    served: `${r.served}/${r.jobs} (ideal scheduler: ${r.idealServed}/${r.jobs})`,
    "cancelled by GitHub (24 h)": String(r.cancelledByGitHub),
    lost: String(r.lost),
    "max active": `${r.maxActive} (cap ${r.cap})`,
    "duplicate launches": String(r.duplicateLaunches),
    "orphans after housekeeping": String(r.orphans),
    "re-runs / interruptions": `${r.reruns} / ${r.interruptions} (spot launches for re-runs: ${r.spotLaunchesForReruns})`,
    makespan: `${r.makespanMin} min, ideal ${r.idealMakespanMin} min, ratio ${(r.makespanMin / r.idealMakespanMin).toFixed(3)}${r.served === r.idealServed ? "" : " (different job sets: not comparable)"}`,
    "longest queue wait": `${r.maxQueueWaitMin} min`,
    "simulated in": `${r.wallMs} ms (${r.launches} launches)`,
  };
}

export async function benchFleet(): Promise<[string, string][]> {
  const rows: [string, string][] = [];
  for (const sc of SCENARIOS) {
    const r = await simulate(sc);
    for (const [k, v] of Object.entries(describeResult(r))) rows.push([`fleet sim: ${sc.name}: ${k}`, v]);
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const sc of SCENARIOS) {
    console.log(`\n${sc.name}`);
    const r = await simulate(sc);
    for (const [k, v] of Object.entries(describeResult(r))) console.log(`  ${k.padEnd(28)} ${v}`);
  }
}
