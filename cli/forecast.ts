import { readFileSync } from "node:fs";
import { z } from "zod";
import { DEFAULT_INSTANCE_TYPES, parseFleetConfig } from "../components/fleet/config.ts";
import { MatrixError } from "../matrix/errors.ts";
import {
  appendRecord,
  BuildLedgerSchema,
  BuildRecordSchema,
  cachedStepCount,
  ForecastConfigSchema,
  forecastHeadline,
  forecastRebuild,
  formatDuration,
  formatForecast,
  priceTable,
  type BuildRecord,
  type Forecast,
  type ForecastOptions,
} from "../matrix/forecast.ts";
import type { ImpactReport } from "../matrix/impact.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { checkRunnerLabels, fleetPools, WorkflowError } from "../workflows/generate.ts";
import { readLedger, RegistryClient, RegistryError, writeLedger } from "./registry.ts";
import { parseFlags, usageError } from "./args.ts";
import { readStackFile } from "./stack.ts";

/** CLI options every forecasting command takes (impact, plan --recorded). */
export const FORECAST_OPTIONS = {
  history: { type: "string" },
  "history-registry": { type: "string" },
} as const;

export const FORECAST_USAGE = `  --history FILE            build records to forecast from: a ledger, or a JSON list of ledgers or records
  --history-registry HOST[/PREFIX]
                            read each base's build records from HOST/PREFIX/cache:buildrecord-<base> (PREFIX
                            default: the stack's strata:registry.prefix, else strata)`;

/** `HOST[:PORT][/PREFIX]` → host and repository prefix. */
export function registryTarget(arg: string, stack: Record<string, unknown>): { host: string; prefix: string } {
  const slash = arg.indexOf("/");
  const host = slash === -1 ? arg : arg.slice(0, slash);
  const prefix = slash === -1 ? (((stack["strata:registry"] ?? {}) as { prefix?: string }).prefix ?? "strata") : arg.slice(slash + 1);
  if (!/^[A-Za-z0-9.-]+(:\d+)?$/.test(host) || !/^[a-z0-9]+([._/-][a-z0-9]+)*$/.test(prefix)) {
    throw new MatrixError([{ file: "command line", line: 1, col: 1, message: `'${arg}' is not a registry HOST[:PORT][/PREFIX]`, fix: "e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/strata or 127.0.0.1:5000" }]);
  }
  return { host, prefix };
}

/** Pool instance types and prices for a stack: strata:forecast.prices over the defaults, the base pool's types. */
export function forecastOptions(stack: string, config: Record<string, unknown>): ForecastOptions {
  const where = `Pulumi.${stack}.yaml`;
  const parsed = ForecastConfigSchema.safeParse(config["strata:forecast"] ?? {});
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new MatrixError([{ file: where, line: 1, col: 1, message: `strata:forecast.${i.path.map(String).join(".")}: ${i.message}`, fix: "prices look like strata:forecast: { prices: { g6.4xlarge: { onDemand: 1.3232, spot: 0.6, gpus: 1 } } }" }]);
  }
  let instanceTypes: readonly string[] = DEFAULT_INSTANCE_TYPES;
  const fleetRaw = config["strata:fleet"];
  const fleet = fleetRaw === undefined ? undefined : parseFleetConfig(fleetRaw, where);
  if (fleet?.enabled) {
    const labels = ((config["strata:github"] ?? {}) as { runnerLabels?: string[] }).runnerLabels;
    const pools = fleetPools(fleetRaw, where);
    let name = fleet.pools[0]?.name;
    try {
      if (labels) name = checkRunnerLabels(labels, pools).name;
    } catch (err) {
      if (!(err instanceof WorkflowError)) throw err;
    }
    instanceTypes = fleet.pools.find((p) => p.name === name)?.instanceTypes ?? instanceTypes;
  }
  return { instanceTypes, prices: priceTable(parsed.data.prices) };
}

/** Records from `--history FILE`: a ledger, a list of ledgers, or a list of records. */
export function historyFromFile(file: string): BuildRecord[] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new MatrixError([{ file, line: 1, col: 1, message: `cannot read the build history (${(err as Error).message})`, fix: "pass a ledger written by `strata record` or a JSON list of them" }]);
  }
  const parsed = z.union([BuildLedgerSchema, z.array(BuildLedgerSchema), z.array(BuildRecordSchema)]).safeParse(data);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new MatrixError([{ file, line: 1, col: 1, message: `not a build history: ${i.path.map(String).join(".") || "(top)"}: ${i.message}`, fix: "pass a ledger written by `strata record` or a JSON list of them" }]);
  }
  const v = parsed.data;
  if (!Array.isArray(v)) return v.records as BuildRecord[];
  return v.flatMap((x) => ("records" in x ? x.records : [x])) as BuildRecord[];
}

/** The forecast for an impact report's rebuilt bases (head plan), from the history the options name. */
export async function forecastForReport(report: ImpactReport, head: Pick<BuildPlan, "bases">, values: { history?: string; "history-registry"?: string; stack?: string }, allNames: string[] = []): Promise<Forecast> {
  const stack = values.stack ?? "dev";
  const { config } = readStackFile(stack);
  const opts = forecastOptions(stack, config);
  const rebuilt = new Set(report.rebuild.bases);
  const bases = head.bases.filter((b) => rebuilt.has(b.name)).map((b) => ({ name: b.name, tag: b.tag, dockerfile: b.dockerfile, target: b.target, args: b.args }));
  let history: BuildRecord[] = [];
  if (values.history) history.push(...historyFromFile(values.history));
  if (values["history-registry"]) {
    const { host, prefix } = registryTarget(values["history-registry"], config);
    const client = new RegistryClient(host);
    // Every base the matrix names (similar bases need their records too), a few at a time.
    const names = [...new Set([...head.bases.map((b) => b.name), ...allNames])];
    for (let i = 0; i < names.length; i += 8) {
      const ledgers = await Promise.all(names.slice(i, i + 8).map((n) => readLedger(client, `${prefix}/cache`, n)));
      for (const l of ledgers) if (l) history.push(...l.records);
    }
  }
  history = history.filter((r, i, all) => all.findIndex((o) => o.base === r.base && o.startedAt === r.startedAt && o.tag === r.tag) === i);
  return forecastRebuild(bases, history, opts);
}

/** The JSON form: the forecast plus its headline and each base's duration in words. */
export function forecastJson(f: Forecast): Forecast & { headline: string; bases: (Forecast["bases"][number] & { duration: string | null })[] } {
  return { ...f, headline: forecastHeadline(f), bases: f.bases.map((b) => ({ ...b, duration: b.seconds === null ? null : `about ${formatDuration(b.seconds)}` })) };
}

/** Text lines for the forecast; with no history source given, says how to give one. */
export function forecastText(f: Forecast, values: { history?: string; "history-registry"?: string }): string {
  if (f.bases.length === 0) return "";
  const lines = formatForecast(f);
  if (!values.history && !values["history-registry"] && f.bases.length > 0) lines.push("  (no build records read: pass --history-registry HOST[/PREFIX] or --history FILE)");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------------------
// strata record

export const RECORD_USAGE = `Usage:
  strata record --base NAME --registry HOST[/PREFIX] --started-at ISO [--finished-at ISO] [--build-log FILE]
                [--target BAKE_TARGET] [--instance-type TYPE] [--lifecycle spot|on-demand] [--outcome passed|gate-failed|built]
                [--matrix PATH] [--stack NAME] [--json]

Appends what a base build cost to the base's build-record ledger, an OCI artifact in the cache repository
(HOST/PREFIX/cache:buildrecord-<base>, the last 20 builds), where \`strata impact --history-registry\` reads it.
--build-log is the build's --progress=plain output (cached and total steps are counted from it); --finished-at
defaults to now; --instance-type/--lifecycle come from the instance metadata on the fleet (empty: not EC2).`;

/** `strata record`: one build's record, appended to its base's ledger in the registry. */
export async function recordCommand(args: string[]): Promise<number> {
  const flags = parseFlags("record", RECORD_USAGE, args, {
    base: { type: "string" },
    registry: { type: "string" },
    "started-at": { type: "string" },
    "finished-at": { type: "string" },
    "build-log": { type: "string" },
    target: { type: "string" },
    "instance-type": { type: "string" },
    lifecycle: { type: "string" },
    outcome: { type: "string" },
    matrix: { type: "string" },
    stack: { type: "string" },
    json: { type: "boolean" },
  });
  if (flags.exit !== undefined) return flags.exit;
  const v: Record<string, string | boolean | undefined> = flags.values;
  const usage = (msg: string) => usageError("record", RECORD_USAGE, msg);
  if (!v.base || !v.registry || !v["started-at"]) return usage("--base, --registry and --started-at are required");
  const started = Date.parse(v["started-at"] as string);
  const finished = v["finished-at"] ? Date.parse(v["finished-at"] as string) : Date.now();
  if (!Number.isFinite(started) || !Number.isFinite(finished) || finished < started) return usage(`--started-at/--finished-at must be ISO times, start before finish (got ${v["started-at"]}, ${v["finished-at"] ?? "now"})`);
  const lifecycle = (v.lifecycle as string | undefined) || null;
  if (lifecycle !== null && lifecycle !== "spot" && lifecycle !== "on-demand") return usage(`--lifecycle must be spot or on-demand, not '${lifecycle}'`);
  const outcome = ((v.outcome as string | undefined) ?? "built") as BuildRecord["outcome"];
  if (!["passed", "gate-failed", "built"].includes(outcome)) return usage(`--outcome must be passed, gate-failed or built, not '${outcome}'`);
  const stack = (v.stack as string | undefined) ?? "dev";
  const { config } = readStackFile(stack);
  const plan = loadMatrix((v.matrix as string | undefined) ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml");
  const base = plan.bases.find((b) => b.name === v.base);
  if (!base) return usage(`no base '${v.base}' in the matrix (bases: ${plan.bases.map((b) => b.name).slice(0, 10).join(", ")})`);
  let steps: { cachedSteps: number; totalSteps: number } | null = null;
  if (v["build-log"]) {
    let log: string;
    try {
      log = readFileSync(v["build-log"] as string, "utf8");
    } catch (err) {
      return usage(`cannot read --build-log: ${(err as Error).message}`);
    }
    steps = cachedStepCount(log, (v.target as string | undefined) ?? `base-${base.name}`);
  }
  const record: BuildRecord = {
    base: base.name,
    tag: base.tag,
    dockerfile: base.dockerfile,
    target: base.target,
    args: base.args,
    ...(base.cuda ? { cuda: base.cuda } : {}),
    startedAt: new Date(started).toISOString(),
    wallSeconds: Math.round((finished - started) / 1000),
    instanceType: (v["instance-type"] as string | undefined) || null,
    lifecycle,
    cachedSteps: steps?.cachedSteps ?? null,
    totalSteps: steps?.totalSteps ?? null,
    outcome,
  };
  try {
    const { host, prefix } = registryTarget(v.registry as string, config);
    const client = new RegistryClient(host);
    const repo = `${prefix}/cache`;
    const ledger = appendRecord(await readLedger(client, repo, base.name), record);
    const digest = await writeLedger(client, repo, ledger);
    process.stdout.write(v.json ? JSON.stringify({ ref: `${host}/${repo}:buildrecord-${base.name}@${digest}`, record, records: ledger.records.length }, null, 2) + "\n" : `strata record: ${base.name} (${record.wallSeconds} s, ${record.cachedSteps ?? "?"}/${record.totalSteps ?? "?"} steps cached) → ${host}/${repo}:buildrecord-${base.name} (${ledger.records.length} record(s))\n`);
    return 0;
  } catch (err) {
    if (err instanceof RegistryError) {
      process.stderr.write(`strata record: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
