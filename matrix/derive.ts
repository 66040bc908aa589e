import type { Location, Problems } from "./errors.ts";
import { LIMITS } from "./files.ts";
import type { FieldMapping } from "./schema.ts";
import { renderTemplate } from "./plan.ts";

/** One consumer entry after field mapping: strata field name to string value. */
export interface Consumer {
  fields: Record<string, string>;
  platforms: string[];
  /** Where the entry is, computed only when an error needs it. */
  at: () => Location;
  /** Where one of its source fields is. */
  fieldAt: (strataField: string) => Location;
}

/** A base derived from consumers that share the key. */
export interface DerivedBase {
  name: string;
  key: Record<string, string>;
  platforms: string[];
  consumers: Consumer[];
}

/** Reads one strata field from a raw entry by its mapping; `undefined` with an error message when it fails. */
export function mapField(raw: Record<string, unknown>, mapping: FieldMapping): { value: string } | { error: string } {
  const read = (f: string) => stringify(Object.hasOwn(raw, f) ? raw[f] : undefined);
  let value: string;
  if (typeof mapping === "string") {
    value = read(mapping);
  } else if (mapping.fields) {
    value = mapping.fields.map(read).filter((v) => v !== "").join("-");
  } else if (mapping.field) {
    value = read(mapping.field);
  } else {
    return { error: "a field mapping needs 'field' or 'fields'" };
  }
  if (value.length > LIMITS.stringChars) return { error: `the value is ${value.length} characters long (at most ${LIMITS.stringChars})` };
  if (typeof mapping === "string") return { value };
  if (mapping.pattern && value !== "") {
    const m = new RegExp(mapping.pattern).exec(value);
    if (!m) return { error: `value '${value}' does not match pattern /${mapping.pattern}/` };
    value = m[1] ?? m[0];
  }
  if (mapping.map && Object.hasOwn(mapping.map, value)) value = mapping.map[value];
  if (value === "" && mapping.default !== undefined) value = mapping.default;
  return { value };
}

/** The source field a mapping reads first, for locating errors in the source data. */
export function sourceFieldOf(mapping: FieldMapping | undefined): string | undefined {
  if (mapping === undefined) return undefined;
  if (typeof mapping === "string") return mapping;
  return mapping.field ?? mapping.fields?.[0];
}

/** A source value as text: lists joined by ',', mappings as JSON (never through their own toString). */
function stringify(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (Array.isArray(v)) return v.map(stringify).join(",");
  if (typeof v === "object") return v instanceof Date ? v.toISOString() : JSON.stringify(v) ?? "";
  return String(v);
}

/** Lowercase, with every run of characters other than [a-z0-9._] turned into one '-', trimmed of '-' and '.'. */
export function slug(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9._]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "");
}

export interface DeriveOptions {
  key: string[];
  /** Fields whose values must be equal among the consumers of one base (besides the key). */
  mustAgree: string[];
  /** Template of a base's name; default: the key values joined by '-'. */
  nameTemplate?: string;
}

/**
 * Groups consumers into bases by the declared key. A base's platforms are the union of its consumers'
 * platforms. Two consumers of one base that disagree on a must-agree field are a collision: an error naming
 * both consumers and the field. Two different keys that slug to the same base name are an error too.
 */
export function deriveBases(consumers: Consumer[], opts: DeriveOptions, problems: Problems, keyAt: Location): DerivedBase[] {
  const byKey = new Map<string, DerivedBase>();
  const reported = new Set<string>();
  for (const c of consumers) {
    const keyValues = opts.key.map((k) => c.fields[k] ?? "");
    const id = JSON.stringify(keyValues);
    let base = byKey.get(id);
    if (!base) {
      const key = Object.fromEntries(opts.key.map((k, i) => [k, keyValues[i]]));
      const template = opts.nameTemplate ?? opts.key.map((k) => `{${k}}`).join("-");
      base = { name: slug(renderTemplate(template, c.fields).value), key, platforms: [], consumers: [] };
      byKey.set(id, base);
    } else {
      const first = base.consumers[0];
      for (const field of opts.mustAgree) {
        const a = first.fields[field] ?? "";
        const b = c.fields[field] ?? "";
        if (a !== b && !reported.has(`${id}\0${field}`)) {
          reported.add(`${id}\0${field}`);
          const firstAt = first.at();
          problems.error(
            c.fieldAt(field),
            `key collision: consumers '${first.fields.name}' (${firstAt.file}:${firstAt.line}) and '${c.fields.name}' both derive base '${base.name}' but disagree on '${field}' ('${a}' vs '${b}')`,
            `add '${field}' to derive.key so they get separate bases, or make '${field}' the same for both`,
          );
          break;
        }
      }
    }
    base.consumers.push(c);
    for (const p of c.platforms) if (!base.platforms.includes(p)) base.platforms.push(p);
  }

  const bases = [...byKey.values()];
  const byName = new Map<string, DerivedBase>();
  for (const b of bases) {
    b.platforms.sort();
    if (b.name === "") {
      problems.error(b.consumers[0].at(), "a derived base has an empty name (all its key values are empty)", "set derive.base.name to a template with a fixed part, e.g. 'base-{language}'");
      continue;
    }
    const other = byName.get(b.name);
    if (other) {
      problems.error(
        keyAt,
        `two different keys give the same base name '${b.name}': ${JSON.stringify(other.key)} and ${JSON.stringify(b.key)}`,
        "make derive.base.name include the fields that tell them apart",
      );
    }
    byName.set(b.name, b);
  }
  return bases;
}
