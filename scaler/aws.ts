/**
 * AWS SDK v3 implementations of the ports. Thin: no decisions here.
 */
import {
  DeleteTagsCommand,
  EC2Client,
  paginateDescribeInstances,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type Filter,
  type Instance,
} from "@aws-sdk/client-ec2";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { ChangeMessageVisibilityCommand, DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { DeleteParameterCommand, GetParameterCommand, paginateGetParametersByPath, PutParameterCommand, SSMClient } from "@aws-sdk/client-ssm";
import { TAGS } from "./logic.ts";
import {
  ACTIVE_STATES,
  LaunchError,
  type Ec2Port,
  type InstanceQuery,
  type InstanceState,
  type LaunchRequest,
  type ParamInfo,
  type ParamPort,
  type QueuedJob,
  type QueueMessage,
  type QueuePort,
  type RunnerInstance,
  type StatePort,
} from "./ports.ts";

function awsCode(err: unknown): string {
  const e = err as { Code?: unknown; name?: unknown };
  return typeof e?.Code === "string" ? e.Code : typeof e?.name === "string" ? e.name : "Unknown";
}

function chunks<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

export function toRunnerInstance(i: Instance, tagKey: string): RunnerInstance | undefined {
  if (!i.InstanceId) return undefined;
  const tags = new Map((i.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""]));
  const opt = (k: string) => (tags.has(k) ? { v: tags.get(k)! } : undefined);
  const pool = opt(tagKey);
  const jobId = opt(TAGS.jobId);
  const delivery = opt(TAGS.delivery);
  const runnerName = opt(TAGS.runnerName);
  return {
    id: i.InstanceId,
    state: (i.State?.Name ?? "pending") as InstanceState,
    launchTime: i.LaunchTime ? new Date(i.LaunchTime).getTime() : 0,
    ...(pool ? { pool: pool.v } : {}),
    ...(jobId ? { jobId: jobId.v } : {}),
    ...(delivery ? { delivery: delivery.v } : {}),
    ...(runnerName ? { runnerName: runnerName.v } : {}),
  };
}

export class AwsEc2 implements Ec2Port {
  constructor(
    private readonly client: EC2Client,
    private readonly tagKey: string,
  ) {}

  async list(q: InstanceQuery): Promise<RunnerInstance[]> {
    const filters: Filter[] = [
      { Name: "tag-key", Values: [this.tagKey] },
      { Name: "instance-state-name", Values: [...(q.states ?? ACTIVE_STATES)] },
    ];
    if (q.pool !== undefined) filters.push({ Name: `tag:${this.tagKey}`, Values: [q.pool] });
    if (q.jobId !== undefined) filters.push({ Name: `tag:${TAGS.jobId}`, Values: [q.jobId] });
    if (q.delivery !== undefined) filters.push({ Name: `tag:${TAGS.delivery}`, Values: [q.delivery] });
    if (q.instanceIds !== undefined) filters.push({ Name: "instance-id", Values: q.instanceIds });
    const out: RunnerInstance[] = [];
    for await (const page of paginateDescribeInstances({ client: this.client, pageSize: 1000 }, { Filters: filters, MaxResults: 1000 })) {
      for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) {
        const ri = toRunnerInstance(i, this.tagKey);
        if (ri) out.push(ri);
      }
    }
    return out;
  }

  async launch(req: LaunchRequest): Promise<string> {
    try {
      const res = await this.client.send(
        new RunInstancesCommand({
          MinCount: 1,
          MaxCount: 1,
          LaunchTemplate: { LaunchTemplateId: req.launchTemplateId, Version: "$Latest" },
          InstanceType: req.instanceType as never,
          SubnetId: req.subnetId,
          InstanceInitiatedShutdownBehavior: "terminate",
          ...(req.spot ? { InstanceMarketOptions: { MarketType: "spot", SpotOptions: { SpotInstanceType: "one-time", InstanceInterruptionBehavior: "terminate" } } } : {}),
          TagSpecifications: [{ ResourceType: "instance", Tags: Object.entries(req.tags).map(([Key, Value]) => ({ Key, Value })) }],
        }),
      );
      const id = res.Instances?.[0]?.InstanceId;
      if (!id) throw new LaunchError("NoInstance", "RunInstances returned no instance");
      return id;
    } catch (err) {
      if (err instanceof LaunchError) throw err;
      throw new LaunchError(awsCode(err), (err as Error)?.message ?? String(err));
    }
  }

  async terminate(ids: string[]): Promise<void> {
    for (const batch of chunks(ids, 1000)) {
      try {
        await this.client.send(new TerminateInstancesCommand({ InstanceIds: batch }));
      } catch (err) {
        if (awsCode(err) !== "InvalidInstanceID.NotFound") throw err;
        // One unknown id fails the whole call: retry one by one, skipping the gone ones.
        for (const id of batch) {
          await this.client.send(new TerminateInstancesCommand({ InstanceIds: [id] })).catch((e: unknown) => {
            if (awsCode(e) !== "InvalidInstanceID.NotFound") throw e;
          });
        }
      }
    }
  }

  async release(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    for (const batch of chunks(ids, 1000)) {
      await this.client.send(new DeleteTagsCommand({ Resources: batch, Tags: [{ Key: TAGS.jobId }, { Key: TAGS.delivery }] })).catch(() => undefined);
    }
    await this.terminate(ids);
  }
}

export class AwsParams implements ParamPort {
  /** With `arnTag`, each parameter `<prefix><instance id>` is tagged with that instance's ARN, so only it may read it. */
  constructor(
    private readonly client: SSMClient,
    private readonly arnTag?: { key: string; prefix: string; paramPrefix: string },
  ) {}

  async put(name: string, value: string): Promise<void> {
    const t = this.arnTag;
    const tags = t && name.startsWith(t.paramPrefix) ? [{ Key: t.key, Value: `${t.prefix}${name.slice(t.paramPrefix.length)}` }] : undefined;
    // Intelligent-Tiering: a JIT config may exceed the 4 KB of the standard tier.
    await this.client.send(new PutParameterCommand({ Name: name, Value: value, Type: "SecureString", Overwrite: false, Tier: "Intelligent-Tiering", Tags: tags }));
  }

  delete(name: string): Promise<boolean> {
    return deleteParameter(this.client, name);
  }

  async list(prefix: string): Promise<ParamInfo[]> {
    const out: ParamInfo[] = [];
    const path = prefix.replace(/\/+$/, "") || "/";
    for await (const page of paginateGetParametersByPath({ client: this.client }, { Path: path, Recursive: false, WithDecryption: false, MaxResults: 10 })) {
      for (const p of page.Parameters ?? []) if (p.Name) out.push({ name: p.Name, lastModified: p.LastModifiedDate ? new Date(p.LastModifiedDate).getTime() : 0 });
    }
    return out;
  }
}

/** Deletes an SSM parameter: false if there was none. */
async function deleteParameter(client: SSMClient, name: string): Promise<boolean> {
  try {
    await client.send(new DeleteParameterCommand({ Name: name }));
    return true;
  } catch (err) {
    if (awsCode(err) === "ParameterNotFound") return false;
    throw err;
  }
}

/** Standard-tier String parameters under the state prefix: small JSON documents, no secrets. */
export class AwsState implements StatePort {
  constructor(private readonly client: SSMClient) {}

  async create(name: string, value: string): Promise<boolean> {
    try {
      await this.client.send(new PutParameterCommand({ Name: name, Value: value, Type: "String", Overwrite: false }));
      return true;
    } catch (err) {
      if (awsCode(err) === "ParameterAlreadyExists") return false;
      throw err;
    }
  }

  async put(name: string, value: string): Promise<void> {
    await this.client.send(new PutParameterCommand({ Name: name, Value: value, Type: "String", Overwrite: true }));
  }

  async get(name: string): Promise<string | undefined> {
    try {
      return (await this.client.send(new GetParameterCommand({ Name: name }))).Parameter?.Value;
    } catch (err) {
      if (awsCode(err) === "ParameterNotFound") return undefined;
      throw err;
    }
  }

  async list(prefix: string): Promise<{ name: string; value: string }[]> {
    const out: { name: string; value: string }[] = [];
    const path = prefix.replace(/\/+$/, "") || "/";
    for await (const page of paginateGetParametersByPath({ client: this.client }, { Path: path, Recursive: true, MaxResults: 10 })) {
      for (const p of page.Parameters ?? []) if (p.Name && p.Value !== undefined) out.push({ name: p.Name, value: p.Value });
    }
    return out;
  }

  delete(name: string): Promise<boolean> {
    return deleteParameter(this.client, name);
  }
}

/** A pool's FIFO queue: one message group per pool (arrival order), deduplicated by job id. */
export class AwsQueue implements QueuePort {
  constructor(private readonly client: SQSClient) {}

  async send(queueUrl: string, job: QueuedJob, dedupId = String(job.jobId)): Promise<void> {
    await this.client.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(job), MessageGroupId: job.pool, MessageDeduplicationId: dedupId }));
  }

  async receive(queueUrl: string, max: number, visibilitySeconds: number): Promise<QueueMessage[]> {
    const res = await this.client.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: Math.min(10, Math.max(1, max)), VisibilityTimeout: visibilitySeconds, WaitTimeSeconds: 0, MessageSystemAttributeNames: ["ApproximateReceiveCount"] }),
    );
    const out: QueueMessage[] = [];
    for (const m of res.Messages ?? []) {
      if (!m.ReceiptHandle) continue;
      let job: QueuedJob | undefined;
      try {
        job = JSON.parse(m.Body ?? "") as QueuedJob;
      } catch {
        job = undefined;
      }
      if (!job || typeof job.jobId !== "number" || typeof job.repository !== "string") {
        // Not ours (nothing but the webhook and housekeeping may send): drop it rather than block the group.
        await this.delete(queueUrl, m.ReceiptHandle);
        continue;
      }
      out.push({ job, receipt: m.ReceiptHandle, receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1) });
    }
    return out;
  }

  async delete(queueUrl: string, receipt: string): Promise<void> {
    await this.client.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: receipt }));
  }

  async retryLater(queueUrl: string, receipt: string, seconds: number): Promise<void> {
    await this.client.send(new ChangeMessageVisibilityCommand({ QueueUrl: queueUrl, ReceiptHandle: receipt, VisibilityTimeout: Math.max(0, Math.min(43_200, Math.round(seconds))) }));
  }
}

/** Wake the consumer: a message on its (standard) wake queue, which an event source mapping turns into an invoke. */
export function sqsWake(client: SQSClient, wakeQueueUrl: string): () => Promise<void> {
  return async () => {
    await client.send(new SendMessageCommand({ QueueUrl: wakeQueueUrl, MessageBody: "{}" }));
  };
}

/** Secrets Manager read with a per-container cache (rotation is picked up after ttlMs). */
export function cachedSecret(client: SecretsManagerClient, arn: string, ttlMs = 5 * 60_000): () => Promise<string> {
  let cached: { value: string; at: number } | undefined;
  let inflight: Promise<string> | undefined;
  return async () => {
    if (cached && Date.now() - cached.at < ttlMs) return cached.value;
    inflight ??= (async () => {
      try {
        const res = await client.send(new GetSecretValueCommand({ SecretId: arn }));
        if (typeof res.SecretString !== "string" || res.SecretString === "") throw new Error(`secret ${arn} has no string value`);
        cached = { value: res.SecretString, at: Date.now() };
        return res.SecretString;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };
}
