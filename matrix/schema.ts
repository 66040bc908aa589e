import { z } from "zod";
import type { Problems } from "./errors.ts";
import type { Path, SourceFile } from "./source.ts";

const NAME = /^[a-z0-9][a-z0-9._-]*$/;
/** os/arch with an optional variant, as Docker and BuildKit write platforms (linux/amd64, linux/arm/v7). */
export const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/v[0-9]+)?$/;

const Name = z.string().regex(NAME, "must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit");
const Platform = z.string().regex(PLATFORM, "is not a platform of the form os/arch (for example linux/amd64)");
const ArgValue = z.union([z.string(), z.number().int(), z.boolean()]).transform(String);
const Args = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "is not a valid build-arg name"), ArgValue);
const Template = z.string().min(1);

/** A base image declared by name, with explicit build args. */
const BaseSpec = z.strictObject({
  name: Name,
  dockerfile: z.string().min(1),
  context: z.string().min(1).optional(),
  target: z.string().min(1).optional(),
  cuda: z.string().regex(/^\d+\.\d+(\.\d+)?$/, "must be a CUDA version such as 12.6 or 12.6.3").optional(),
  platforms: z.array(Platform).min(1).optional(),
  args: Args.optional(),
  tagPrefix: z.string().min(1).optional(),
});

/** A runtime image built FROM one base. */
const RuntimeSpec = z.strictObject({
  name: Name,
  base: Name,
  dockerfile: z.string().min(1),
  context: z.string().min(1).optional(),
  target: z.string().min(1).optional(),
  platforms: z.array(Platform).min(1).optional(),
  args: Args.optional(),
  tags: z.array(Template).min(1).optional(),
});

/** How a field of a consumer entry is read from the source data. */
const FieldMapping = z.union([
  z.string().min(1),
  z.strictObject({
    field: z.string().min(1).optional(),
    fields: z.array(z.string().min(1)).min(1).optional(),
    pattern: z.string().min(1).optional(),
    map: z.record(z.string(), z.string()).optional(),
    default: z.string().optional(),
  }),
]);

/** Bases derived from a list of consumers by a declared key. */
const DeriveSpec = z.strictObject({
  source: z.string().min(1).optional(),
  entries: z.array(z.record(z.string(), z.unknown())).optional(),
  fields: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9]*$/, "must be a plain identifier"), FieldMapping),
  key: z.array(z.string().min(1)).min(1),
  mustAgree: z.array(z.string().min(1)).optional(),
  base: z.strictObject({
    name: Template.optional(),
    dockerfile: Template,
    context: Template.optional(),
    target: z.string().min(1).optional(),
    cuda: Template.optional(),
    args: z.record(z.string(), Template).optional(),
  }),
  runtime: z
    .strictObject({
      dockerfile: Template.optional(),
      context: Template.optional(),
      target: z.string().min(1).optional(),
      args: z.record(z.string(), Template).optional(),
      tags: z.array(Template).min(1).optional(),
    })
    .optional(),
});

export const MatrixFileSchema = z.strictObject({
  version: z.literal(1).optional(),
  defaults: z
    .strictObject({
      platforms: z.array(Platform).min(1).optional(),
      runtimeTags: z.array(Template).min(1).optional(),
    })
    .optional(),
  bases: z.array(BaseSpec).optional(),
  runtimes: z.array(RuntimeSpec).optional(),
  derive: DeriveSpec.optional(),
});

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
  const field = String(path[path.length - 1] ?? "the file");
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
          `'${field}' must be ${article(issue.expected)}, not ${typeName(issue.input)}`,
          typeof issue.input === "number" && issue.expected === "string"
            ? `quote the value ("${String(issue.input)}") so YAML keeps it as written`
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
          ? `quote the value so YAML keeps it as written (for example "${String(input)}")`
          : "use a string (or, for build args, a whole number or true/false)",
      );
      return;
    }
    default:
      problems.error(src.locate(path), `'${field}' ${issue.message.replace(/^Invalid input: /, "")}`, fixFor(issue, field));
  }
}

function fixFor(issue: z.core.$ZodIssue, field: string): string {
  if (issue.code === "too_small") return `give '${field}' at least ${String(issue.minimum)} item(s) or characters`;
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

function describe(path: Path): string {
  if (path.length === 0) return "the matrix file";
  return path.map((p) => (typeof p === "number" ? `[${p}]` : p)).join(".").replace(/\.\[/g, "[");
}

function article(expected: string): string {
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
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
