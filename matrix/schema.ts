import { z } from "zod";
import type { Problems } from "./errors.ts";
import { LIMITS } from "./files.ts";
import type { Path, SourceFile } from "./source.ts";

const NAME = /^[a-z0-9][a-z0-9._-]*$/;
/** os/arch with an optional variant, as Docker and BuildKit write platforms (linux/amd64, linux/arm/v7). */
export const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/v[0-9]+)?$/;

/** A string of at most LIMITS.stringChars characters. */
const Str = () => z.string().max(LIMITS.stringChars, `must be at most ${LIMITS.stringChars} characters`);
/** A list of at most `max` items. */
const List = <T extends z.ZodType>(item: T, max: number) => z.array(item).max(max, `must have at most ${max} items`);

/** Names become OCI tags `<name>-<12 hex>`, at most 128 characters: a name has at most 115. */
const Name = z.string().max(115, "must be at most 115 characters (a base's tag adds 13 to its name, and tags have at most 128)").regex(NAME, "must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit");
const Platform = z.string().max(64, "must be at most 64 characters").regex(PLATFORM, "is not a platform of the form os/arch (for example linux/amd64)");
const Platforms = List(Platform, LIMITS.platforms).min(1);
const ArgValue = z.union([Str(), z.number().int().refine(Number.isSafeInteger, "must be a whole number of at most 15 digits (quote longer ones)"), z.boolean()]).transform(String);
const Args = z
  .record(z.string().max(256, "must be at most 256 characters").regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "is not a valid build-arg name"), ArgValue)
  .refine((a) => Object.keys(a).length <= LIMITS.args, `must have at most ${LIMITS.args} build args`);
const Template = Str().min(1);

/**
 * A derive `pattern`: a JavaScript regular expression that compiles, and without a quantified group that itself
 * holds a quantifier (`(a+)+`), the shape that can backtrack for ages on a short value.
 */
const Pattern = z
  .string()
  .min(1)
  .max(LIMITS.patternChars, `must be at most ${LIMITS.patternChars} characters`)
  .superRefine((p, ctx) => {
    try {
      new RegExp(p);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: `is not a valid regular expression (${(err as Error).message.replace(/^Invalid regular expression: /, "")})` });
      return;
    }
    if (NESTED_QUANTIFIER.test(p)) ctx.addIssue({ code: "custom", message: "has a repeated group that itself repeats (like (a+)+), which can take exponential time" });
  });
/** A group containing + * or {n,} and followed by + * or {n,}: the classic catastrophic-backtracking shape. */
const NESTED_QUANTIFIER = /\((?:[^()\\]|\\.)*(?:[+*]|\{\d*,\d*\})(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,\d*\})/;

/** A base image declared by name, with explicit build args. */
const BaseSpec = z.strictObject({
  name: Name,
  dockerfile: Str().min(1),
  context: Str().min(1).optional(),
  target: Str().min(1).optional(),
  cuda: z.string().max(32, "must be at most 32 characters").regex(/^\d+\.\d+(\.\d+)?$/, "must be a CUDA version such as 12.6 or 12.6.3").optional(),
  platforms: Platforms.optional(),
  args: Args.optional(),
  tagPrefix: Str().min(1).optional(),
});

/** A runtime image built FROM one base. */
const RuntimeSpec = z.strictObject({
  name: Name,
  base: Name,
  dockerfile: Str().min(1),
  context: Str().min(1).optional(),
  target: Str().min(1).optional(),
  platforms: Platforms.optional(),
  args: Args.optional(),
  tags: List(Template, LIMITS.tags).min(1).optional(),
});

/** How a field of a consumer entry is read from the source data. */
const FieldMapping = z.union([
  Str().min(1),
  z.strictObject({
    field: Str().min(1).optional(),
    fields: List(Str().min(1), LIMITS.deriveFields).min(1).optional(),
    pattern: Pattern.optional(),
    map: z.record(Str(), Str()).refine((m) => Object.keys(m).length <= LIMITS.deriveFields, `must have at most ${LIMITS.deriveFields} entries`).optional(),
    default: Str().optional(),
  }),
]);

/** Bases derived from a list of consumers by a declared key. */
const TemplateArgs = z.record(Str(), Template).refine((a) => Object.keys(a).length <= LIMITS.args, `must have at most ${LIMITS.args} build args`);
const DeriveSpec = z.strictObject({
  source: Str().min(1).optional(),
  entries: List(z.record(Str(), z.unknown()), LIMITS.runtimes).optional(),
  fields: z
    .record(z.string().max(64, "must be at most 64 characters").regex(/^[A-Za-z][A-Za-z0-9]*$/, "must be a plain identifier"), FieldMapping)
    .refine((f) => Object.keys(f).length <= LIMITS.deriveFields, `must map at most ${LIMITS.deriveFields} fields`),
  key: List(Str().min(1), LIMITS.deriveFields).min(1),
  mustAgree: List(Str().min(1), LIMITS.deriveFields).optional(),
  base: z.strictObject({
    name: Template.optional(),
    dockerfile: Template,
    context: Template.optional(),
    target: Str().min(1).optional(),
    cuda: Template.optional(),
    args: TemplateArgs.optional(),
  }),
  runtime: z
    .strictObject({
      dockerfile: Template.optional(),
      context: Template.optional(),
      target: Str().min(1).optional(),
      args: TemplateArgs.optional(),
      tags: List(Template, LIMITS.tags).min(1).optional(),
    })
    .optional(),
});

export const MatrixFileSchema = z.strictObject({
  version: z.literal(1).optional(),
  defaults: z
    .strictObject({
      platforms: Platforms.optional(),
      runtimeTags: List(Template, LIMITS.tags).min(1).optional(),
    })
    .optional(),
  bases: List(BaseSpec, LIMITS.bases).optional(),
  runtimes: List(RuntimeSpec, LIMITS.runtimes).optional(),
  derive: DeriveSpec.optional(),
});

/** A stack's recorded `bases` output (`pulumi stack output bases --json`), as `strata plan --recorded` reads it. */
export const RecordedBasesSchema = z.record(
  z.string(),
  z.object({
    tag: z.string().min(1),
    identity: z.string().optional(),
    consumers: z.array(z.string()).optional(),
    inputs: z
      .object({
        dockerfileDigest: z.string(),
        target: z.string(),
        args: z.record(z.string(), z.string()),
        platforms: z.array(z.string()),
        contextDigest: z.string(),
        contextFiles: z.record(z.string(), z.string()),
        upstream: z.record(z.string(), z.object({ digest: z.string(), platforms: z.record(z.string(), z.string()) })).optional(),
      })
      .optional(),
  }),
);

export type MatrixFile = z.infer<typeof MatrixFileSchema>;
export type BaseSpec = z.infer<typeof BaseSpec>;
export type RuntimeSpec = z.infer<typeof RuntimeSpec>;
export type DeriveSpec = z.infer<typeof DeriveSpec>;
export type FieldMapping = z.infer<typeof FieldMapping>;

/** Validates `data` against `schema`, turning every zod issue into a located problem; undefined on failure. */
export function validate<T extends z.ZodType>(
  schema: T,
  data: unknown,
  src: SourceFile,
  problems: Problems,
  root: Path = [],
): z.infer<T> | undefined {
  const result = schema.safeParse(data, { reportInput: true });
  if (result.success) return result.data;
  for (const issue of result.error.issues) reportIssue(schema, issue, src, problems, root);
  return undefined;
}

function reportIssue(schema: z.ZodType, issue: z.core.$ZodIssue, src: SourceFile, problems: Problems, root: Path): void {
  const path = [...root, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))];
  const field = fieldLabel(path);
  switch (issue.code) {
    case "unrecognized_keys":
      for (const key of issue.keys) {
        const allowed = allowedKeys(schema, issue.path);
        const guess = closest(key, allowed);
        problems.error(
          src.locate([...path, key], { key: true }),
          `unknown key '${key}'${path.length ? ` in ${describe(path)}` : ""}`,
          guess ? `did you mean '${guess}'? (allowed: ${allowed.join(", ")})` : `remove it; allowed keys: ${allowed.join(", ")}`,
        );
      }
      return;
    case "invalid_type":
      if (issue.input === undefined) {
        problems.error(
          src.locate(path.slice(0, -1)),
          `missing required field '${field}' in ${describe(path.slice(0, -1))}`,
          `add '${field}:' with ${article(issue.expected)}`,
        );
      } else {
        problems.error(
          src.locate(path),
          `${path.length ? `'${field}'` : "the file"} must be ${article(issue.expected)}, not ${typeName(issue.input)}`,
          typeof issue.input === "number" && issue.expected === "string"
            ? `quote the value ("${src.rawText(path) ?? String(issue.input)}") so YAML keeps it as written`
            : `write ${article(issue.expected)} here`,
        );
      }
      return;
    case "invalid_union": {
      const input = (issue as { input?: unknown }).input;
      problems.error(
        src.locate(path),
        `'${field}' has an unsupported value (${typeName(input)})`,
        typeof input === "number" && !Number.isInteger(input)
          ? `quote the value so YAML keeps it as written ("${src.rawText(path) ?? String(input)}")`
          : "use a string (or, for build args, a whole number or true/false)",
      );
      return;
    }
    default:
      problems.error(src.locate(path), `'${field}' ${messageOf(issue)}`, fixFor(issue, field));
  }
}

function messageOf(issue: z.core.$ZodIssue): string {
  if (issue.code === "too_small" && issue.message.startsWith("Too small")) {
    const n = String(issue.minimum);
    if (issue.origin === "string") return n === "1" ? "must not be empty" : `must be at least ${n} characters`;
    if (issue.origin === "array") return `must have at least ${n} item${n === "1" ? "" : "s"}`;
  }
  if (issue.code === "invalid_key") return `is not an allowed key: it ${issue.issues.map((i) => i.message.replace(/^Invalid input: /, "")).join("; ")}`;
  return issue.message.replace(/^Invalid input: /, "");
}

function fixFor(issue: z.core.$ZodIssue, field: string): string {
  if (issue.code === "too_small") return issue.origin === "array" ? `give '${field}' at least ${String(issue.minimum)} item(s), or leave it out for the default` : `give '${field}' a value of at least ${String(issue.minimum)} character(s)`;
  if (issue.code === "too_big") return `keep '${field}' within the limit (the README's matrix section lists them)`;
  if (issue.code === "invalid_key") return "rename the key";
  if (issue.code === "invalid_value") return `use one of: ${issue.values.map(String).join(", ")}`;
  return `correct the value of '${field}'`;
}

/** The keys an object schema allows at `path`, walking through lists, optionals, defaults and unions. */
export function allowedKeys(schema: z.ZodType, path: ReadonlyArray<PropertyKey>): string[] {
  let node: z.ZodType | undefined = unwrap(schema);
  for (const step of path) {
    if (!node) return [];
    if (node instanceof z.ZodObject) node = unwrap(node.shape[String(step)] as z.ZodType | undefined);
    else if (node instanceof z.ZodArray) node = unwrap(node.element as z.ZodType);
    else if (node instanceof z.ZodRecord) node = unwrap(node.valueType as z.ZodType);
    else return [];
  }
  return node instanceof z.ZodObject ? Object.keys(node.shape) : [];
}

function unwrap(s: z.ZodType | undefined): z.ZodType | undefined {
  let node = s;
  for (;;) {
    if (node instanceof z.ZodOptional || node instanceof z.ZodDefault) node = node.unwrap() as z.ZodType;
    else if (node instanceof z.ZodUnion) node = (node.options as z.ZodType[]).find((o) => unwrap(o) instanceof z.ZodObject) ?? (node.options[0] as z.ZodType);
    else return node;
  }
}

/** How a message names the value at `path`: its field, with the index when it is a list element (`platforms[1]`). */
function fieldLabel(path: Path): string {
  let k = path.length - 1;
  while (k >= 0 && typeof path[k] === "number") k--;
  if (k < 0) return path.length ? `[${path.join("][")}]` : "the file";
  return String(path[k]) + path.slice(k + 1).map((i) => `[${i}]`).join("");
}

function describe(path: Path): string {
  if (path.length === 0) return "the matrix file";
  return path.map((p) => (typeof p === "number" ? `[${p}]` : p)).join(".").replace(/\.\[/g, "[");
}

/** A zod type name in the words of a YAML file. */
const TYPE_WORDS: Record<string, string> = { record: "mapping", object: "mapping", array: "list", int: "whole number" };

function article(zodType: string): string {
  const expected = TYPE_WORDS[zodType] ?? zodType;
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (v instanceof Date) return "a date";
  if (v instanceof Uint8Array) return "binary data";
  if (v instanceof Set) return "a set";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "number") return Number.isFinite(v) ? `number ${String(v)}` : `a number too large to represent (${String(v)})`;
  if (typeof v === "string") return `string ${JSON.stringify(v.length > 60 ? v.slice(0, 57) + "..." : v)}`;
  return `${typeof v} ${String(v)}`;
}

/** The allowed key nearest to a typo, when it is near enough to be a likely intent. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDist) [best, bestDist] = [c, d];
  }
  return bestDist <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}
