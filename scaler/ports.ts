/**
 * Ports: the few cloud operations the scaler needs, as small interfaces.
 * AWS SDK v3 implementations live in aws.ts, the GitHub one in github.ts,
 * in-memory fakes in test/support/fakes.ts. The decision code (core.ts, logic.ts)
 * only ever sees these interfaces.
 */

/** EC2 instance states that still occupy a slot in a pool. */
export const ACTIVE_STATES = ["pending", "running", "stopping", "stopped"] as const;
export type InstanceState = (typeof ACTIVE_STATES)[number] | "shutting-down" | "terminated";

export interface RunnerInstance {
  id: string;
  state: InstanceState;
  /** Launch time in epoch milliseconds. */
  launchTime: number;
  pool?: string;
  jobId?: string;
  delivery?: string;
  runnerName?: string;
}

export interface InstanceQuery {
  pool?: string;
  instanceIds?: string[];
  jobId?: string;
  delivery?: string;
  /** Defaults to ACTIVE_STATES. */
  states?: readonly InstanceState[];
}

export interface LaunchRequest {
  launchTemplateId: string;
  instanceType: string;
  subnetId: string;
  spot: boolean;
  tags: Record<string, string>;
}

/** A failed RunInstances call, with the EC2 error code (e.g. "InsufficientInstanceCapacity"). */
export class LaunchError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "LaunchError";
  }
}

export interface Ec2Port {
  /** Instances carrying the pool tag key (any pool unless `pool` is given), filtered by the query. */
  list(query: InstanceQuery): Promise<RunnerInstance[]>;
  /** Launch one instance; resolves to its id or rejects with LaunchError. */
  launch(req: LaunchRequest): Promise<string>;
  terminate(ids: string[]): Promise<void>;
  /**
   * Give an instance up: drop its job/delivery tags (so a redelivery of the
   * same job is not mistaken for a replay) and terminate it.
   */
  release(ids: string[]): Promise<void>;
}

export interface ParamInfo {
  name: string;
  lastModified: number;
}

export interface ParamPort {
  /** Create a SecureString; rejects if it already exists. */
  put(name: string, value: string): Promise<void>;
  /** Delete; resolves true if this call deleted it, false if it did not exist. */
  delete(name: string): Promise<boolean>;
  /** Parameters directly under the prefix (prefix ends with "/"). */
  list(prefix: string): Promise<ParamInfo[]>;
}

export interface JitRequest {
  name: string;
  runnerGroupId: number;
  labels: string[];
  workFolder: string;
}

export interface JitRunner {
  runnerId: number;
  encodedJitConfig: string;
}

export interface GitHubRunner {
  id: number;
  name: string;
  status: string; // "online" | "offline"
  busy: boolean;
}

/** What GitHub reports about one workflow job (GET /repos/{owner}/{repo}/actions/jobs/{job_id}). */
export interface GitHubJob {
  id: number;
  /** "queued" | "in_progress" | "completed" | "waiting" | "requested" | "pending". */
  status: string;
  conclusion: string | null;
  labels: string[];
  runnerName: string | null;
  runId: number;
  runAttempt: number;
  name: string;
  /** Epoch ms. */
  createdAt: number;
}

export interface GitHubPort {
  generateJitConfig(req: JitRequest): Promise<JitRunner>;
  listRunners(name?: string): Promise<GitHubRunner[]>;
  deleteRunner(id: number): Promise<void>;
  /** One job's status; `repository` is "owner/name". */
  getJob(repository: string, jobId: number): Promise<GitHubJob>;
  /** Re-run one job (a new attempt of its run, with a new job id). */
  rerunJob(repository: string, jobId: number): Promise<void>;
  /** Jobs of the repository's queued workflow runs that are themselves still queued. */
  listQueuedJobs(repository: string): Promise<GitHubJob[]>;
}

/** A job waiting in a pool's queue for an instance. */
export interface QueuedJob {
  jobId: number;
  /** "owner/name". */
  repository: string;
  pool: string;
  runId: number;
  runAttempt: number;
  name: string;
  /** When GitHub queued the job (epoch ms): it cancels queued jobs after 24 h. */
  queuedAt: number;
  /** Why it was enqueued: a webhook delivery, or reconciliation (a missed webhook). */
  source: "webhook" | "reconcile";
}

export interface QueueMessage {
  job: QueuedJob;
  receipt: string;
  /** How often this message has been received, this time included. */
  receiveCount: number;
}

/**
 * A pool's FIFO queue. `send` deduplicates by job id (within SQS's 5-minute window);
 * `receive` hides the messages until deleted or `retryLater`'s delay passes.
 */
export interface QueuePort {
  /** Deduplicated by `dedupId` (default: the job id) within SQS's 5-minute window. */
  send(queueUrl: string, job: QueuedJob, dedupId?: string): Promise<void>;
  receive(queueUrl: string, max: number, visibilitySeconds: number): Promise<QueueMessage[]>;
  delete(queueUrl: string, receipt: string): Promise<void>;
  /** Make a received message visible again after `seconds` (0: right away). */
  retryLater(queueUrl: string, receipt: string, seconds: number): Promise<void>;
}

/** Small JSON documents under the state prefix (SSM String parameters): breaker, interruptions, re-runs. */
export interface StatePort {
  /** Create; resolves false if it already exists (the atomic claim). */
  create(name: string, value: string): Promise<boolean>;
  put(name: string, value: string): Promise<void>;
  get(name: string): Promise<string | undefined>;
  /** Every document under the prefix (recursively), with its value. */
  list(prefix: string): Promise<{ name: string; value: string }[]>;
  delete(name: string): Promise<boolean>;
}

/** Wakes the scale-up consumer (asynchronous invoke); best effort. */
export type WakePort = () => Promise<void>;

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** One JSON line per record, which CloudWatch Logs Insights parses. */
export const jsonLogger: Logger = {
  info: (msg, fields) => console.log(JSON.stringify({ level: "info", msg, ...fields })),
  warn: (msg, fields) => console.warn(JSON.stringify({ level: "warn", msg, ...fields })),
  error: (msg, fields) => console.error(JSON.stringify({ level: "error", msg, ...fields })),
};

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
