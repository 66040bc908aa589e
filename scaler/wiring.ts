/**
 * Builds the real dependencies from the Lambda environment, once per container.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { SSMClient } from "@aws-sdk/client-ssm";
import { AwsEc2, AwsParams, cachedSecret } from "./aws.ts";
import { parseAppSecret, parseConfig } from "./config.ts";
import { createGitHubClient, type RetryPolicy } from "./github.ts";
import type { WebhookDeps } from "./core.ts";
import { jsonLogger, type GitHubPort } from "./ports.ts";

/** The webhook's dependencies, made from AWS and GitHub clients (housekeeping uses the same ones). */
export type RealDeps = Required<Pick<WebhookDeps, "config" | "ec2" | "params" | "github" | "webhookSecret" | "log">>;

export function buildDeps(env: Record<string, string | undefined>, retry?: Partial<RetryPolicy>): RealDeps {
  const config = parseConfig(env); // throws ConfigError naming each bad variable
  const log = jsonLogger;
  const secrets = new SecretsManagerClient({});
  const appSecret = cachedSecret(secrets, config.githubAppSecretArn);
  let client: { raw: string; port: GitHubPort } | undefined;
  return {
    config,
    ec2: new AwsEc2(new EC2Client({}), config.tagKey),
    params: new AwsParams(new SSMClient({}), config.instanceArnTag && { ...config.instanceArnTag, paramPrefix: config.paramPrefix }),
    webhookSecret: cachedSecret(secrets, config.webhookSecretArn),
    log,
    github: async () => {
      const raw = await appSecret();
      // Keep the client (and its cached installation token) unless the secret changed.
      if (client?.raw !== raw) client = { raw, port: createGitHubClient({ apiUrl: config.githubApiUrl, owner: config.owner, ...(config.repo ? { repo: config.repo } : {}), app: parseAppSecret(raw), log, ...(retry ? { retry } : {}) }) };
      return client.port;
    },
  };
}
