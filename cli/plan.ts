import { readStackFile } from "./stack.ts";
import type { ProgramRun, RecordedResource } from "./program.ts";

/** What `strata plan --json` prints: the bases, runtimes and resources the program declared. */
export interface PlanReport {
  stack: string;
  matrix: string;
  registry: unknown;
  bases: {
    name: string;
    tag: string;
    identity: string;
    buildArgs: Record<string, string>;
    target: string;
    dockerfile: string;
    context: string;
    platforms: string[];
    consumers: string[];
  }[];
  runtimes: { name: string; base: string; tags: string[]; dockerfile: string; target: string; platforms: string[]; baseImageArg: string }[];
  /**
   * The root of a matrix whose runtimes exceed strata:runtimeShardSize: the runtime shard stacks, in summary
   * (`strata plan --shard NAME` plans one in full). Empty when the stack declares its runtimes itself.
   */
  runtimeShards: { name: string; stack: string; bases: string[]; runtimes: number }[];
  /** Every resource the program declared, with its inputs as `pulumi up` would send them (secrets `[secret]`). */
  resources: { type: string; name: string; parent: string | null; parentType: string | null; inputs: Record<string, unknown> }[];
  /** The stack outputs (secrets `[secret]`). */
  outputs: Record<string, unknown>;
}

/**
 * Builds the report from what the program registered: build args, targets and platforms are read off the
 * docker-build Images it declared, not recomputed, so the report is the program's view.
 */
export function planReport(stack: string, matrix: string, run: ProgramRun): PlanReport {
  const children = new Map<string, RecordedResource[]>();
  for (const r of run.resources) if (r.parent) children.set(`${r.parentType}::${r.parent}`, [...(children.get(`${r.parentType}::${r.parent}`) ?? []), r]);
  /** What a BaseImage or RuntimeImage component declared: its docker-build Images (one per platform). */
  const build = (c: RecordedResource) => {
    const images = (children.get(`${c.type}::${c.name}`) ?? []).filter((r) => r.type === "docker-build:index:Image");
    const first = (images[0]?.inputs ?? {}) as Record<string, any>;
    return {
      first,
      dockerfile: (first.dockerfile?.location ?? "") as string,
      target: (first.target ?? "") as string,
      platforms: images.flatMap((i) => (i.inputs.platforms as string[]) ?? []),
    };
  };
  const outputs = run.outputs as {
    registry?: unknown;
    bases?: Record<string, { tag: string; identity: string; consumers: string[] }>;
    runtimes?: Record<string, { base: string; tags: string[] }>;
    runtimeShards?: PlanReport["runtimeShards"];
  };

  const bases = run.resources
    .filter((r) => r.type === "strata:images:BaseImage")
    .map((c) => {
      const name = c.name.replace(/^base-/, "");
      const { first, dockerfile, target, platforms } = build(c);
      const declared = outputs.bases?.[name];
      return {
        name,
        tag: declared?.tag ?? "",
        identity: declared?.identity ?? "",
        buildArgs: (first.buildArgs ?? {}) as Record<string, string>,
        target,
        dockerfile,
        context: (first.context?.location ?? "") as string,
        platforms,
        consumers: declared?.consumers ?? [],
      };
    });
  const runtimes = run.resources
    .filter((r) => r.type === "strata:images:RuntimeImage")
    .map((c) => {
      const name = c.name.replace(/^runtime-/, "");
      const { first, dockerfile, target, platforms } = build(c);
      const declared = outputs.runtimes?.[name];
      return {
        name,
        base: declared?.base ?? "",
        tags: declared?.tags ?? [],
        dockerfile,
        target,
        platforms,
        baseImageArg: (first.buildArgs?.BASE_IMAGE ?? "") as string,
      };
    });
  return {
    stack,
    matrix,
    registry: outputs.registry,
    bases,
    runtimes,
    runtimeShards: outputs.runtimeShards ?? [],
    resources: run.resources.map((r) => ({ type: r.type, name: r.name, parent: r.parent ?? null, parentType: r.parentType ?? null, inputs: maskSecrets(r.inputs) as Record<string, unknown> })),
    outputs: maskSecrets(run.outputs) as Record<string, unknown>,
  };
}

/** The human form: bases, runtimes and the resource tree. */
export function formatPlan(report: PlanReport): string {
  const out: string[] = [];
  out.push(`strata plan: stack ${report.stack}, matrix ${report.matrix}, registry ${String(report.registry)}`);
  out.push("");
  const from = [...new Set(report.runtimes.map((r) => r.base))];
  if (report.bases.length === 0 && from.length > 0) out.push(`Bases: none built here; the runtimes build FROM ${from.length} published base(s): ${summarise(from)}`);
  else out.push(`Bases (${report.bases.length}): built once each, tagged by identity`);
  if (report.bases.length > 0 || from.length === 0) out.push(table(["BASE", "TAG", "TARGET", "PLATFORMS", "RUNTIMES"], report.bases.map((b) => [b.name, b.tag, b.target, b.platforms.join(","), summarise(b.consumers)])));
  out.push("");
  if (report.runtimeShards.length > 0) {
    const total = report.runtimeShards.reduce((n, s) => n + s.runtimes, 0);
    out.push(`Runtime shards (${report.runtimeShards.length}): ${total} runtimes, declared by shard stacks (\`strata plan --stack ${report.stack} --shard NAME\` shows one in full)`);
    out.push(table(["SHARD", "STACK", "RUNTIMES", "BASES"], report.runtimeShards.map((s) => [s.name, s.stack, String(s.runtimes), summarise(s.bases)])));
  } else {
    out.push(`Runtimes (${report.runtimes.length}): built FROM their base by digest`);
    out.push(table(["RUNTIME", "FROM", "TAGS", "PLATFORMS"], report.runtimes.map((r) => [r.name, r.base, r.tags.join(","), r.platforms.join(",")])));
  }
  out.push("");
  out.push(`Resources (${report.resources.length})`);
  const kids = new Map<string | null, PlanReport["resources"]>();
  const keyOf = (type: string | null, name: string | null) => (name === null ? null : `${type}::${name}`);
  for (const r of report.resources) {
    const k = keyOf(r.parentType, r.parent);
    kids.set(k, [...(kids.get(k) ?? []), r]);
  }
  const walk = (parent: string | null, indent: string) => {
    for (const r of kids.get(parent) ?? []) {
      out.push(`${indent}${r.type}  ${r.name}`);
      walk(keyOf(r.type, r.name), `${indent}  `);
    }
  };
  walk(null, "  ");
  return out.join("\n");
}

function summarise(names: string[]): string {
  if (names.length <= 3) return names.join(",");
  return `${names.slice(0, 2).join(",")} +${names.length - 2} more`;
}

/** A plain left-aligned table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

/** What `strata plan` runs: a stack, or one shard of a root stack, under the offline mocks. */
export interface OfflinePlanOptions {
  /** The stack named by --stack (a root, or a shard stack whose Pulumi.<stack>.yaml sets strata:shardOf). */
  stack: string;
  config: Record<string, unknown>;
  secretKeys: string[];
  /** --shard: `runtimes-<k>`, `base-<name>`, or a shard stack's full name. Default: plan `stack` itself. */
  shard?: string;
  /** Reads another stack's config (the root of a shard stack); default Pulumi.<stack>.yaml in the working directory. */
  readStack?: (stack: string) => { config: Record<string, unknown>; secretKeys: string[] };
  /** Capture no stack traces (see RunOptions.lean). Default false. */
  lean?: boolean;
}

/** A problem with --shard or a shard stack's root: the message says what to run instead (exit 1). */
export class ShardPlanError extends Error {}

/**
 * Runs the program offline for a stack. A shard (a stack with strata:shardOf, or `--shard NAME` of a root) reads its
 * root's outputs through StackReferences: they come from the root stack's own offline plan, run first in this
 * process (for `--shard`, narrowed to the bases the shard reads: the same outputs for them). A root that reads its bases from base shards is planned for that purpose as if it built them (the
 * offline refs a base shard would publish), and `notes` says so.
 */
export async function offlinePlan(opts: OfflinePlanOptions): Promise<{ stack: string; run: ProgramRun; notes: string[] }> {
  const { runProgram } = await import("./program.ts");
  const { findRuntimeShard, runtimeShards, shardsRuntimes, shardStacks, DEFAULT_RUNTIME_SHARD_SIZE } = await import("../components/shard-stacks.ts");
  const { loadMatrix } = await import("../matrix/load.ts");
  const readStack = opts.readStack ?? ((s: string) => readStackFile(s));
  const notes: string[] = [];
  let stack = opts.stack;
  let config = opts.config;
  let root: { stack: string; config: Record<string, unknown>; secretKeys: string[] } | undefined;
  /** The bases the shard reads from its root: the root's plan is narrowed to them (the same outputs, less work). */
  let reads: string[] | undefined;

  if (opts.shard !== undefined) {
    if (config["strata:shardOf"] !== undefined) throw new ShardPlanError(`stack '${stack}' is itself a shard (strata:shardOf): pass its root stack to --stack`);
    root = { stack, config, secretKeys: opts.secretKeys };
    const matrixFile = (config["strata:matrix"] as string | undefined) ?? "strata.yaml";
    const plan = loadMatrix(matrixFile);
    const size = (config["strata:runtimeShardSize"] as number | undefined) ?? DEFAULT_RUNTIME_SHARD_SIZE;
    const want = opts.shard.startsWith(`${stack}-`) ? opts.shard.slice(stack.length + 1) : opts.shard;
    const { "strata:baseShards": _baseShards, "strata:bases": _bases, "strata:runtimes": _runtimes, ...inherited } = config;
    if (/^base-/.test(want)) {
      const base = shardStacks(plan, stack).find((s) => `base-${s.base}` === want);
      if (!base) throw new ShardPlanError(`there is no base shard '${opts.shard}': the bases are ${plan.bases.slice(0, 8).map((b) => `base-${b.name}`).join(", ")}${plan.bases.length > 8 ? ", ..." : ""}`);
      stack = base.stack;
      reads = [base.base];
      config = { ...inherited, ...base.config };
    } else {
      let shard;
      try {
        shard = findRuntimeShard(shardsRuntimes(plan, size) ? runtimeShards(plan, stack, size) : [], want);
      } catch (err) {
        throw new ShardPlanError(`${(err as Error).message} (runtime shards are runtimes-<k>; base shards base-<name>)`);
      }
      stack = shard.stack;
      reads = shard.bases;
      config = { ...inherited, ...shard.config };
    }
  } else if (typeof config["strata:shardOf"] === "string") {
    const rootStack = config["strata:shardOf"] as string;
    const found = readStack(rootStack.split("/").pop()!);
    if (Object.keys(found.config).length === 0) {
      throw new ShardPlanError(`stack '${stack}' is a shard of '${rootStack}', but there is no Pulumi.${rootStack.split("/").pop()}.yaml to plan the root from: add it, or plan the shard as \`strata plan --stack ROOT --shard NAME\``);
    }
    root = { stack: rootStack.split("/").pop()!, ...found };
    if (config["strata:matrix"] !== undefined) root.config = { ...root.config, "strata:matrix": config["strata:matrix"] };
  }

  let stackOutputs: Record<string, Record<string, unknown>> | undefined;
  if (root) {
    let rootConfig = root.config;
    if (rootConfig["strata:baseShards"] === true) {
      const { "strata:baseShards": _, ...rest } = rootConfig;
      rootConfig = rest;
      notes.push(`root stack '${root.stack}' reads its bases from base shards; offline, its base refs are those the bases would get if built`);
    }
    if (reads) rootConfig = { ...rootConfig, "strata:bases": reads };
    const rootRun = await runProgram({ stack: root.stack, config: { ...rootConfig, "strata:runtimes": false }, secretKeys: root.secretKeys, lean: opts.lean });
    stackOutputs = { [root.stack]: rootRun.outputs };
  }
  const secretKeys = opts.secretKeys.filter((k) => k in config);
  const run = await runProgram({ stack, config, secretKeys, lean: opts.lean, stackOutputs });
  return { stack, run, notes };
}

/** Pulumi's marker of a secret value as the mock monitor receives it. */
const SECRET_SIG = { key: "4dabf18193072939515e22adb298388d", value: "1b47061264138c4ac30d75fd1eb44270" };

/** A copy of resource inputs with every secret replaced by `[secret]`, for reports. */
export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value && typeof value === "object") {
    const o = value as Record<string, unknown>;
    if (o[SECRET_SIG.key] === SECRET_SIG.value) return "[secret]";
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, maskSecrets(v)]));
  }
  return value;
}
