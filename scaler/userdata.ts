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
  /** sha256 of actions-runner-linux-x64-<RUNNER_VERSION>.tar.gz. Default: `KNOWN_RUNNER_SHA256[RUNNER_VERSION]`. */
  RUNNER_SHA256?: string;
  RUNNER_USER: string;
}

/**
 * sha256 of the actions/runner linux-x64 release packages strata knows, verified before extracting. 2.329.0: the
 * value GitHub's "Add new self-hosted runner" instructions print for actions-runner-linux-x64-2.329.0.tar.gz, found
 * verbatim and identical in many independent public repositories pinning that version (setup scripts, Dockerfiles
 * with `ADD --checksum=sha256:...`). The release notes of https://github.com/actions/runner/releases/tag/v2.329.0
 * carry the per-package SHA-256 (their template, releaseNote.md, has a `BEGIN SHA linux-x64` slot), but neither
 * they nor the package could be fetched where this was written. Another version needs `strata:fleet.runnerSha256`.
 */
export const KNOWN_RUNNER_SHA256: Readonly<Record<string, string>> = {
  "2.329.0": "194f1e1e4bd02f80b7e9633fc546084d8d4e19f3928a324d512ea53430102e1d",
};

/** What to do when no checksum is known for a runner version. */
export function missingRunnerSha256(version: string): string {
  return `no sha256 is known for actions/runner ${version}: set strata:fleet.runnerSha256 to the SHA-256 of actions-runner-linux-x64-${version}.tar.gz from https://github.com/actions/runner/releases/tag/v${version}`;
}

const RULES: Record<keyof UserDataVars, { re: RegExp; what: string }> = {
  REGION: { re: /^[a-z]{2}(?:-[a-z]+)+-\d$/, what: "an AWS region like us-east-1" },
  PARAM_PREFIX: { re: /^\/(?:[A-Za-z0-9_.-]+\/)+$/, what: "an SSM path starting and ending with '/'" },
  MAX_RUNTIME_MINUTES: { re: /^[1-9]\d{0,4}$/, what: "a positive whole number of minutes" },
  RUNNER_VERSION: { re: /^\d+\.\d+\.\d+$/, what: "an actions/runner version like 2.330.0" },
  RUNNER_SHA256: { re: /^[0-9a-f]{64}$/, what: "a SHA-256 of 64 lowercase hex digits" },
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
  const known = typeof vars.RUNNER_VERSION === "string" ? KNOWN_RUNNER_SHA256[vars.RUNNER_VERSION] : undefined;
  if (vars.RUNNER_SHA256 === undefined && known === undefined && typeof vars.RUNNER_VERSION === "string" && RULES.RUNNER_VERSION.re.test(vars.RUNNER_VERSION)) {
    throw new Error(`renderUserData: ${missingRunnerSha256(vars.RUNNER_VERSION)}`);
  }
  const given = { ...vars, RUNNER_SHA256: vars.RUNNER_SHA256 ?? known } as unknown as Record<string, unknown>;
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
  return tpl.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_, k: keyof UserDataVars) => String(given[k]));
}
