/**
 * Instance user data: scaler/userdata.sh with its {{PLACEHOLDERS}} filled in.
 * Values are validated so nothing rendered can break out of its shell quoting.
 */
import { readFileSync } from "node:fs";

export interface UserDataVars {
  REGION: string;
  PARAM_PREFIX: string;
  MAX_RUNTIME_MINUTES: number | string;
  RUNNER_VERSION: string;
  RUNNER_USER: string;
}

const RULES: Record<keyof UserDataVars, { re: RegExp; what: string }> = {
  REGION: { re: /^[a-z]{2}(?:-[a-z]+)+-\d$/, what: "an AWS region like us-east-1" },
  PARAM_PREFIX: { re: /^\/(?:[A-Za-z0-9_.-]+\/)+$/, what: "an SSM path starting and ending with '/'" },
  MAX_RUNTIME_MINUTES: { re: /^[1-9]\d{0,4}$/, what: "a positive whole number of minutes" },
  RUNNER_VERSION: { re: /^\d+\.\d+\.\d+$/, what: "an actions/runner version like 2.330.0" },
  RUNNER_USER: { re: /^[a-z_][a-z0-9_-]{0,31}$/, what: "a Linux user name" },
};
const KNOWN = Object.keys(RULES) as (keyof UserDataVars)[];

export const USERDATA_TEMPLATE_PATH = new URL("./userdata.sh", import.meta.url);

let template: string | undefined;
/** The template text (read once from scaler/userdata.sh next to this module). */
export function userDataTemplate(): string {
  template ??= readFileSync(USERDATA_TEMPLATE_PATH, "utf8");
  return template;
}

/**
 * Substitute every {{NAME}} in the template. Throws if a variable is missing,
 * unknown, or invalid, or if the template holds a placeholder nobody defines.
 */
export function renderUserData(vars: UserDataVars, tpl: string = userDataTemplate()): string {
  const given = vars as unknown as Record<string, unknown>;
  const problems: string[] = [];
  for (const k of Object.keys(given)) if (!(KNOWN as string[]).includes(k)) problems.push(`unknown variable ${k}`);
  for (const k of KNOWN) {
    const v = given[k];
    if (v === undefined || v === null || v === "") problems.push(`missing variable ${k}`);
    else if ((typeof v !== "string" && typeof v !== "number") || !RULES[k].re.test(String(v))) problems.push(`${k} must be ${RULES[k].what}, got ${JSON.stringify(v)}`);
  }
  const used = new Set([...tpl.matchAll(/\{\{([^{}]*)\}\}/g)].map((m) => m[1]!));
  for (const u of used) if (!(KNOWN as string[]).includes(u)) problems.push(`template has unknown placeholder {{${u}}}`);
  for (const k of KNOWN) if (!used.has(k)) problems.push(`template does not use {{${k}}}`);
  if (problems.length > 0) throw new Error(`renderUserData: ${problems.join("; ")}`);
  return tpl.replace(/\{\{([A-Z_]+)\}\}/g, (_, k: keyof UserDataVars) => String(given[k]));
}
