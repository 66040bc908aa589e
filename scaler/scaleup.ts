/**
 * Lambda entry: the scale-up consumer, the fleet's only launcher. Reserved concurrency 1 serialises
 * it; it is woken by the webhook (wake queue), by EC2 instance state changes and by a schedule, and
 * drains each pool's queue up to the pool's cap. The event itself carries nothing it needs.
 */
import { ConfigError } from "./config.ts";
import { runScaleUp, type ScaleUpReport } from "./core.ts";
import { errorMessage, jsonLogger } from "./ports.ts";
import { lazyDeps } from "./wiring.ts";

const deps = lazyDeps({ budgetMs: 20_000 });

export async function handler(_event?: unknown): Promise<ScaleUpReport> {
  try {
    return await runScaleUp(deps());
  } catch (err) {
    // Messages not yet handled become visible again after their timeout; the next wake-up serves them.
    jsonLogger.error(err instanceof ConfigError ? "configuration error" : "scale-up failed", { error: errorMessage(err) });
    throw err;
  }
}
