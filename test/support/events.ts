/** Builders for signed GitHub webhook deliveries as Lambda function URL events. */
import { createHmac, randomUUID } from "node:crypto";
import type { Pool, ScalerConfig } from "../../scaler/config.ts";
import type { FunctionUrlEvent } from "../../scaler/core.ts";

export function sign(secret: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

export interface DeliveryOptions {
  event?: string;
  delivery?: string;
  signature?: string | null;
  base64?: boolean;
}

export function delivery(secret: string, payload: unknown, o: DeliveryOptions = {}): FunctionUrlEvent {
  const body = typeof payload === "string" ? payload : JSON.stringify(payload);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "x-github-event": o.event ?? "workflow_job",
    "x-github-delivery": o.delivery ?? randomUUID(),
    "user-agent": "GitHub-Hookshot/test",
  };
  const sig = o.signature === undefined ? sign(secret, body) : o.signature;
  if (sig !== null) headers["x-hub-signature-256"] = sig;
  return {
    headers,
    body: o.base64 ? Buffer.from(body).toString("base64") : body,
    isBase64Encoded: o.base64 ?? false,
    requestContext: { http: { method: "POST", path: "/", sourceIp: "192.30.252.1" } },
  };
}

export function jobPayload(
  action: string,
  jobId: number,
  labels: string[],
  extra: { runnerName?: string | null; owner?: string; repo?: string; conclusion?: string | null; runId?: number; runAttempt?: number; name?: string; createdAt?: number } = {},
): unknown {
  return {
    action,
    workflow_job: {
      id: jobId,
      run_id: extra.runId ?? 1000 + jobId,
      run_attempt: extra.runAttempt ?? 1,
      name: extra.name ?? "build",
      status: action === "completed" ? "completed" : action,
      conclusion: extra.conclusion ?? (action === "completed" ? "success" : null),
      created_at: new Date(extra.createdAt ?? Date.now()).toISOString(),
      labels,
      runner_name: extra.runnerName ?? null,
    },
    repository: { name: extra.repo ?? "app", full_name: `${extra.owner ?? "acme"}/${extra.repo ?? "app"}`, owner: { login: extra.owner ?? "acme" } },
  };
}

export function testPool(over: Partial<Pool> = {}): Pool {
  return {
    name: "gpu",
    labels: ["self-hosted", "linux", "x64", "gpu"],
    launchTemplateId: "lt-0123456789abcdef0",
    instanceTypes: ["g6.xlarge", "g5.xlarge"],
    subnetIds: ["subnet-0a", "subnet-0b", "subnet-0c"],
    maxRunners: 5,
    maxRuntimeMinutes: 120,
    spot: true,
    queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/strata-test-gpu.fifo",
    ...over,
  };
}

export function testConfig(over: Partial<ScalerConfig> = {}): ScalerConfig {
  return {
    pools: [testPool()],
    webhookSecretArn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook-AbCdEf",
    githubAppSecretArn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
    githubApiUrl: "https://api.github.com",
    owner: "acme",
    runnerGroupId: 1,
    paramPrefix: "/strata/test/jit/",
    tagKey: "strata:pool",
    registrationTimeoutMinutes: 10,
    repositories: ["acme/app"],
    statePrefix: "/strata/test/state/",
    breaker: { failures: 3, windowMinutes: 30, onDemandMinutes: 60 },
    ...over,
  };
}
