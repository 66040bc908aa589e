import { z } from "zod";

/**
 * Rebuild forecasts: what a base rebuild will take in time and money, from what earlier builds recorded. Pure: the
 * records come in (read from the registry by cli/forecast.ts), a forecast with its basis goes out. A number is
 * never given without the sentence that says where it came from.
 */

/** What one base build recorded about itself (written by `strata record` after the build). */
export interface BuildRecord {
  /** Base name in the matrix. */
  base: string;
  /** The identity tag that was built, e.g. `ampere-3f2a9c1d0b7e`. */
  tag: string;
  /** Dockerfile (relative to the matrix), target and build args of the build: what makes bases comparable. */
  dockerfile: string;
  target: string;
  args: Record<string, string>;
  /** The base's CUDA version, when it has one. */
  cuda?: string;
  /** When the build started (ISO 8601). */
  startedAt: string;
  /** Wall time of the build, seconds. */
  wallSeconds: number;
  /** EC2 instance type it ran on; null when not on EC2 (a developer machine, a test). */
  instanceType: string | null;
  /** `spot` or `on-demand`; null when not on EC2. */
  lifecycle: "spot" | "on-demand" | null;
  /** BuildKit steps taken from cache, and all steps; null when the build log did not show them. */
  cachedSteps: number | null;
  totalSteps: number | null;
  /** `passed`: the GPU gate passed; `gate-failed`: built, not published; `built`: no gate ran. */
  outcome: "passed" | "gate-failed" | "built";
}

export const BuildRecordSchema = z.strictObject({
  base: z.string().min(1),
  tag: z.string().min(1),
  dockerfile: z.string(),
  target: z.string(),
  args: z.record(z.string(), z.string()),
  cuda: z.string().optional(),
  startedAt: z.string().min(1),
  wallSeconds: z.number().nonnegative().finite(),
  instanceType: z.string().min(1).nullable(),
  lifecycle: z.enum(["spot", "on-demand"]).nullable(),
  cachedSteps: z.number().int().nonnegative().nullable(),
  totalSteps: z.number().int().nonnegative().nullable(),
  outcome: z.enum(["passed", "gate-failed", "built"]),
});

/** The build history of one base: its last records, oldest first. */
export interface BuildLedger {
  version: 1;
  base: string;
  records: BuildRecord[];
}

export const BuildLedgerSchema = z.strictObject({ version: z.literal(1), base: z.string().min(1), records: z.array(BuildRecordSchema).max(1000) });

/** Records a ledger keeps; older ones are dropped (a forecast uses the last few). */
export const LEDGER_MAX = 20;
/** Records of one base a forecast takes its median from. */
export const FORECAST_WINDOW = 5;

/** The ledger with `record` appended, trimmed to the last LEDGER_MAX records. */
export function appendRecord(ledger: BuildLedger | null, record: BuildRecord): BuildLedger {
  const records = [...(ledger?.records ?? []), record].slice(-LEDGER_MAX);
  return { version: 1, base: record.base, records };
}

/**
 * Build steps (RUN, COPY, ADD, WORKDIR) of a `--progress=plain` BuildKit log, and how many came from cache; with
 * `target`, only that bake target's steps (`[<target> stage n/m]`). Null when the log shows no step.
 */
export function cachedStepCount(log: string, target?: string): { cachedSteps: number; totalSteps: number } | null {
  const steps = new Set<string>();
  const cached = new Set<string>();
  // A bake of one target does not prefix step names with the target; a bake of several does.
  if (target !== undefined && !log.includes(`[${target} `)) target = undefined;
  for (const line of log.split("\n")) {
    // Lines may carry a prefix (e.g. Pulumi's diagnostics); the step id is `#N`.
    const m = /(?:^|\s)#(\d+) (\[[^\]]+\] .*|CACHED)\s*$/.exec(line);
    if (!m) continue;
    if (m[2] === "CACHED") cached.add(m[1]);
    else if (/^\[[^\]]*\] (RUN|COPY|ADD|WORKDIR) /.test(m[2]) && (target === undefined || m[2].startsWith(`[${target} `))) steps.add(m[1]);
  }
  if (steps.size === 0) return null;
  return { cachedSteps: [...cached].filter((id) => steps.has(id)).length, totalSteps: steps.size };
}

// ---------------------------------------------------------------------------------------------------------------
// Prices

/** An instance type's price per hour (USD) and its GPU count. */
export interface InstancePrice {
  onDemand: number;
  spot: number;
  gpus: number;
}

export const InstancePriceSchema = z.strictObject({
  onDemand: z.number().positive().finite(),
  spot: z.number().positive().finite(),
  gpus: z.number().int().positive(),
});

/**
 * Default prices: us-east-1 Linux on-demand list prices; spot as an assumed 45 % of on-demand (spot moves by the
 * hour and zone: set strata:forecast.prices to your own figures).
 */
export const DEFAULT_PRICES: Readonly<Record<string, InstancePrice>> = Object.fromEntries(
  (
    [
      ["g5.xlarge", 1.006, 1],
      ["g5.2xlarge", 1.212, 1],
      ["g5.4xlarge", 1.624, 1],
      ["g5.8xlarge", 2.448, 1],
      ["g5.12xlarge", 5.672, 4],
      ["g5.48xlarge", 16.288, 8],
      ["g6.xlarge", 0.8048, 1],
      ["g6.2xlarge", 0.9776, 1],
      ["g6.4xlarge", 1.3232, 1],
      ["g6.8xlarge", 2.0144, 1],
      ["g6.12xlarge", 4.6016, 4],
      ["g6.48xlarge", 13.3504, 8],
      ["g6e.xlarge", 1.861, 1],
      ["g6e.4xlarge", 3.004, 1],
      ["p4d.24xlarge", 32.7726, 8],
      ["p5.48xlarge", 98.32, 8],
    ] as const
  ).map(([type, onDemand, gpus]) => [type, { onDemand, spot: Math.round(onDemand * 0.45 * 10000) / 10000, gpus }]),
);

/** `strata:forecast` in the stack config. */
export const ForecastConfigSchema = z.strictObject({
  /** Per instance type: `{onDemand, spot, gpus}`, USD per hour; replaces the default entry of that type. Default none. */
  prices: z.record(z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, "must be an EC2 instance type such as g6.4xlarge"), InstancePriceSchema).default({}),
});
export type ForecastConfig = z.infer<typeof ForecastConfigSchema>;

/** The prices a forecast uses, each with where it came from. */
export interface PriceTable {
  prices: Record<string, InstancePrice>;
  source: Record<string, "default" | "config">;
}

export function priceTable(overrides: Record<string, InstancePrice> = {}): PriceTable {
  const prices: Record<string, InstancePrice> = { ...DEFAULT_PRICES, ...overrides };
  const source: Record<string, "default" | "config"> = {};
  for (const k of Object.keys(prices)) source[k] = k in overrides ? "config" : "default";
  return { prices, source };
}

// ---------------------------------------------------------------------------------------------------------------
// Forecast

/** A base about to be rebuilt, as the forecast needs it. */
export interface RebuildInput {
  name: string;
  tag: string;
  dockerfile: string;
  target: string;
  args: Record<string, string>;
}

export type BasisKind = "history" | "similar" | "none";

export interface BaseForecast {
  name: string;
  /** Predicted wall time, seconds; null with basis "none". */
  seconds: number | null;
  basisKind: BasisKind;
  /** Where the number comes from, in words. */
  basis: string;
  /** The base whose history was used (this one, or a similar one); null without history. */
  from: string | null;
  /** The records the median is of. */
  builds: number;
  /** The instance type it is priced on. */
  instanceType: string | null;
  gpuHours: number | null;
  /** USD, on spot and on on-demand; null when there is no duration or no price. */
  cost: { spot: number; onDemand: number } | null;
  /** Where the price comes from, in words. */
  priceBasis: string;
}

export interface Forecast {
  bases: BaseForecast[];
  total: {
    /** Bases with a forecast, and the names of those without. */
    forecast: number;
    noHistory: string[];
    seconds: number;
    gpuHours: number;
    /** Sums over the bases that have a cost; `priced` says how many. */
    spot: number;
    onDemand: number;
    priced: number;
  };
}

export interface ForecastOptions {
  /** Instance types of the pool that builds bases, in preference order (the fleet launches the first it can). */
  instanceTypes: readonly string[];
  prices: PriceTable;
}

/** The build arg that names the torch version (the reference Dockerfile's; a derived base may have none). */
const TORCH_ARG = "TORCH_VER";

/** A rebuild's forecast for each base, from the records of earlier builds (of any base). */
export function forecastRebuild(bases: readonly RebuildInput[], history: readonly BuildRecord[], opts: ForecastOptions): Forecast {
  const byBase = new Map<string, BuildRecord[]>();
  for (const r of history) byBase.set(r.base, [...(byBase.get(r.base) ?? []), r]);
  for (const list of byBase.values()) list.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
  const out = bases.map((b) => forecastOne(b, byBase, opts));
  const withTime = out.filter((f) => f.seconds !== null);
  const priced = out.filter((f) => f.cost !== null);
  return {
    bases: out,
    total: {
      forecast: withTime.length,
      noHistory: out.filter((f) => f.seconds === null).map((f) => f.name),
      seconds: sum(withTime.map((f) => f.seconds!)),
      gpuHours: sum(out.map((f) => f.gpuHours ?? 0)),
      spot: sum(priced.map((f) => f.cost!.spot)),
      onDemand: sum(priced.map((f) => f.cost!.onDemand)),
      priced: priced.length,
    },
  };
}

function forecastOne(b: RebuildInput, byBase: Map<string, BuildRecord[]>, opts: ForecastOptions): BaseForecast {
  const own = byBase.get(b.name) ?? [];
  let basisKind: BasisKind = "none";
  let from: string | null = null;
  let used: BuildRecord[] = [];
  let basis = "no history";
  if (own.length > 0) {
    const pick = window(own);
    used = pick.records;
    basisKind = "history";
    from = b.name;
    basis = `from ${plural(used.length, "earlier build")} of this base (median ${formatDuration(median(used.map((r) => r.wallSeconds)))}${onTypes(used)})${pick.note}`;
  } else {
    const similar = mostSimilar(b, byBase);
    if (similar) {
      const pick = window(similar.records);
      used = pick.records;
      basisKind = "similar";
      from = similar.base;
      basis = `from base \`${similar.base}\` (${similar.why}): median of ${plural(used.length, "build")}, ${formatDuration(median(used.map((r) => r.wallSeconds)))}${onTypes(used)}${pick.note}`;
    }
  }
  const seconds = used.length > 0 ? median(used.map((r) => r.wallSeconds)) : null;
  const instanceType = pricedType(used, opts);
  const price = instanceType ? opts.prices.prices[instanceType] : undefined;
  let priceBasis: string;
  if (!instanceType || !price) {
    const listed = opts.instanceTypes.length ? opts.instanceTypes.join(", ") : "(none)";
    priceBasis = `no price for the pool's instance types (${listed}): add them to strata:forecast.prices`;
  } else {
    priceBasis = `${instanceType} at ${money(price.spot)}/h spot, ${money(price.onDemand)}/h on-demand, ${plural(price.gpus, "GPU")} (${opts.prices.source[instanceType] === "config" ? "strata:forecast.prices" : "default price table"})`;
  }
  const hours = seconds === null ? null : seconds / 3600;
  return {
    name: b.name,
    seconds,
    basisKind,
    basis,
    from,
    builds: used.length,
    instanceType,
    gpuHours: hours !== null && price ? hours * price.gpus : null,
    cost: hours !== null && price ? { spot: hours * price.spot, onDemand: hours * price.onDemand } : null,
    priceBasis,
  };
}

/** The last FORECAST_WINDOW records, leaving out fully cached builds (a rebuild re-runs steps) unless all are. */
function window(records: BuildRecord[]): { records: BuildRecord[]; note: string } {
  const full = (r: BuildRecord) => r.cachedSteps !== null && r.totalSteps !== null && r.totalSteps > 0 && r.cachedSteps === r.totalSteps;
  const real = records.filter((r) => !full(r));
  const left = records.length - real.length;
  if (real.length === 0) return { records: records.slice(-FORECAST_WINDOW), note: "; every recorded build was fully cached, so this may be low" };
  return { records: real.slice(-FORECAST_WINDOW), note: left > 0 ? `; ${plural(left, "fully cached build")} left out` : "" };
}

/**
 * The other base whose builds say most about this one: same Dockerfile and target, fewest differing build args
 * (then the most records). Null when no recorded base shares the Dockerfile and target.
 */
function mostSimilar(b: RebuildInput, byBase: Map<string, BuildRecord[]>): { base: string; records: BuildRecord[]; why: string } | null {
  let best: { base: string; records: BuildRecord[]; diff: string[] } | null = null;
  for (const [name, records] of byBase) {
    if (name === b.name || records.length === 0) continue;
    const last = records[records.length - 1];
    if (last.dockerfile !== b.dockerfile || last.target !== b.target) continue;
    const keys = [...new Set([...Object.keys(last.args), ...Object.keys(b.args)])].sort();
    const diff = keys.filter((k) => last.args[k] !== b.args[k]);
    if (!best || diff.length < best.diff.length || (diff.length === best.diff.length && records.length > best.records.length) || (diff.length === best.diff.length && records.length === best.records.length && name < best.base)) {
      best = { base: name, records, diff };
    }
  }
  if (!best) return null;
  const last = best.records[best.records.length - 1];
  const sameTorch = TORCH_ARG in b.args && last.args[TORCH_ARG] === b.args[TORCH_ARG];
  const shown = best.diff.slice(0, 3).join(", ") + (best.diff.length > 3 ? ` and ${best.diff.length - 3} more` : "");
  const why = `same Dockerfile${sameTorch ? " and torch" : ""}${best.diff.length ? `, different ${shown}` : ", same build args"}`;
  return { base: best.base, records: best.records, why };
}

/** The instance type to price on: the one the used builds ran on most (if priced), else the pool's first priced type. */
function pricedType(used: BuildRecord[], opts: ForecastOptions): string | null {
  const counts = new Map<string, number>();
  for (const r of used) if (r.instanceType && opts.instanceTypes.includes(r.instanceType)) counts.set(r.instanceType, (counts.get(r.instanceType) ?? 0) + 1);
  const ran = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
  if (ran && opts.prices.prices[ran]) return ran;
  return opts.instanceTypes.find((t) => opts.prices.prices[t]) ?? opts.instanceTypes[0] ?? null;
}

function onTypes(used: BuildRecord[]): string {
  const types = [...new Set(used.map((r) => r.instanceType).filter((t): t is string => t !== null))].sort();
  return types.length ? ` on ${types.join(", ")}` : "";
}

// ---------------------------------------------------------------------------------------------------------------
// Text

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** `2 h 10 min`, `12 min`, `45 s`. */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return m ? `${h} h ${m} min` : `${h} h`;
}

/** `$0.0008`, `$0.42`, `$9.1`, `$27`: two significant digits under a dollar. */
export function money(usd: number): string {
  if (usd === 0) return "$0";
  if (usd < 1) return `$${usd.toPrecision(2)}`;
  if (usd < 10) return `$${(Math.round(usd * 10) / 10).toString()}`;
  return `$${Math.round(usd)}`;
}

function gpuHours(h: number): string {
  if (h === 0) return "0 GPU-hours";
  return h < 1 ? `${h.toPrecision(2)} GPU-hours` : `${(Math.round(h * 10) / 10).toString()} GPU-hours`;
}

/** One line for a job summary: "this change rebuilds 3 bases: about 6.5 GPU-hours, about $9 on spot ($20 on-demand)". */
export function forecastHeadline(f: Forecast): string {
  const n = f.bases.length;
  if (n === 0) return "this change rebuilds no base";
  const head = `this change rebuilds ${plural(n, "base")}`;
  if (f.total.forecast === 0) return `${head}: no history to forecast from`;
  const money_ = f.total.priced > 0 ? `, about ${money(f.total.spot)} on spot (${money(f.total.onDemand)} on-demand)` : "";
  const partial = f.total.noHistory.length ? `; not counted, no history: ${f.total.noHistory.join(", ")}` : "";
  return `${head}: about ${gpuHours(f.total.gpuHours)} (${formatDuration(f.total.seconds)} of builds)${money_}${partial}`;
}

/** The forecast as text lines (appended to `strata impact` and `strata plan --recorded`). */
export function formatForecast(f: Forecast): string[] {
  const out = ["", `Forecast: ${forecastHeadline(f)}`];
  for (const b of f.bases) {
    if (b.seconds === null) {
      out.push(`  ${b.name}: no history`);
      continue;
    }
    const cost = b.cost ? `, about ${money(b.cost.spot)} on spot / ${money(b.cost.onDemand)} on-demand` : "";
    out.push(`  ${b.name}: about ${formatDuration(b.seconds)}${cost}`);
    out.push(`    ${b.basis}`);
    out.push(`    price: ${b.priceBasis}`);
  }
  return out;
}
