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

// Runtime shards: above `strata:runtimeShardSize` runtimes, the root declares none and shard stacks
// `<root>-runtimes-<k>` declare at most that many each.

/** Default `strata:runtimeShardSize`: a stack with more runtimes than this declares them in runtime shards. */
export const DEFAULT_RUNTIME_SHARD_SIZE = 500;

/** Infix between the root stack name and the shard number in a runtime shard stack's name. */
export const RUNTIME_SHARD_INFIX = "-runtimes-";

/** One runtime shard: its name (`runtimes-<k>`), stack, the bases whose runtimes it builds, and those runtimes. */
export interface RuntimeShard {
  /** `runtimes-<k>`, k from 1: what `strata plan --shard` and the workflows take. */
  name: string;
  /** `<root>-runtimes-<k>`. */
  stack: string;
  /** The bases whose runtimes (all of them, or a slice of a base with more than the shard size) it declares. */
  bases: string[];
  /** The runtimes it declares, in plan order. */
  runtimes: string[];
  /** Config keys the shard sets after copying the root's config (`pulumi config cp`). */
  config: { "strata:runtimeShard": string; "strata:shardOf": string };
}

/** True when a plan's runtimes exceed the shard size: they are then declared by runtime shard stacks. */
export function shardsRuntimes(plan: Pick<BuildPlan, "runtimes">, size = DEFAULT_RUNTIME_SHARD_SIZE): boolean {
  return plan.runtimes.length > size;
}

/**
 * Groups the runtimes into shards of at most `size`, by base so that a base change touches few shards: bases in
 * name order, each base's runtimes together (next-fit packing of small bases into one shard), a base with more
 * than `size` runtimes split into shards of its own. Deterministic: the same plan and size give the same shards.
 * Adding or removing a base can move the runtimes of later bases to a neighbouring shard (a re-create there).
 */
export function runtimeShards(plan: Pick<BuildPlan, "bases" | "runtimes">, stack: string, size = DEFAULT_RUNTIME_SHARD_SIZE): RuntimeShard[] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`runtime shard size ${size} must be a whole number of at least 1`);
  const byBase = new Map<string, string[]>();
  for (const r of plan.runtimes) {
    const names = byBase.get(r.base);
    if (names) names.push(r.name);
    else byBase.set(r.base, [r.name]);
  }
  const groups: { bases: string[]; runtimes: string[] }[] = [];
  let open: { bases: string[]; runtimes: string[] } | undefined;
  for (const base of [...byBase.keys()].sort()) {
    const names = byBase.get(base)!;
    if (names.length > size) {
      for (let i = 0; i < names.length; i += size) groups.push({ bases: [base], runtimes: names.slice(i, i + size) });
      open = undefined;
      continue;
    }
    if (!open || open.runtimes.length + names.length > size) {
      open = { bases: [], runtimes: [] };
      groups.push(open);
    }
    open.bases.push(base);
    open.runtimes.push(...names);
  }
  const order = new Map(plan.runtimes.map((r, i) => [r.name, i]));
  return groups.map((g, i) => {
    const name = `runtimes-${i + 1}`;
    const shardStack = `${stack}${RUNTIME_SHARD_INFIX}${i + 1}`;
    if (!STACK_NAME.test(shardStack)) throw new Error(`runtime shard stack name '${shardStack}' is not a valid Pulumi stack name: shorten the root stack name '${stack}'`);
    return {
      name,
      stack: shardStack,
      bases: g.bases,
      runtimes: g.runtimes.sort((a, b) => order.get(a)! - order.get(b)!),
      config: { "strata:runtimeShard": name, "strata:shardOf": stack },
    };
  });
}

/** The runtime shard `name` (`runtimes-<k>` or its stack name `<root>-runtimes-<k>`), or an error listing the shards. */
export function findRuntimeShard(shards: readonly RuntimeShard[], name: string): RuntimeShard {
  const hit = shards.find((s) => s.name === name || s.stack === name);
  if (hit) return hit;
  const known = shards.map((s) => s.name);
  throw new Error(
    known.length === 0
      ? `there is no runtime shard '${name}': this stack's runtimes do not exceed strata:runtimeShardSize, so the root declares them itself`
      : `there is no runtime shard '${name}'; this stack has ${known.length}: ${known.slice(0, 8).join(", ")}${known.length > 8 ? ", ..." : ""}`,
  );
}
