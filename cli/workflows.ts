import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { GitHubConfigError, parseGitHubConfig } from "../components/github-trust.ts";
import { formatProblem, MatrixError } from "../matrix/errors.ts";
import { loadMatrix } from "../matrix/load.ts";
import { fleetPools, generateWorkflows, WorkflowError, type WorkflowOptions } from "../workflows/generate.ts";
import { readStackFile } from "./stack.ts";

export const WORKFLOWS_USAGE = `strata workflows [--stack NAME] [--matrix PATH] [--out DIR] [--check] [--registry-kind ecr|external] [--shard-size N] [--no-shard]
    Generate the GitHub Actions workflows (.github/workflows/strata-*.yml) from the build plan and the stack's
    strata:github, strata:fleet and strata:registry config. --check writes nothing and exits 1 when a file differs.
    --out is the repository root (default .). Base builds run as shard stacks <stack>-base-<name>.`;

/**
 * `strata workflows`: writes (or with --check, compares) the generated workflow files. Exit 0 written / up to date,
 * 1 invalid matrix or config or out-of-date files, 2 usage error.
 */
export async function workflowsCommand(args: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        stack: { type: "string" },
        matrix: { type: "string" },
        out: { type: "string", short: "o" },
        check: { type: "boolean" },
        "registry-kind": { type: "string" },
        "shard-size": { type: "string" },
        "no-shard": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`strata workflows: ${(err as Error).message}\n\nUsage:\n  ${WORKFLOWS_USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`Usage:\n  ${WORKFLOWS_USAGE}\n`);
    return 0;
  }
  const usage = (message: string) => {
    process.stderr.write(`strata workflows: ${message}\n\nUsage:\n  ${WORKFLOWS_USAGE}\n`);
    return 2;
  };
  const kind = values["registry-kind"];
  if (kind !== undefined && kind !== "ecr" && kind !== "external") return usage(`--registry-kind must be ecr or external, got '${kind}'`);
  let shardSize: number | undefined;
  if (values["shard-size"] !== undefined) {
    shardSize = Number(values["shard-size"]);
    if (!/^\d+$/.test(values["shard-size"])) return usage(`--shard-size must be a whole number, got '${values["shard-size"]}'`);
  }

  const stack = values.stack ?? "dev";
  const out = values.out ?? ".";
  try {
    const { config } = readStackFile(stack);
    const matrix = values.matrix ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml";
    const plan = loadMatrix(matrix);
    for (const w of plan.warnings) process.stderr.write(formatProblem(w, "warning") + "\n");
    const github = workflowSettings(config["strata:github"], `Pulumi.${stack}.yaml strata:github`);
    const registryKind = (kind ?? (config["strata:registry"] as { kind?: string } | undefined)?.kind ?? "ecr") as WorkflowOptions["registryKind"];
    if (registryKind === "local") {
      process.stderr.write(localRegistryHelp(stack, "."));
      return 1;
    }
    const runtimeShardSize = config["strata:runtimeShardSize"];
    if (runtimeShardSize !== undefined && !(typeof runtimeShardSize === "number" && Number.isInteger(runtimeShardSize) && runtimeShardSize >= 1)) {
      process.stderr.write(`strata workflows: Pulumi.${stack}.yaml strata:runtimeShardSize must be a whole number of at least 1, got ${JSON.stringify(runtimeShardSize)}\n`);
      return 1;
    }
    const files = generateWorkflows(plan, {
      stack,
      matrix,
      registryKind,
      ...github,
      pools: fleetPools(config["strata:fleet"], `Pulumi.${stack}.yaml strata:fleet`),
      shardSize,
      sharding: !values["no-shard"],
      runtimeShardSize: runtimeShardSize as number | undefined,
    });
    if (values.check) {
      const stale = Object.entries(files).filter(([path, content]) => {
        const file = join(out, path);
        return !existsSync(file) || readFileSync(file, "utf8") !== content;
      });
      for (const [path] of stale) process.stderr.write(`${join(out, path)}: out of date; run \`strata workflows --stack ${stack} --matrix ${matrix}\`\n`);
      if (stale.length === 0) process.stdout.write(`${Object.keys(files).length} workflow file(s) up to date\n`);
      return stale.length === 0 ? 0 : 1;
    }
    for (const [path, content] of Object.entries(files)) {
      const file = join(out, path);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, content);
      process.stdout.write(`wrote ${file}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof MatrixError) {
      process.stderr.write(`${err.message}\nstrata: ${err.problems.length} error(s); no workflow written\n`);
      return 1;
    }
    if (err instanceof WorkflowError || err instanceof GitHubConfigError || (err instanceof Error && /^Invalid stack config/.test(err.message))) {
      process.stderr.write(`strata workflows: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/**
 * What to do when the stack pushes to a local registry, which no GitHub runner can reach: the stacks here that
 * push elsewhere, or how to make one.
 */
export function localRegistryHelp(stack: string, dir: string): string {
  const others = readdirSync(dir)
    .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
    .filter((s): s is string => s !== undefined && s !== stack)
    .filter((s) => {
      try {
        return ((readStackFile(s, dir).config["strata:registry"] as { kind?: string } | undefined)?.kind ?? "ecr") !== "local";
      } catch {
        return false; // a stack file that does not parse is not a suggestion
      }
    })
    .sort();
  return [
    `strata workflows: stack '${stack}' pushes to a local registry, which GitHub-hosted and fleet runners cannot reach; workflows are generated for the stack CI deploys.`,
    others.length > 0
      ? `  next: \`strata workflows --stack ${others[0]}\`${others.length > 1 ? ` (stacks here with a reachable registry: ${others.join(", ")})` : ""}`
      : "  next: create a stack with strata:registry.kind ecr or external (see the README's Registry section), then `strata workflows --stack NAME`",
    "  or, to see the workflows for this matrix with ECR anyway: `strata workflows --stack " + stack + " --registry-kind ecr --out DIR`",
    "",
  ].join("\n");
}

/** The workflow-relevant part of `strata:github`; without that config, the defaults (no repository needed here). */
export function workflowSettings(raw: unknown, where: string): Pick<WorkflowOptions, "defaultBranch" | "baseEnvironment" | "runnerLabels" | "signing" | "baseSigners"> {
  if (raw === undefined) return {};
  const c = parseGitHubConfig(raw, where);
  return { defaultBranch: c.defaultBranch, baseEnvironment: c.baseEnvironment, runnerLabels: c.runnerLabels, signing: c.signing, baseSigners: c.repositories };
}
