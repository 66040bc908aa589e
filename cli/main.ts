import { writeFileSync } from "node:fs";
import Module, { createRequire } from "node:module";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { formatProblem, MatrixError, Problems } from "../matrix/errors.ts";
import { LIMITS, readRegularFile } from "../matrix/files.ts";
import { loadMatrix } from "../matrix/load.ts";
import { lockWarning } from "../matrix/lock.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import { RecordedBasesSchema, validate } from "../matrix/schema.ts";
import { SourceFile } from "../matrix/source.ts";
import { bakeFile, pinsFromMetadata } from "./bake.ts";
import { table } from "./plan.ts";
import { readStackFile } from "./stack.ts";

/** Each command's usage, as `strata <command> --help` prints it. */
const COMMAND_USAGE = {
  check: `  strata check [--matrix PATH] [--stack NAME] [--json]
      Validate the matrix and print the bases it derives. Exit 1 on any error.`,
  plan: `  strata plan [--stack NAME] [--matrix PATH] [--shard NAME] [--json]
      Run the Pulumi program offline under mocks and show everything \`pulumi up\` would declare (--json: every
      resource with its inputs, secrets masked, and the stack outputs). Above strata:runtimeShardSize runtimes the
      root shows its runtime shards in summary; --shard runtimes-<k> (or base-<name>) plans one shard stack in full,
      its root's outputs taken from the root's own offline plan. A shard stack (strata:shardOf) plans the same way.
  strata plan ... --recorded OUTPUTS [--history FILE | --history-registry HOST[/PREFIX]]
      Explain, base by base, why the matrix differs from a stack's recorded \`bases\` output
      (pulumi stack output bases --json > OUTPUTS): what \`pulumi preview\` would update, in words,
      and what the rebuild will cost, forecast from earlier builds' records.`,
  bake: `  strata bake [--stack NAME] [--matrix PATH] [--registry HOST[:PORT]] [--version V] [--pin METADATA] [--out FILE]
      Write a docker buildx bake file with the same builds (groups: bases, runtimes).`,
  lock: `  strata lock [--matrix PATH] [--stack NAME] [--check]
      Resolve every upstream image the builds start FROM (per platform, after build-arg substitution) to its digest
      and write <matrix>.lock.json beside the matrix; --check (offline) exits 1 when the lock is missing or stale.`,
  impact: `  strata impact [--base REV] [--head REV] [--matrix PATH] [--stack NAME] [--json] [--history FILE | --history-registry HOST[/PREFIX]]
      Show which bases and runtimes a change rebuilds, and why (default: merge-base with the default branch
      → working tree), and the shard stacks it touches. Exit 0 whether or not something rebuilds; 1 invalid
      matrix at a revision; 2 usage or git error.`,
  workflows: `  strata workflows [--stack NAME] [--matrix PATH] [--out DIR] [--check] [--shard-size N] [--no-shard]
      Generate .github/workflows/ (build-bases, build-runtimes, pr-check) from the matrix and stack config;
      --check exits 1 when the committed files are out of date.`,
  record: `  strata record --base NAME --registry HOST[/PREFIX] --started-at ISO [--build-log FILE] ...
      Append a base build's wall time, instance, spot/on-demand and cached steps to its build-record ledger.`,
  smoke: `  strata smoke --base NAME [--out FILE]
      Write the GPU gate's smoke test for a base (nvidia-smi, torch/CUDA, arch list, flash-attention, matmul).`,
  gc: `  strata gc --registry HOST[/PREFIX] [--keep-releases K] [--min-age-days N] [--in-use FILE] [--apply [--runtime-orphans]]
      List (dry run) or delete base tags no current base, kept release or open pull request uses, and list (or
      with --runtime-orphans delete) the attestations left by runtimes no longer in the registry.`,
  attest: `  strata attest [IMAGE@sha256:DIGEST ...] [--outputs FILE] [--bake-metadata FILE] [--pushed FILE] [--json]
      Attach an SBOM (OS and Python packages) and a SLSA provenance to each pushed base and runtime, as OCI referrers.`,
} as const;

const USAGE = `strata: layered GPU container images from one matrix file

Usage:
${Object.values(COMMAND_USAGE).join("\n")}

The matrix defaults to the stack's strata:matrix, else strata.yaml. The stack defaults to dev.
\`strata <command> --help\` shows one command.
Exit status: 0 success; 1 invalid input (matrix, derive source, Dockerfiles, stack config: each problem at
file:line:col), workflows --check out of date; 2 usage error (impact: also a git error); 3 a bug in strata.`;

/** One command's usage text. */
function commandUsage(command: keyof typeof COMMAND_USAGE): string {
  return `Usage:\n${COMMAND_USAGE[command]}\n\nThe matrix defaults to the stack's strata:matrix, else strata.yaml. The stack defaults to dev.`;
}

/** A mistake in how strata was called: usage text (of `command` when known), exit 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: keyof typeof COMMAND_USAGE,
  ) {
    super(message);
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;
const COMMON: Options = {
  matrix: { type: "string" },
  stack: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "check":
        return check(parse(rest, COMMON, "check"));
      case "plan":
        return await plan(parse(rest, { ...COMMON, recorded: { type: "string" }, shard: { type: "string" }, history: { type: "string" }, "history-registry": { type: "string" } }, "plan"));
      case "workflows": {
        const { workflowsCommand } = await import("./workflows.ts");
        return await workflowsCommand(rest);
      }
      case "lock":
        return await (await import("./lock.ts")).lockCommand(rest);
      case "impact": {
        const { impactCommand } = await import("./impact.ts");
        return await impactCommand(rest);
      }
      case "record":
        return await (await import("./forecast.ts")).recordCommand(rest);
      case "smoke":
        return await (await import("./smoke.ts")).smokeCommand(rest);
      case "gc":
        return await (await import("./gc.ts")).gcCommand(rest);
      case "attest":
        return await (await import("./attest.ts")).attestCommand(rest);
      case "bake":
        return bake(parse(rest, { ...COMMON, registry: { type: "string" }, version: { type: "string" }, pin: { type: "string" }, out: { type: "string", short: "o" } }, "bake"));
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE + "\n");
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`strata: ${err.message}\n\n${err.command ? commandUsage(err.command) : USAGE}\n`);
      return 2;
    }
    if (err instanceof MatrixError) {
      process.stderr.write(err.message + "\n");
      process.stderr.write(`strata: ${err.problems.length} error(s); nothing was declared\n`);
      return 1;
    }
    throw err;
  }
}

type Values = Record<string, string | boolean | undefined>;

function parse(args: string[], options: Options, command: keyof typeof COMMAND_USAGE): Values {
  let values;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message, command);
  }
  if (values.help) {
    process.stdout.write(commandUsage(command) + "\n");
    process.exit(0);
  }
  return values as Values;
}

/** The stack's config from Pulumi.<stack>.yaml, with --matrix applied. */
function stackConfig(v: Values): { stack: string; config: Record<string, unknown>; secretKeys: string[]; matrix: string } {
  const stack = (v.stack as string | undefined) ?? "dev";
  const { config, secretKeys } = readStackFile(stack);
  if (v.matrix) config["strata:matrix"] = v.matrix;
  const matrix = (config["strata:matrix"] as string | undefined) ?? "strata.yaml";
  return { stack, config, secretKeys, matrix };
}

function printWarnings(plan: BuildPlan): void {
  for (const w of plan.warnings) process.stderr.write(formatProblem(w, "warning") + "\n");
  const lock = lockWarning(plan);
  if (lock) process.stderr.write(lock + "\n");
}

function check(v: Values): number {
  const { matrix } = stackConfig(v);
  const plan = loadMatrix(matrix);
  printWarnings(plan);
  if (v.json) {
    const bases = plan.bases.map((b) => ({ name: b.name, tag: b.tag, identity: b.hash, buildArgs: b.args, target: b.target, dockerfile: b.dockerfile, context: b.context, platforms: b.platforms, key: b.key, consumers: b.consumers }));
    process.stdout.write(JSON.stringify({ matrix, bases, runtimes: plan.runtimes.map((r) => ({ name: r.name, base: r.base })) }, null, 2) + "\n");
    return 0;
  }
  process.stdout.write(`${matrix}: ${plan.runtimes.length} runtime(s) on ${plan.bases.length} base(s)\n\n`);
  process.stdout.write(table(["BASE", "TAG", "PLATFORMS", "RUNTIMES"], plan.bases.map((b) => [b.name, b.tag, b.platforms.join(","), String(b.consumers.length)])) + "\n");
  return 0;
}

async function plan(v: Values): Promise<number> {
  const { stack, config, secretKeys, matrix } = stackConfig(v);
  if (v.recorded) {
    const buildPlan = loadMatrix(matrix);
    printWarnings(buildPlan);
    return explainStack(v.recorded as string, buildPlan, v.json === true, v);
  }
  deferTypeScript();
  const { planReport, formatPlan, offlinePlan, ShardPlanError } = await import("./plan.ts");
  const { RunError } = await import("@pulumi/pulumi");
  let planned;
  try {
    planned = await offlinePlan({ stack, config, secretKeys, shard: v.shard as string | undefined, lean: !process.env.STRATA_DEBUG });
  } catch (err) {
    if (err instanceof RunError || err instanceof ShardPlanError) {
      process.stderr.write(`${err.message}\nstrata: nothing was declared\n`);
      return 1;
    }
    throw err;
  }
  for (const note of planned.notes) process.stderr.write(`strata plan: ${note}\n`);
  const report = planReport(planned.stack, matrix, planned.run);
  process.stdout.write((v.json ? JSON.stringify(report, null, 2) : formatPlan(report)) + "\n");
  return 0;
}

/** `plan --recorded`: why each base of the matrix differs from what the stack recorded at its last update. */
async function explainStack(file: string, plan: BuildPlan, json: boolean, v: Values): Promise<number> {
  const { explainRecorded, formatImpact, impactJson } = await import("../matrix/impact.ts");
  let recorded;
  try {
    const src = SourceFile.read(file, file, LIMITS.sourceBytes);
    const problems = new Problems();
    recorded = validate(RecordedBasesSchema, src.data, src, problems);
    problems.throwIfAny();
  } catch (err) {
    if (!(err instanceof MatrixError)) throw err;
    throw new MatrixError(err.problems.map((p) => ({ ...p, message: `cannot read the recorded outputs: ${p.message}`, fix: `${p.fix}; pass the output of \`pulumi stack output bases --json\`` })));
  }
  const report = explainRecorded(recorded!, plan);
  const { forecastForReport, forecastJson, forecastText } = await import("./forecast.ts");
  const forecast = await forecastForReport(report, plan, v as { history?: string; "history-registry"?: string; stack?: string });
  process.stdout.write((json ? JSON.stringify({ ...impactJson(report), forecast: forecastJson(forecast) }, null, 2) : formatImpact(report) + forecastText(forecast, v)) + "\n");
  return 0;
}

/**
 * @pulumi/pulumi loads the TypeScript compiler at start-up, for serialising function closures, which strata's
 * program never does; it costs 0.4 s and 40+ MB. Until something actually uses it, `require("typescript")`
 * from Pulumi gets a proxy that loads the real compiler on first use.
 */
function deferTypeScript(): void {
  const fromPulumi = createRequire(createRequire(import.meta.url).resolve("@pulumi/pulumi"));
  let tsPath: string;
  try {
    tsPath = fromPulumi.resolve("typescript");
  } catch {
    return;
  }
  if (fromPulumi.cache[tsPath]) return;
  let real: Record<string | symbol, unknown> | undefined;
  const load = () => {
    if (!real) {
      delete fromPulumi.cache[tsPath];
      real = fromPulumi(tsPath) as Record<string | symbol, unknown>;
    }
    return real;
  };
  const stub = new Module(tsPath);
  stub.filename = tsPath;
  stub.loaded = true;
  stub.exports = new Proxy({}, { get: (_, key) => load()[key], has: (_, key) => key in load() });
  fromPulumi.cache[tsPath] = stub;
}

function bake(v: Values): number {
  const { config, matrix } = stackConfig(v);
  const plan = loadMatrix(matrix);
  printWarnings(plan);
  const registry = (config["strata:registry"] ?? {}) as { kind?: string; address?: string; prefix?: string };
  const address = (v.registry as string | undefined) ?? (registry.kind === "local" ? (registry.address ?? "localhost:5000") : registry.address);
  if (!address) {
    throw new UsageError("ECR repository addresses are known only after `pulumi up`: pass --registry <account>.dkr.ecr.<region>.amazonaws.com (or the stack output `registry`)");
  }
  const prefix = registry.prefix ?? "strata";
  const release = { version: "dev", branch: "main", sha: "0000000", ...((config["strata:release"] ?? {}) as Record<string, string>) };
  if (v.version) release.version = v.version as string;
  let pins: Record<string, string> | undefined;
  if (v.pin) {
    try {
      pins = pinsFromMetadata(JSON.parse(readRegularFile(v.pin as string, LIMITS.sourceBytes, "bake metadata file")));
    } catch (err) {
      throw new MatrixError([{ file: v.pin as string, line: 1, col: 1, message: `cannot read the bake metadata (${(err as Error).message})`, fix: "pass the file written by `docker buildx bake bases --metadata-file FILE`" }]);
    }
  }
  const file = bakeFile(plan, {
    basesRepository: `${address}/${prefix}/bases`,
    runtimesRepository: `${address}/${prefix}/runtimes`,
    cacheRepository: `${address}/${prefix}/cache`,
    release: { ...release, sha: release.sha.slice(0, 7) },
    pins,
  });
  const text = JSON.stringify(file, null, 2) + "\n";
  if (v.out) writeFileSync(v.out as string, text);
  else process.stdout.write(text);
  return 0;
}
