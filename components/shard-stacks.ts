import type { BuildPlan } from "../matrix/plan.ts";

// Names of the base shard stacks (`<root>-base-<name>`): pure, shared by the program and the workflow generator.

/** Pulumi stack names: letters, digits, '-', '_' and '.', at most 100 characters. */
const STACK_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** Infix between the root stack name and the base name in a shard stack's name. */
export const SHARD_INFIX = "-base-";

/** The stack that builds base `base` for root stack `stack`: `<stack>-base-<base>`. */
export function shardStackName(stack: string, base: string): string {
  const name = `${stack}${SHARD_INFIX}${base}`;
  if (!STACK_NAME.test(name)) {
    throw new Error(
      `shard stack name '${name}' (root stack '${stack}', base '${base}') is not a valid Pulumi stack name: ` +
        "stack names are at most 100 characters of letters, digits, '-', '_' and '.'; shorten the root stack name or the base name in the matrix",
    );
  }
  return name;
}

/** One base shard: its stack and the config that stack needs on top of the root stack's config. */
export interface ShardStack {
  base: string;
  /** The shard stack's name, `<root>-base-<base>`. */
  stack: string;
  /** Config keys the shard sets after copying the root's config (`pulumi config cp`). */
  config: { "strata:bases": [string]; "strata:runtimes": false; "strata:shardOf": string };
}

/** The shard stacks of a plan, one per base, in plan order. Names that collide or are invalid are an error. */
export function shardStacks(plan: Pick<BuildPlan, "bases">, stack: string): ShardStack[] {
  if (!STACK_NAME.test(stack)) throw new Error(`root stack name '${stack}' is not a valid Pulumi stack name (letters, digits, '-', '_', '.')`);
  const seen = new Map<string, string>();
  return plan.bases.map((b) => {
    const name = shardStackName(stack, b.name);
    const other = seen.get(name.toLowerCase());
    if (other) throw new Error(`bases '${other}' and '${b.name}' would share the shard stack '${name}' (stack names are case-insensitive); rename one in the matrix`);
    seen.set(name.toLowerCase(), b.name);
    return { base: b.name, stack: name, config: { "strata:bases": [b.name], "strata:runtimes": false, "strata:shardOf": stack } };
  });
}

