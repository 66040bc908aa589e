import { existsSync } from "node:fs";
import { MatrixError, type Problem } from "../matrix/errors.ts";
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
 * A secret setting in plain text is a MatrixError at its line (`plaintextSecretProblems`).
 */
export function readStackFile(stack: string, dir = "."): { config: Record<string, unknown>; secretKeys: string[] } {
  const file = `${dir}/Pulumi.${stack}.yaml`;
  if (!existsSync(file)) return { config: {}, secretKeys: [] };
  const src = SourceFile.read(file, `Pulumi.${stack}.yaml`);
  const plaintext = plaintextSecretProblems(src);
  if (plaintext.length > 0) throw new MatrixError(plaintext);
  const data = src.data as { config?: Record<string, unknown> } | null;
  const config: Record<string, unknown> = {};
  const secretKeys: string[] = [];
  for (const [rawKey, value] of Object.entries(data?.config ?? {})) {
    const key = rawKey.includes(":") ? rawKey : `strata:${rawKey}`;
    if (value && typeof value === "object" && "secure" in value) {
      config[key] = "[secret]";
      secretKeys.push(key);
    } else {
      config[key] = value;
    }
  }
  return { config, secretKeys };
}
