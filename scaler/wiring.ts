/**
 * Builds the real dependencies from the Lambda environment, once per container.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { SSMClient } from "@aws-sdk/client-ssm";
import { AwsEc2, AwsParams, cachedSecret } from "./aws.ts";
import { parseAppSecret, parseConfig, type ScalerConfig } from "./config.ts";
import { createGitHubClient, type RetryPolicy } from "./github.ts";
import { jsonLogger, type Ec2Port, type GitHubPort, type Logger, type ParamPort } from "./ports.ts";

export interface RealDeps {
  config: ScalerConfig;
  ec2: Ec2Port;
  params: ParamPort;
  github: () => Promise<GitHubPort>;
  webhookSecret: () => Promise<string>;
  log: Logger;
}

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
