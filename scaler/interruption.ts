/**
 * Lambda entry: EventBridge `EC2 Spot Instance Interruption Warning` and `EC2 Instance Rebalance
 * Recommendation`. Records the interruption (breaker, re-run) and removes the idle runner.
 */
import { ConfigError } from "./config.ts";
import { handleInterruption, type Ec2SpotEvent, type InterruptionReport } from "./core.ts";
import { errorMessage, jsonLogger } from "./ports.ts";
import { lazyDeps } from "./wiring.ts";

const deps = lazyDeps();

export async function handler(event: Ec2SpotEvent): Promise<InterruptionReport> {
  try {
    return await handleInterruption(deps(), event);
  } catch (err) {
    jsonLogger.error(err instanceof ConfigError ? "configuration error" : "interruption handling failed", { error: errorMessage(err) });
    throw err; // EventBridge retries the invoke
  }
}
