/**
 * Records the AWS calls the real scaler handlers make (the SDK commands their adapters send, through a middleware
 * on each client of the handler dependencies, plus the secrets they read), named by IAM action and by which of
 * the fleet's resources they touch, so test/iam-simulation.test.ts can judge each against the handler's role.
 */
import type { FleetStack } from "../support/fleet-stack.ts";

/** One call: the handler that made it, the IAM action, and the resource kind (`jit`, `state`, `pool`, `wake`, a secret, or "" for EC2/IAM). */
export interface RecordedAwsCall {
  handler: string;
  action: string;
  kind: string;
}

interface MiddlewareClient {
  middlewareStack: { add(mw: unknown, opts: { step: "initialize"; name: string }): void };
}

const SERVICE: Record<string, string> = { EC2Client: "ec2", SSMClient: "ssm", SQSClient: "sqs" };

export function recordAwsCalls(fleet: FleetStack): { calls: RecordedAwsCall[]; as<T>(handler: string, run: () => Promise<T>): Promise<T> } {
  const calls: RecordedAwsCall[] = [];
  let current: string | undefined;
  const { env, deps } = fleet;
  const paramPrefix = env.STRATA_PARAM_PREFIX!;
  const statePrefix = env.STRATA_STATE_PREFIX!;
  const ssmKind = (name: string) =>
    name.startsWith(paramPrefix) || name === paramPrefix.replace(/\/$/, "") ? "jit" : name.startsWith(statePrefix) || name === statePrefix.replace(/\/$/, "") ? "state" : `other: ${name}`;
  const sqsKind = (url: string) => (url === fleet.queueUrl ? "pool" : url === fleet.wakeQueueUrl ? "wake" : `other: ${url}`);
  const record = (action: string, kind = "") => {
    if (current) calls.push({ handler: current, action, kind });
  };

  // The adapters keep their SDK clients in (TypeScript-)private fields; params and state share one SSM client.
  const clients = new Set([deps.ec2, deps.params, deps.state, deps.queue].map((a) => (a as unknown as { client: MiddlewareClient }).client));
  for (const client of clients) {
    const service = SERVICE[client.constructor.name];
    if (!service) throw new Error(`no IAM service prefix for ${client.constructor.name}`);
    client.middlewareStack.add(
      (next: (a: unknown) => Promise<unknown>, context: { commandName: string }) => async (args: { input: Record<string, unknown> }) => {
        const op = context.commandName.replace(/Command$/, "");
        const input = args.input;
        if (service === "ssm") {
          const kind = ssmKind(String(input.Name ?? input.Path));
          record(`ssm:${op}`, kind);
          if (op === "PutParameter" && Array.isArray(input.Tags) && input.Tags.length > 0) record("ssm:AddTagsToResource", kind);
        } else if (service === "sqs") {
          record(`sqs:${op}`, sqsKind(String(input.QueueUrl)));
        } else {
          record(`ec2:${op}`);
          // A launch also tags the resources it creates (TagSpecifications) and passes the template's instance role.
          if (op === "RunInstances") {
            if (Array.isArray(input.TagSpecifications) && input.TagSpecifications.length > 0) record("ec2:CreateTags");
            record("iam:PassRole");
          }
        }
        return next(args);
      },
      { step: "initialize", name: "strataIamRecorder" },
    );
  }
  // Secrets are read through cached closures: record the read where the handler reaches for it.
  const webhookSecret = deps.webhookSecret;
  deps.webhookSecret = () => (record("secretsmanager:GetSecretValue", "webhook-secret"), webhookSecret());
  const github = deps.github;
  deps.github = () => (record("secretsmanager:GetSecretValue", "github-app"), github());

  return {
    calls,
    async as(handler, run) {
      current = handler;
      try {
        return await run();
      } finally {
        current = undefined;
      }
    },
  };
}
