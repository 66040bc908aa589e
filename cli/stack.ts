import { existsSync } from "node:fs";
import { MatrixError, type Problem } from "../matrix/errors.ts";
import { LIMITS } from "../matrix/files.ts";
import { SourceFile } from "../matrix/source.ts";

/** Settings that hold a secret: in a stack file they must be encrypted (`secure:`), never plain text. */
export const SECRET_SETTINGS = ["strata:githubAppPrivateKey", "strata:registryPassword"] as const;

/**
 * A secret setting written in plain text in a stack file (`pulumi config set` without `--secret`), one problem at
 * its line. The program (pulumi up) and the offline CLI apply this same rule to the same file.
 */
export function plaintextSecretProblems(src: SourceFile): Problem[] {
  const config = ((src.data as { config?: Record<string, unknown> } | null)?.config ?? {}) as Record<string, unknown>;
  const problems: Problem[] = [];
  for (const [rawKey, value] of Object.entries(config)) {
    const key = rawKey.includes(":") ? rawKey : `strata:${rawKey}`;
    if (!(SECRET_SETTINGS as readonly string[]).includes(key)) continue;
    if (value && typeof value === "object" && "secure" in value) continue;
    problems.push({
      ...src.locate(["config", rawKey]),
      message: `${key} is a secret but is stored in plain text in ${src.file.split("/").pop()} (anyone who can read the repository can read it)`,
      fix: `encrypt it: pulumi config set --secret ${key} ${key === "strata:githubAppPrivateKey" ? "< app.pem" : "VALUE"} (and rotate the exposed value)`,
    });
  }
  return problems;
}

/**
 * Reads `Pulumi.<stack>.yaml` into config values, keys namespaced as Pulumi does (`strata:` when bare).
 * Encrypted values (`secure:`) cannot be read offline: they become the placeholder `[secret]`, marked secret.
 * The file must be a regular file of at most LIMITS.stackBytes (a FIFO or device is refused, not read), and the
 * values the CLI itself reads (strata:matrix, the strings of strata:registry and strata:release) must have their
 * types; the program validates the rest with config.ts, which `strata plan` runs.
 * A secret setting in plain text is a MatrixError at its line (`plaintextSecretProblems`).
 */
export function readStackFile(stack: string, dir = "."): { config: Record<string, unknown>; secretKeys: string[] } {
  const file = `${dir}/Pulumi.${stack}.yaml`;
  if (!existsSync(file)) return { config: {}, secretKeys: [] };
  const display = `Pulumi.${stack}.yaml`;
  const src = SourceFile.read(file, display, LIMITS.stackBytes);
  const plaintext = plaintextSecretProblems(src);
  if (plaintext.length > 0) throw new MatrixError(plaintext);
  const problems: Problem[] = [];
  const fail = (path: (string | number)[], message: string, fix: string) => problems.push({ ...src.locate(path), message, fix });
  const data = src.data;
  if (data !== null && data !== undefined && !isMapping(data)) {
    fail([], "a stack file must be a mapping (with a `config:` mapping)", "see Pulumi.dev.yaml for the shape");
    throw new MatrixError(problems);
  }
  const raw = (data as { config?: unknown } | null | undefined)?.config ?? {};
  if (!isMapping(raw)) {
    fail(["config"], "`config:` must be a mapping of keys to values", "write one `strata:<key>: value` per line under `config:`");
    throw new MatrixError(problems);
  }
  const config: Record<string, unknown> = {};
  const secretKeys: string[] = [];
  for (const [rawKey, value] of Object.entries(raw)) {
    const key = rawKey.includes(":") ? rawKey : `strata:${rawKey}`;
    if (isMapping(value) && "secure" in value) {
      config[key] = "[secret]";
      secretKeys.push(key);
    } else {
      config[key] = value;
    }
    const at = (...path: string[]) => ["config", rawKey, ...path];
    for (const path of nonFinite(value)) {
      fail(at(...path), `${key}${path.map((p) => `.${p}`).join("")} is a number too large to represent (${src.rawText(at(...path)) ?? "Infinity"})`, "write a number within range (Pulumi passes config as JSON, which has no Infinity or NaN)");
    }
    if (key === "strata:matrix" && (typeof value !== "string" || value === "")) fail(at(), "strata:matrix must be the path of the matrix file", "pulumi config set strata:matrix strata.yaml");
    if ((key === "strata:registry" || key === "strata:release") && value !== undefined && value !== null) {
      if (!isMapping(value)) {
        fail(at(), `${key} must be a mapping`, key === "strata:registry" ? "pulumi config set --path strata:registry.kind ecr" : "pulumi config set --path strata:release.version v0.1.0");
        continue;
      }
      for (const field of key === "strata:registry" ? ["kind", "address", "prefix"] : ["version", "branch", "sha"]) {
        const v = value[field];
        if (v !== undefined && (typeof v !== "string" || v === "")) fail(at(field), `${key}.${field} must be a string`, `quote it: pulumi config set --path ${key}.${field} "${String(v)}"`);
      }
    }
  }
  if (problems.length > 0) throw new MatrixError(problems);
  return { config, secretKeys };
}

/** Paths of the numbers in `v` that JSON cannot carry (1e400 reads as Infinity and would arrive as null). */
function nonFinite(v: unknown, path: string[] = []): string[][] {
  if (typeof v === "number") return Number.isFinite(v) ? [] : [path];
  if (typeof v !== "object" || v === null || path.length > 32) return [];
  return Object.entries(v).flatMap(([k, x]) => nonFinite(x, [...path, k]));
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
