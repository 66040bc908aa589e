/**
 * Builds the real dependencies from the Lambda environment, once per container.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { SQSClient } from "@aws-sdk/client-sqs";
import { SSMClient } from "@aws-sdk/client-ssm";
import { AwsEc2, AwsParams, AwsQueue, AwsState, cachedSecret, sqsWake } from "./aws.ts";
import { parseAppSecret, parseConfig } from "./config.ts";
import { createGitHubClient, type RetryPolicy } from "./github.ts";
import type { ScalerDeps } from "./core.ts";
import { jsonLogger, type GitHubPort } from "./ports.ts";

/** Every handler's dependencies, made from AWS and GitHub clients; `webhookSecret` and `wake` for the webhook. */
export type RealDeps = Required<ScalerDeps> & { webhookSecret: () => Promise<string>; wake?: () => Promise<void> };

/** `clientConfig` points the AWS clients elsewhere (tests: moto on loopback); by default the Lambda's region and role. */
export function buildDeps(env: Record<string, string | undefined>, retry?: Partial<RetryPolicy>, clientConfig: Record<string, unknown> = {}): RealDeps {
  const config = parseConfig(env); // throws ConfigError naming each bad variable
  const log = jsonLogger;
  const secrets = new SecretsManagerClient(clientConfig);
  const ssm = new SSMClient(clientConfig);
  const sqs = new SQSClient(clientConfig);
  const appSecret = cachedSecret(secrets, config.githubAppSecretArn);
  let client: { raw: string; port: GitHubPort } | undefined;
  return {
    config,
    ec2: new AwsEc2(new EC2Client(clientConfig), config.tagKey),
    params: new AwsParams(ssm, config.instanceArnTag && { ...config.instanceArnTag, paramPrefix: config.paramPrefix }),
    state: new AwsState(ssm),
    queue: new AwsQueue(sqs),
    ...(config.wakeQueueUrl ? { wake: sqsWake(sqs, config.wakeQueueUrl) } : {}),
    webhookSecret: cachedSecret(secrets, config.webhookSecretArn),
    log,
    now: Date.now,
    github: async () => {
      const raw = await appSecret();
      // Keep the client (and its cached installation tokens) unless the secret changed.
      if (client?.raw !== raw) client = { raw, port: createGitHubClient({ apiUrl: config.githubApiUrl, owner: config.owner, ...(config.repo ? { repo: config.repo } : {}), app: parseAppSecret(raw), log, ...(retry ? { retry } : {}) }) };
      return client.port;
    },
  };
}

/** One cached set of dependencies per container; a configuration error is logged and thrown, not cached. */
export function lazyDeps(retry?: Partial<RetryPolicy>): () => RealDeps {
  let deps: RealDeps | undefined;
  return () => (deps ??= buildDeps(process.env, retry));
}
