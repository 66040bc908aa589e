/**
 * Lambda entry: EventBridge schedule. Terminates overdue / never-registered instances, deletes
 * orphaned JIT parameters and offline strata runners, enqueues queued jobs the queue missed,
 * retries pending re-runs and prunes old state.
 */
import { ConfigError } from "./config.ts";
import { runHousekeeping, type HousekeepingReport } from "./core.ts";
import { errorMessage, jsonLogger } from "./ports.ts";
import { lazyDeps } from "./wiring.ts";

// Housekeeping is not answering a webhook: allow GitHub longer waits than the webhook path.
const deps = lazyDeps({ budgetMs: 60_000, maxAttempts: 6 });

export async function handler(_event?: unknown): Promise<HousekeepingReport> {
  try {
    return await runHousekeeping(deps());
  } catch (err) {
    jsonLogger.error(err instanceof ConfigError ? "configuration error" : "housekeeping failed", { error: errorMessage(err) });
    // Thrown so the failure shows in the Lambda error metric; the next schedule tries again.
    throw err;
  }
}
