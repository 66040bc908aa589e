/**
 * Lambda entry: EventBridge schedule. Terminates overdue / never-registered
 * instances, deletes orphaned JIT parameters and offline strata runners.
 */
import { ConfigError } from "./config.ts";
import { runHousekeeping, type HousekeepingReport } from "./core.ts";
import { errorMessage, jsonLogger } from "./ports.ts";
import { buildDeps, type RealDeps } from "./wiring.ts";

let deps: RealDeps | undefined;

export async function handler(_event?: unknown): Promise<HousekeepingReport> {
  try {
    // Housekeeping is not answering a webhook: allow GitHub longer waits than the webhook path.
    deps ??= buildDeps(process.env, { budgetMs: 60_000, maxAttempts: 6 });
  } catch (err) {
    jsonLogger.error(err instanceof ConfigError ? "configuration error" : "initialisation failed", { error: errorMessage(err) });
    // Thrown so the failure shows in the Lambda error metric; the next schedule tries again.
    throw err;
  }
  return runHousekeeping(deps);
}
