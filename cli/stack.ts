import { existsSync } from "node:fs";
import { LIMITS } from "../matrix/files.ts";
import { SourceFile } from "../matrix/source.ts";

/**
 * Reads `Pulumi.<stack>.yaml` into config values, keys namespaced as Pulumi does (`strata:` when bare).
 * Encrypted values (`secure:`) cannot be read offline: they become the placeholder `[secret]`, marked secret.
 * The file must be a regular file of at most LIMITS.stackBytes (a FIFO or device is refused, not read).
 */
export function readStackFile(stack: string, dir = "."): { config: Record<string, unknown>; secretKeys: string[] } {
  const file = `${dir}/Pulumi.${stack}.yaml`;
  if (!existsSync(file)) return { config: {}, secretKeys: [] };
  const data = SourceFile.read(file, `Pulumi.${stack}.yaml`, LIMITS.stackBytes).data as { config?: Record<string, unknown> } | null;
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
