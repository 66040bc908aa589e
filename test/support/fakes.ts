/**
 * In-memory fakes of the ports, for decision tests and the bench's simulation (AWS itself is
 * tested against moto_server). Not bundled into the Lambdas.
 * Every call yields to the event loop for a random short while (seeded), so concurrent
 * handler calls really interleave; state changes are atomic per call, like AWS.
 */
import { randomBytes } from "node:crypto";
import { TAGS } from "../../scaler/logic.ts";
import {
  ACTIVE_STATES,
  LaunchError,
  type Ec2Port,
  type GitHubJob,
  type GitHubPort,
  type GitHubRunner,
  type InstanceQuery,
  type InstanceState,
  type JitRequest,
  type JitRunner,
  type LaunchRequest,
  type ParamInfo,
  type ParamPort,
  type QueuedJob,
  type QueueMessage,
  type QueuePort,
  type RunnerInstance,
  type StatePort,
} from "../../scaler/ports.ts";

/** Small deterministic PRNG (mulberry32). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FakeTiming {
  /** Max random delay per call in ms (0 = just a macrotask yield; negative = a microtask only, for simulated clocks). */
  jitterMs: number;
  random: () => number;
}

async function yieldFor(t: FakeTiming): Promise<void> {
  if (t.jitterMs < 0) return Promise.resolve();
  const ms = t.jitterMs > 0 ? Math.floor(t.random() * t.jitterMs) : 0;
  await new Promise((r) => setTimeout(r, ms));
}

export interface FakeInstance {
  id: string;
  state: InstanceState;
  launchTime: number;
  tags: Record<string, string>;
  instanceType: string;
  subnetId: string;
  spot: boolean;
}

export class FakeEc2 implements Ec2Port {
  readonly instances = new Map<string, FakeInstance>();
  readonly launchAttempts: LaunchRequest[] = [];
  /** Error code for a placement, or undefined if it has capacity. */
  capacity: (req: LaunchRequest) => string | undefined = () => undefined;
  /** Throw from the next calls of a method. */
  failures: Partial<Record<"list" | "launch" | "terminate" | "release", Error>> = {};
  private peak = new Map<string, number>();

  constructor(
    readonly tagKey = "strata:pool",
    readonly now: () => number = Date.now,
    readonly timing: FakeTiming = { jitterMs: 2, random: seeded(1) },
  ) {}

  /** Add an instance directly (pre-existing fleet). */
  seed(inst: Partial<FakeInstance> & { tags: Record<string, string> }): FakeInstance {
    const full: FakeInstance = {
      id: inst.id ?? `i-${randomBytes(8).toString("hex").slice(0, 17)}`,
      state: inst.state ?? "running",
      launchTime: inst.launchTime ?? this.now(),
      tags: inst.tags,
      instanceType: inst.instanceType ?? "g5.xlarge",
      subnetId: inst.subnetId ?? "subnet-0a",
      spot: inst.spot ?? false,
    };
    this.instances.set(full.id, full);
    this.track();
    return full;
  }

  active(pool?: string): FakeInstance[] {
    return [...this.instances.values()].filter((i) => (ACTIVE_STATES as readonly string[]).includes(i.state) && (pool === undefined || i.tags[this.tagKey] === pool));
  }

  /** Highest number of simultaneously active instances ever seen in a pool. */
  peakActive(pool: string): number {
    return this.peak.get(pool) ?? 0;
  }

  private track(): void {
    const counts = new Map<string, number>();
    for (const i of this.active()) {
      const p = i.tags[this.tagKey];
      if (p !== undefined) counts.set(p, (counts.get(p) ?? 0) + 1);
    }
    for (const [p, n] of counts) if (n > (this.peak.get(p) ?? 0)) this.peak.set(p, n);
  }

  private view(i: FakeInstance): RunnerInstance {
    const t = i.tags;
    return {
      id: i.id,
      state: i.state,
      launchTime: i.launchTime,
      ...(t[this.tagKey] !== undefined ? { pool: t[this.tagKey] } : {}),
      ...(t[TAGS.jobId] !== undefined ? { jobId: t[TAGS.jobId] } : {}),
      ...(t[TAGS.delivery] !== undefined ? { delivery: t[TAGS.delivery] } : {}),
      ...(t[TAGS.runnerName] !== undefined ? { runnerName: t[TAGS.runnerName] } : {}),
    };
  }

  private fail(op: keyof FakeEc2["failures"]): void {
    const e = this.failures[op];
    if (e) throw e;
  }

  async list(q: InstanceQuery): Promise<RunnerInstance[]> {
    await yieldFor(this.timing);
    this.fail("list");
    const states = q.states ?? ACTIVE_STATES;
    return [...this.instances.values()]
      .filter(
        (i) =>
          i.tags[this.tagKey] !== undefined &&
          states.includes(i.state) &&
          (q.pool === undefined || i.tags[this.tagKey] === q.pool) &&
          (q.instanceIds === undefined || q.instanceIds.includes(i.id)) &&
          (q.jobId === undefined || i.tags[TAGS.jobId] === q.jobId) &&
          (q.delivery === undefined || i.tags[TAGS.delivery] === q.delivery),
      )
      .map((i) => this.view(i));
  }

  async launch(req: LaunchRequest): Promise<string> {
    // Like EC2: the launch time is taken when the request arrives and has whole-second
    // resolution, but the instance only becomes visible when the call completes. So the
    // "oldest first" order differs from the order in which launches become visible.
    const launchTime = Math.floor(this.now() / 1000) * 1000;
    await yieldFor(this.timing);
    this.launchAttempts.push(req);
    this.fail("launch");
    const code = this.capacity(req);
    if (code) throw new LaunchError(code, `fake: ${code} for ${req.instanceType} in ${req.subnetId}`);
    await yieldFor(this.timing);
    const inst = this.seed({ state: "pending", tags: { ...req.tags }, instanceType: req.instanceType, subnetId: req.subnetId, spot: req.spot, launchTime });
    return inst.id;
  }

  async terminate(ids: string[]): Promise<void> {
    await yieldFor(this.timing);
    this.fail("terminate");
    for (const id of ids) {
      const i = this.instances.get(id);
      if (i && i.state !== "terminated") i.state = "terminated";
    }
  }

  async release(ids: string[]): Promise<void> {
    await yieldFor(this.timing);
    this.fail("release");
    for (const id of ids) {
      const i = this.instances.get(id);
      if (!i) continue;
      delete i.tags[TAGS.jobId];
      delete i.tags[TAGS.delivery];
      if (i.state !== "terminated") i.state = "terminated";
    }
  }

  /** Simulate boot: instances move from pending to running. */
  boot(): void {
    for (const i of this.instances.values()) if (i.state === "pending") i.state = "running";
  }
}

export class FakeParams implements ParamPort {
  readonly store = new Map<string, { value: string; lastModified: number }>();
  failures: Partial<Record<"put" | "delete" | "list", Error>> = {};
  /** Called after every successful put (e.g. to check invariants). */
  onPut: (name: string) => void = () => {};

  constructor(
    readonly now: () => number = Date.now,
    readonly timing: FakeTiming = { jitterMs: 2, random: seeded(2) },
  ) {}

  async put(name: string, value: string): Promise<void> {
    await yieldFor(this.timing);
    if (this.failures.put) throw this.failures.put;
    if (this.store.has(name)) throw Object.assign(new Error(`ParameterAlreadyExists: ${name}`), { name: "ParameterAlreadyExists" });
    this.store.set(name, { value, lastModified: this.now() });
    this.onPut(name);
  }

  async delete(name: string): Promise<boolean> {
    await yieldFor(this.timing);
    if (this.failures.delete) throw this.failures.delete;
    return this.store.delete(name);
  }

  async list(prefix: string): Promise<ParamInfo[]> {
    await yieldFor(this.timing);
    if (this.failures.list) throw this.failures.list;
    return [...this.store.entries()].filter(([n]) => n.startsWith(prefix) && !n.slice(prefix.length).includes("/")).map(([name, v]) => ({ name, lastModified: v.lastModified }));
  }
}

/** In-memory GitHub for decision tests and the bench (the HTTP side is tested against github-server.ts). */
export class FakeGitHub implements GitHubPort {
  readonly runners = new Map<number, GitHubRunner & { labels: string[] }>();
  readonly jitRequests: JitRequest[] = [];
  /** Jobs by id, with their repository. */
  readonly jobs = new Map<number, GitHubJob & { repository: string }>();
  readonly reruns: number[] = [];
  failures: Partial<Record<"jit" | "list" | "delete" | "job" | "rerun" | "queued", Error>> = {};
  /** Called before every call; throw from it to inject faults (the bench's 5xx/429). */
  beforeCall: (what: string) => void = () => {};
  /** Called after a re-run created the new attempt (the bench delivers its `queued` webhook). */
  onRerun: (job: GitHubJob & { repository: string }) => void = () => {};
  private nextId = 1;
  private nextJobId = 1_000_000;

  addJob(repository: string, job: Partial<GitHubJob> & { id: number; labels: string[] }): GitHubJob & { repository: string } {
    const full = { status: "queued", conclusion: null, runnerName: null, runId: job.id, runAttempt: 1, name: "build", createdAt: Date.now(), ...job, repository };
    this.jobs.set(full.id, full);
    return full;
  }

  async getJob(repository: string, jobId: number): Promise<GitHubJob> {
    this.beforeCall("job");
    if (this.failures.job) throw this.failures.job;
    const j = this.jobs.get(jobId);
    if (!j || j.repository !== repository) throw Object.assign(new Error("Not Found"), { status: 404 });
    const { repository: _r, ...job } = j;
    return { ...job };
  }

  async rerunJob(repository: string, jobId: number): Promise<void> {
    this.beforeCall("rerun");
    if (this.failures.rerun) throw this.failures.rerun;
    const j = this.jobs.get(jobId);
    if (!j || j.repository !== repository) throw Object.assign(new Error("Not Found"), { status: 404 });
    if (j.status !== "completed") throw Object.assign(new Error("job is not completed"), { status: 403 });
    this.reruns.push(jobId);
    const next = this.addJob(repository, { id: this.nextJobId++, labels: j.labels, runId: j.runId, runAttempt: j.runAttempt + 1, name: j.name, createdAt: j.createdAt });
    this.onRerun(next);
  }

  async listQueuedJobs(repository: string): Promise<GitHubJob[]> {
    this.beforeCall("queued");
    if (this.failures.queued) throw this.failures.queued;
    return [...this.jobs.values()].filter((j) => j.repository === repository && j.status === "queued").map(({ repository: _r, ...j }) => ({ ...j }));
  }

  async generateJitConfig(req: JitRequest): Promise<JitRunner> {
    await Promise.resolve();
    this.beforeCall("jit");
    this.jitRequests.push(req);
    if (this.failures.jit) throw this.failures.jit;
    const id = this.nextId++;
    this.runners.set(id, { id, name: req.name, status: "offline", busy: false, labels: req.labels });
    return { runnerId: id, encodedJitConfig: Buffer.from(JSON.stringify({ runner: req.name, id })).toString("base64") };
  }

  async listRunners(name?: string): Promise<GitHubRunner[]> {
    if (this.failures.list) throw this.failures.list;
    return [...this.runners.values()].filter((r) => name === undefined || r.name === name).map(({ id, name: n, status, busy }) => ({ id, name: n, status, busy }));
  }

  async deleteRunner(id: number): Promise<void> {
    if (this.failures.delete) throw this.failures.delete;
    this.runners.delete(id);
  }
}

/** SSM-like state documents in memory. */
export class FakeState implements StatePort {
  readonly docs = new Map<string, string>();
  async create(name: string, value: string): Promise<boolean> {
    if (this.docs.has(name)) return false;
    this.docs.set(name, value);
    return true;
  }
  async put(name: string, value: string): Promise<void> {
    this.docs.set(name, value);
  }
  async get(name: string): Promise<string | undefined> {
    return this.docs.get(name);
  }
  async list(prefix: string): Promise<{ name: string; value: string }[]> {
    return [...this.docs].filter(([n]) => n.startsWith(prefix)).map(([name, value]) => ({ name, value }));
  }
  async delete(name: string): Promise<boolean> {
    return this.docs.delete(name);
  }
}

interface FakeMessage {
  id: number;
  job: QueuedJob;
  visibleAt: number;
  receiveCount: number;
  inFlight: boolean;
}

/**
 * SQS FIFO semantics in memory, on an injected clock: one message group per queue (the pool),
 * deduplication by id for 5 minutes, and no message is returned while an earlier one of its group
 * is in flight.
 */
export class FakeQueue implements QueuePort {
  private readonly queues = new Map<string, FakeMessage[]>();
  private readonly dedup = new Map<string, number>();
  private nextId = 1;
  sent = 0;
  deduplicated = 0;

  constructor(readonly now: () => number = Date.now) {}

  messages(queueUrl: string): readonly FakeMessage[] {
    return this.queues.get(queueUrl) ?? [];
  }

  async send(queueUrl: string, job: QueuedJob, dedupId = String(job.jobId)): Promise<void> {
    const key = `${queueUrl} ${dedupId}`;
    const t = this.dedup.get(key);
    if (t !== undefined && this.now() - t < 5 * 60_000) {
      this.deduplicated++;
      return;
    }
    this.dedup.set(key, this.now());
    this.sent++;
    const q = this.queues.get(queueUrl) ?? [];
    q.push({ id: this.nextId++, job: structuredClone(job), visibleAt: 0, receiveCount: 0, inFlight: false });
    this.queues.set(queueUrl, q);
  }

  async receive(queueUrl: string, max: number, visibilitySeconds: number): Promise<QueueMessage[]> {
    const q = this.queues.get(queueUrl) ?? [];
    const out: QueueMessage[] = [];
    for (const m of q) {
      if (out.length >= max) break;
      if (m.inFlight && this.now() < m.visibleAt) break; // FIFO: the group waits behind an in-flight message
      m.inFlight = true;
      m.visibleAt = this.now() + visibilitySeconds * 1000;
      m.receiveCount++;
      out.push({ job: structuredClone(m.job), receipt: String(m.id), receiveCount: m.receiveCount });
    }
    return out;
  }

  async delete(queueUrl: string, receipt: string): Promise<void> {
    const q = this.queues.get(queueUrl) ?? [];
    this.queues.set(queueUrl, q.filter((m) => String(m.id) !== receipt));
  }

  async retryLater(queueUrl: string, receipt: string, seconds: number): Promise<void> {
    const m = (this.queues.get(queueUrl) ?? []).find((x) => String(x.id) === receipt);
    if (m) m.visibleAt = this.now() + seconds * 1000;
  }

  /** When the earliest hidden message becomes visible again (the bench schedules a wake-up then). */
  nextVisibleAt(): number | undefined {
    let t: number | undefined;
    for (const q of this.queues.values()) for (const m of q) if (m.inFlight && (t === undefined || m.visibleAt < t)) t = m.visibleAt;
    return t;
  }
}
