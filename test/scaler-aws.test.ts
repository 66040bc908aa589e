import assert from "node:assert/strict";
import { test } from "node:test";
import type { SSMClient } from "@aws-sdk/client-ssm";
import { AwsParams } from "../scaler/aws.ts";
import { parseConfig } from "../scaler/config.ts";

/** An SSM client that records the commands it is sent. */
function recordingClient() {
  const sent: { name: string; input: Record<string, unknown> }[] = [];
  const client = { send: async (cmd: { constructor: { name: string }; input: Record<string, unknown> }) => void sent.push({ name: cmd.constructor.name, input: cmd.input }) };
  return { client: client as unknown as SSMClient, sent };
}

test("a JIT parameter is tagged with its instance's ARN, the condition the instance role reads it under", async () => {
  const { client, sent } = recordingClient();
  const params = new AwsParams(client, { key: "strata:instance-arn", prefix: "arn:aws:ec2:us-east-1:123456789012:instance/", paramPrefix: "/strata/dev/jit/" });
  await params.put("/strata/dev/jit/i-0123456789abcdef0", "encoded");
  assert.equal(sent[0].name, "PutParameterCommand");
  assert.equal(sent[0].input.Type, "SecureString");
  assert.equal(sent[0].input.Overwrite, false);
  assert.deepEqual(sent[0].input.Tags, [{ Key: "strata:instance-arn", Value: "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0" }]);
});

test("the ARN tag settings come from the environment the fleet component sets", () => {
  const env = {
    STRATA_POOLS: JSON.stringify([{ name: "p", labels: ["self-hosted", "gpu"], launchTemplateId: "lt-1", instanceTypes: ["g6.4xlarge"], subnetIds: ["subnet-1"], maxRunners: 2, maxRuntimeMinutes: 60, spot: true, queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/p.fifo" }]),
    STRATA_REPOSITORIES: '["acme/app"]',
    STRATA_STATE_PREFIX: "/strata/dev/state/",
    STRATA_WEBHOOK_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:w",
    STRATA_GITHUB_APP_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:a",
    STRATA_RUNNER_OWNER: "acme",
    STRATA_PARAM_PREFIX: "/strata/dev/jit/",
  };
  assert.equal(parseConfig(env).instanceArnTag, undefined);
  const tagged = parseConfig({ ...env, STRATA_INSTANCE_ARN_PREFIX: "arn:aws:ec2:us-east-1:123456789012:instance/" });
  assert.deepEqual(tagged.instanceArnTag, { key: "strata:instance-arn", prefix: "arn:aws:ec2:us-east-1:123456789012:instance/" });
  assert.throws(() => parseConfig({ ...env, STRATA_INSTANCE_ARN_PREFIX: "arn:aws:ec2:us-east-1:1234:instance/" }), /STRATA_INSTANCE_ARN_PREFIX/);
});
