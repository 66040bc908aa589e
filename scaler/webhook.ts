/**
 * Lambda entry: GitHub `workflow_job` webhook behind a function URL (payload v2): verify, filter, enqueue.
 */
import { ConfigError } from "./config.ts";
import { createWebhookHandler, type FunctionUrlEvent, type HttpResult } from "./core.ts";
import { errorMessage, jsonLogger } from "./ports.ts";
import { buildDeps } from "./wiring.ts";

let handle: ((e: FunctionUrlEvent) => Promise<HttpResult>) | undefined;

export async function handler(event: FunctionUrlEvent): Promise<HttpResult> {
  try {
    handle ??= createWebhookHandler(buildDeps(process.env));
  } catch (err) {
    // Not cached: a fixed environment (new deployment) is picked up by the next call.
    jsonLogger.error(err instanceof ConfigError ? "configuration error" : "initialisation failed", { error: errorMessage(err) });
    return { statusCode: 500, headers: { "content-type": "application/json" }, body: JSON.stringify({ error: "scaler misconfigured" }) };
  }
  return handle(event);
}
