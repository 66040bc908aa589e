/**
 * The scaler's AWS resources created in moto (launch template, subnets, per-pool FIFO queues, wake
 * queue, secrets) and the real handler dependencies built from the same environment the fleet
 * component sets, pointed at moto and at the loopback GitHub. Plus the fault-injection layer for
 * what moto cannot produce.
 */
import { CreateLaunchTemplateCommand, DescribeSubnetsCommand, EC2Client } from "@aws-sdk/client-ec2";
import { CreateSecretCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from "@aws-sdk/client-sqs";
import { SSMClient } from "@aws-sdk/client-ssm";
import { after, before, beforeEach } from "node:test";
import { buildDeps, type RealDeps } from "../../scaler/wiring.ts";
import { LaunchError, silentLogger, type Ec2Port, type LaunchRequest } from "../../scaler/ports.ts";
import { startMoto, type Moto } from "./moto.ts";
import { FakeGitHubServer, generateAppKey } from "./github-server.ts";

export const WEBHOOK_SECRET = "moto-webhook-secret";
export const APP_ID = 4242;
export const INSTALLATION_ID = 777;
export const GPU = ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"];
const key = generateAppKey();

export interface FleetStack {
  deps: RealDeps;
  env: Record<string, string>;
  github: FakeGitHubServer;
  ec2: EC2Client;
  ssm: SSMClient;
  sqs: SQSClient;
  queueUrl: string;
  wakeQueueUrl: string;
  launchTemplateId: string;
  subnetIds: string[];
  /** Messages in the pool queue (visible + in flight). */
  queueDepth(): Promise<number>;
}

export interface FleetStackOptions {
  maxRunners?: number;
  spot?: boolean;
  repositories?: string[];
}

export async function createFleetStack(moto: Moto, github: FakeGitHubServer, o: FleetStackOptions = {}): Promise<FleetStack> {
  const cc = moto.clientConfig;
  const ec2 = new EC2Client(cc);
  const ssm = new SSMClient(cc);
  const sqs = new SQSClient(cc);
  const sm = new SecretsManagerClient(cc);
  const lt = await ec2.send(new CreateLaunchTemplateCommand({ LaunchTemplateName: `strata-gpu-${Date.now()}`, LaunchTemplateData: { ImageId: "ami-12c6146b", MetadataOptions: { HttpTokens: "required" } } }));
  const subnets = (await ec2.send(new DescribeSubnetsCommand({}))).Subnets!.map((s) => s.SubnetId!).slice(0, 2);
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "strata-test-gpu-base-builder.fifo", Attributes: { FifoQueue: "true", ContentBasedDeduplication: "false" } }))).QueueUrl!;
  const wakeQueueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "strata-test-wake" }))).QueueUrl!;
  const hook = await sm.send(new CreateSecretCommand({ Name: "strata/test/webhook", SecretString: WEBHOOK_SECRET }));
  const app = await sm.send(new CreateSecretCommand({ Name: "strata/test/app", SecretString: JSON.stringify({ appId: APP_ID, installationId: INSTALLATION_ID, privateKey: key.privateKeyPem }) }));
  const pool = {
    name: "gpu-base-builder",
    labels: GPU,
    launchTemplateId: lt.LaunchTemplate!.LaunchTemplateId!,
    instanceTypes: ["g6.4xlarge", "g5.4xlarge"],
    subnetIds: subnets,
    maxRunners: o.maxRunners ?? 2,
    maxRuntimeMinutes: 360,
    spot: o.spot ?? true,
    queueUrl,
  };
  const env = {
    STRATA_POOLS: JSON.stringify([pool]),
    STRATA_WEBHOOK_SECRET_ARN: hook.ARN!,
    STRATA_GITHUB_APP_SECRET_ARN: app.ARN!,
    STRATA_GITHUB_API_URL: github.url,
    STRATA_RUNNER_OWNER: "acme",
    STRATA_RUNNER_GROUP_ID: "7",
    STRATA_PARAM_PREFIX: "/strata/test/jit/",
    STRATA_STATE_PREFIX: "/strata/test/state/",
    STRATA_REPOSITORIES: JSON.stringify(o.repositories ?? ["acme/models"]),
    STRATA_WAKE_QUEUE_URL: wakeQueueUrl,
    STRATA_INSTANCE_ARN_PREFIX: "arn:aws:ec2:us-east-1:123456789012:instance/",
  };
  const deps = buildDeps(env, { sleep: async () => {}, random: () => 0.5, maxAttempts: 2 }, cc);
  deps.log = silentLogger;
  return {
    deps,
    env,
    github,
    ec2,
    ssm,
    sqs,
    queueUrl,
    wakeQueueUrl,
    launchTemplateId: pool.launchTemplateId,
    subnetIds: subnets,
    async queueDepth() {
      const a = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"] }))).Attributes!;
      return Number(a.ApproximateNumberOfMessages) + Number(a.ApproximateNumberOfMessagesNotVisible);
    },
  };
}

export function loopbackGitHub(): FakeGitHubServer {
  return new FakeGitHubServer({ appId: APP_ID, installationId: INSTALLATION_ID, publicKey: key.publicKey, scope: "orgs/acme" });
}

/**
 * Registers a test file's hooks for fleet tests: moto and the loopback GitHub start before its tests and stop after;
 * before each test moto is emptied and the loopback forgets its jobs, runners, recorded requests, reruns and
 * scripts. `create` then builds a fresh fleet stack in moto (call it from the file's own beforeEach or a test).
 */
export function useFleetStack(): { github: FakeGitHubServer; create(o?: FleetStackOptions): Promise<FleetStack> } {
  let moto: Moto;
  const github = loopbackGitHub();
  before(async () => {
    moto = await startMoto();
    await github.start();
  });
  after(async () => {
    await github.close();
    await moto.stop();
  });
  beforeEach(async () => {
    await moto.reset();
    github.jobs.clear();
    github.runners.clear();
    github.requests.length = 0;
    github.tokenRequests.length = 0;
    github.reruns.length = 0;
    github.clearScripts();
  });
  return { github, create: (o) => createFleetStack(moto, github, o) };
}

/**
 * Fault-injection layer in front of moto's EC2 (moto never runs out of capacity): `capacity`
 * answers an EC2 error code for a placement, e.g. InsufficientInstanceCapacity, and the launch
 * then fails as EC2 would, without reaching moto. Everything else goes to moto.
 */
export class InjectedCapacityFaults implements Ec2Port {
  readonly attempts: LaunchRequest[] = [];
  capacity: (req: LaunchRequest) => string | undefined = () => undefined;
  constructor(private readonly inner: Ec2Port) {}
  list: Ec2Port["list"] = (q) => this.inner.list(q);
  terminate: Ec2Port["terminate"] = (ids) => this.inner.terminate(ids);
  release: Ec2Port["release"] = (ids) => this.inner.release(ids);
  async launch(req: LaunchRequest): Promise<string> {
    this.attempts.push(req);
    const code = this.capacity(req);
    if (code) throw new LaunchError(code, `injected: ${code} for ${req.spot ? "spot" : "on-demand"} ${req.instanceType} in ${req.subnetId}`);
    return this.inner.launch(req);
  }
}
