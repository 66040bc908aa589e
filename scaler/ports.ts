/**
 * Ports: the few cloud operations the scaler needs, as small interfaces.
 * AWS SDK v3 implementations live in aws.ts, the GitHub one in github.ts,
 * in-memory fakes in testing/fakes.ts. The decision code (core.ts, logic.ts)
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

export interface GitHubPort {
  generateJitConfig(req: JitRequest): Promise<JitRunner>;
  listRunners(name?: string): Promise<GitHubRunner[]>;
  deleteRunner(id: number): Promise<void>;
}

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
