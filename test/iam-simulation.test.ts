/**
 * Every IAM policy and trust policy the program declares, simulated with @cloud-copilot/iam-simulate: the calls
 * strata's own parts make are allowed, strangers' calls are denied. One row per call; add a row with one line.
 * The table is printed into docs/security.md (STRATA_WRITE_DOCS=1 rewrites it; otherwise a difference fails).
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { DescribeInstancesCommand } from "@aws-sdk/client-ec2";
import { createWebhookHandler, handleInterruption, runHousekeeping, runScaleUp } from "../scaler/core.ts";
import { cleanup, REPO, simpleProject } from "./helpers.ts";
import { ACCOUNT, AMI, declareProgram, judge, REGION, type Call, type Declared, type Verdict } from "./iam/harness.ts";
import { recordAwsCalls, type RecordedAwsCall } from "./iam/recorder.ts";
import { delivery, jobPayload } from "./support/events.ts";
import { createFleetStack, GPU, loopbackGitHub, WEBHOOK_SECRET } from "./support/fleet-stack.ts";
import { startMoto } from "./support/moto.ts";

const STACK = "sim";
const POOL = "gpu-base-builder";
const REPOSITORY = "acme/models";
const dir = simpleProject();
let d: Declared;
before(async () => {
  d = await declareProgram(STACK, {
    "strata:matrix": join(dir, "strata.yaml"),
    "strata:registry": { kind: "ecr" },
    "strata:release": { version: "v1.2.3" },
    "strata:fleet": { enabled: true, runnerOwner: "acme" },
    "strata:githubAppId": "123",
    "strata:githubAppInstallationId": "456",
    "strata:githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    "strata:github": { repositories: [REPOSITORY] },
  }, ["strata:githubAppPrivateKey"]);
});
after(() => cleanup(dir));

interface Row extends Call {
  expect: Verdict;
  reason: string;
}

// ARNs of the things calls name.
const ec2 = (r: string) => `arn:aws:ec2:${REGION}:${ACCOUNT}:${r}`;
const SELF = "i-0aaaaaaaaaaaaaaa1";
const OTHER = "i-0bbbbbbbbbbbbbbb2";
const instance = (id: string) => ec2(`instance/${id}`);
const jit = (id: string) => `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/jit/${id}`;
const repo = (name: "bases" | "runtimes" | "cache") => `arn:aws:ecr:${REGION}:${ACCOUNT}:repository/strata/${name}`;
const logStream = (group: string, stream: string) => `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/strata/${STACK}/fleet/${group}:log-stream:${stream}`;
const secret = (name: string) => `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:fleet-${name}-AbCdEf`;
const role = (name: string) => `arn:aws:iam::${ACCOUNT}:role/${name}`;
const state = (key: string) => `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/state/${key}`;
const statePath = `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/state`;
const jitPath = `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/jit`;
const queue = (name: string) => `arn:aws:sqs:${REGION}:${ACCOUNT}:${name}`;
const POOL_QUEUE = `strata-${STACK}-${POOL}.fifo`;
const WAKE_QUEUE = `strata-${STACK}-fleet-wake`;
const otherQueue = queue(`strata-other-${POOL}.fifo`);
/** What a row's resource is, in the terms test/iam/recorder.ts names a recorded call's resource. */
function rowKind(resource: string): string {
  if (resource.startsWith("arn:aws:ssm:") && resource.includes(`/strata/${STACK}/jit`)) return "jit";
  if (resource.startsWith("arn:aws:ssm:") && resource.includes(`/strata/${STACK}/state`)) return "state";
  if (resource === queue(POOL_QUEUE)) return "pool";
  if (resource === queue(WAKE_QUEUE)) return "wake";
  if (resource === secret("webhook-secret")) return "webhook-secret";
  if (resource === secret("github-app")) return "github-app";
  return /^arn:aws:(ec2|iam):|^\*$/.test(resource) ? "" : `other: ${resource}`;
}
const AMI_PARAMETER = `arn:aws:ssm:${REGION}::parameter/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id`;

/** The instance's own request context: IAM sets ec2:SourceInstanceARN for instance-profile credentials. */
const fromInstance = (extra: Record<string, string | string[]> = {}) => ({ "ec2:SourceInstanceARN": instance(SELF), ...extra });
const taggedFor = (owner: string) => fromInstance({ "ssm:resourceTag/strata:instance-arn": instance(owner) });
const pool = (extra: Record<string, string | string[]> = {}) => ({ "aws:ResourceTag/strata:pool": POOL, ...extra });

/** The `sub` GitHub puts in a job's token once strata customised the repository's subject claims. */
const sub = (context: string, file: string, ref: string, repository = REPOSITORY, workflowRepository = repository) =>
  `repo:${repository}:${context}:job_workflow_ref:${workflowRepository}/.github/workflows/${file}@${ref}`;
const token = (s: string, aud = "sts.amazonaws.com") => ({ "token.actions.githubusercontent.com:sub": s, "token.actions.githubusercontent.com:aud": aud });
const BASES = "strata-build-bases.yml";
const RUNTIMES = "strata-build-runtimes.yml";
const GC = "strata-gc.yml";
const MAIN = "refs/heads/main";

function rows(d: Declared): Row[] {
  const template = ec2(`launch-template/${d.idOf("aws:ec2/launchTemplate:LaunchTemplate")}`);
  // IAM sets ec2:Region on every EC2 request.
  const launch = { "ec2:LaunchTemplate": template, "ec2:Region": REGION };
  const subnet = d.idOf("aws:ec2/subnet:Subnet", /runners-/);
  const sg = d.idOf("aws:ec2/securityGroup:SecurityGroup");
  const allow = (principal: string, action: string, resource: string, reason: string, context?: Row["context"]): Row => ({ principal, action, resource, context, expect: "allowed", reason });
  const deny = (principal: string, action: string, resource: string, reason: string, context?: Row["context"]): Row => ({ principal, action, resource, context, expect: "denied", reason });
  const assume = (principal: string, expect: Verdict, s: string, reason: string, aud?: string): Row => ({ principal, action: "sts:AssumeRoleWithWebIdentity", resource: role(principal), context: token(s, aud), expect, reason });
  return [
    // Runner instance (scaler/userdata.sh, the SSM agent, a log shipper).
    allow("fleet-instance", "ssm:GetParameter", jit(SELF), "reads its own JIT config (the parameter is tagged with its ARN)", taggedFor(SELF)),
    allow("fleet-instance", "ssm:DeleteParameter", jit(SELF), "deletes (claims) its own JIT config", taggedFor(SELF)),
    allow("fleet-instance", "logs:CreateLogStream", logStream("runners", SELF), "writes the fleet's runner logs", fromInstance()),
    allow("fleet-instance", "logs:PutLogEvents", logStream("runners", SELF), "writes the fleet's runner logs", fromInstance()),
    allow("fleet-instance", "ssm:UpdateInstanceInformation", "*", "Session Manager agent", fromInstance()),
    allow("fleet-instance", "ssmmessages:OpenDataChannel", "*", "Session Manager session", fromInstance()),
    deny("fleet-instance", "ssm:GetParameter", jit(OTHER), "reading another instance's JIT config", taggedFor(OTHER)),
    deny("fleet-instance", "ssm:DeleteParameter", jit(OTHER), "deleting another instance's JIT config", taggedFor(OTHER)),
    deny("fleet-instance", "ec2:TerminateInstances", instance(OTHER), "terminating another instance of its pool", fromInstance(pool())),
    deny("fleet-instance", "ec2:TerminateInstances", instance(SELF), "it ends by shutting down, which needs no permission", fromInstance(pool())),
    deny("fleet-instance", "ecr:PutImage", repo("bases"), "a job on the instance pushing a base", fromInstance()),
    deny("fleet-instance", "ecr:PutImage", repo("runtimes"), "a job on the instance pushing a runtime", fromInstance()),
    deny("fleet-instance", "ecr:PutImage", repo("cache"), "a job on the instance writing the build cache", fromInstance()),
    deny("fleet-instance", "ecr:GetAuthorizationToken", "*", "a registry login with the instance's credentials", fromInstance()),
    deny("fleet-instance", "secretsmanager:GetSecretValue", secret("github-app"), "reading the GitHub App key", fromInstance()),

    deny("fleet-instance", "sqs:SendMessage", queue(POOL_QUEUE), "a job on the instance enqueueing jobs", fromInstance()),
    deny("fleet-instance", "sqs:SendMessage", queue(WAKE_QUEUE), "a job on the instance waking the consumer", fromInstance()),
    deny("fleet-instance", "sqs:ReceiveMessage", queue(POOL_QUEUE), "a job on the instance taking jobs off the queue", fromInstance()),

    // Webhook (scaler/webhook.ts → createWebhookHandler over scaler/aws.ts): verify, claim in the ledger, enqueue, wake;
    // on `completed` take back a booting instance; on an interrupted job's failure, the on-demand re-run.
    allow("fleet-webhook", "secretsmanager:GetSecretValue", secret("webhook-secret"), "verifies deliveries"),
    allow("fleet-webhook", "secretsmanager:GetSecretValue", secret("github-app"), "re-runs an interrupted job and deletes a withdrawn runner as the GitHub App"),
    allow("fleet-webhook", "ssm:PutParameter", state("jobs/42"), "claims a job in the ledger (create-only)"),
    allow("fleet-webhook", "ssm:GetParameter", state(`interrupted/${SELF}`), "reads an interruption record"),
    allow("fleet-webhook", "ssm:DeleteParameter", state("jobs/42"), "withdraws its claim when the enqueue failed"),
    allow("fleet-webhook", "ssm:DeleteParameter", jit(OTHER), "claims (deletes) the JIT config of a cancelled job's booting instance"),
    allow("fleet-webhook", "sqs:SendMessage", queue(POOL_QUEUE), "enqueues a served job in its pool's FIFO queue"),
    allow("fleet-webhook", "sqs:SendMessage", queue(WAKE_QUEUE), "wakes the scale-up consumer"),
    allow("fleet-webhook", "ec2:DescribeInstances", "*", "finds the instance of a cancelled job"),
    allow("fleet-webhook", "ec2:TerminateInstances", instance(OTHER), "terminates a cancelled job's booting pool instance", pool()),
    allow("fleet-webhook", "logs:PutLogEvents", logStream("webhook", "x"), "its own logs"),
    deny("fleet-webhook", "ec2:RunInstances", ec2("instance/*"), "launching an instance (only the consumer launches)", launch),
    deny("fleet-webhook", "ec2:RunInstances", template, "using the pool's launch template", launch),
    deny("fleet-webhook", "iam:PassRole", role("fleet-instance"), "passing the instance role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-webhook", "ssm:GetParameter", jit(OTHER), "reading a JIT config"),
    deny("fleet-webhook", "ssm:PutParameter", jit(OTHER), "writing a JIT config"),
    deny("fleet-webhook", "sqs:ReceiveMessage", queue(POOL_QUEUE), "taking jobs off a pool queue"),
    deny("fleet-webhook", "sqs:SendMessage", otherQueue, "sending to another stack's queue"),
    deny("fleet-webhook", "ec2:TerminateInstances", instance(OTHER), "terminating an instance outside the fleet's pools", { "aws:ResourceTag/strata:pool": "someone-else" }),
    deny("fleet-webhook", "ec2:DeleteTags", instance(OTHER), "removing tags", pool({ "aws:TagKeys": ["strata:job-id"] })),
    deny("fleet-webhook", "ssm:PutParameter", `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/other`, "writing a parameter outside the state prefix"),
    deny("fleet-webhook", "ssm:PutParameter", `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/other/state/jobs/42`, "writing another stack's state"),

    // Scale-up consumer (scaler/scaleup.ts → runScaleUp): the only launcher; serves each pool queue up to the cap.
    allow("fleet-scaleup", "ec2:RunInstances", ec2("instance/*"), "launches an instance from the pool's template", launch),
    allow("fleet-scaleup", "ec2:RunInstances", template, "uses the pool's launch template", launch),
    allow("fleet-scaleup", "ec2:RunInstances", `arn:aws:ec2:${REGION}::image/${AMI}`, "the pool's AMI", launch),
    allow("fleet-scaleup", "ec2:RunInstances", `arn:aws:ec2:${REGION}::snapshot/snap-0abc1234def567890`, "the AMI's root snapshot", launch),
    allow("fleet-scaleup", "ec2:RunInstances", ec2(`subnet/${subnet}`), "a fleet subnet", launch),
    allow("fleet-scaleup", "ec2:RunInstances", ec2(`security-group/${sg}`), "the fleet's security group", launch),
    allow("fleet-scaleup", "ec2:RunInstances", ec2("volume/*"), "the root volume it creates", launch),
    allow("fleet-scaleup", "ec2:RunInstances", ec2("network-interface/*"), "the network interface it creates", launch),
    allow("fleet-scaleup", "ec2:RunInstances", ec2("spot-instances-request/*"), "a spot request (spot pools; ec2:LaunchTemplate does not apply to it)", { "ec2:Region": REGION }),
    allow("fleet-scaleup", "ec2:CreateTags", ec2("instance/*"), "tags the instance at launch", { "ec2:CreateAction": "RunInstances" }),
    allow("fleet-scaleup", "ec2:CreateTags", ec2("volume/*"), "tags the volume at launch", { "ec2:CreateAction": "RunInstances" }),
    allow("fleet-scaleup", "ec2:DeleteTags", instance(OTHER), "releases the job tags of an instance it could not hand a JIT config", pool({ "aws:TagKeys": ["strata:job-id", "strata:delivery"] })),
    allow("fleet-scaleup", "ec2:TerminateInstances", instance(OTHER), "terminates the released instance", pool()),
    allow("fleet-scaleup", "ec2:DescribeInstances", "*", "counts the pool's instances"),
    allow("fleet-scaleup", "iam:PassRole", role("fleet-instance"), "gives the instance its role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    allow("fleet-scaleup", "iam:CreateServiceLinkedRole", role("aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"), "the Spot service-linked role, once per account", { "iam:AWSServiceName": "spot.amazonaws.com" }),
    allow("fleet-scaleup", "ssm:PutParameter", jit(SELF), "stores an instance's JIT config"),
    allow("fleet-scaleup", "ssm:AddTagsToResource", jit(SELF), "tags the JIT config with the instance ARN"),
    allow("fleet-scaleup", "ssm:GetParameter", state(`pools/${POOL}`), "reads the pool's breaker document"),
    allow("fleet-scaleup", "ssm:PutParameter", state("jobs/42"), "records a launch in the ledger"),
    allow("fleet-scaleup", "ssm:GetParametersByPath", state("interrupted"), "lists interruption records (the breaker)"),
    allow("fleet-scaleup", "ssm:GetParametersByPath", statePath, "the state path itself"),
    allow("fleet-scaleup", "sqs:ReceiveMessage", queue(POOL_QUEUE), "takes jobs off its pool's queue"),
    allow("fleet-scaleup", "sqs:DeleteMessage", queue(POOL_QUEUE), "drops a served, cancelled or foreign message"),
    allow("fleet-scaleup", "sqs:ChangeMessageVisibility", queue(POOL_QUEUE), "backs off a job it cannot serve yet"),
    allow("fleet-scaleup", "sqs:ReceiveMessage", queue(WAKE_QUEUE), "the wake queue's event source mapping polls"),
    allow("fleet-scaleup", "sqs:DeleteMessage", queue(WAKE_QUEUE), "the event source mapping deletes a handled wake-up"),
    allow("fleet-scaleup", "sqs:GetQueueAttributes", queue(WAKE_QUEUE), "the event source mapping reads the queue"),
    allow("fleet-scaleup", "secretsmanager:GetSecretValue", secret("github-app"), "checks the job and mints JIT configs as the GitHub App"),
    allow("fleet-scaleup", "logs:PutLogEvents", logStream("scaleup", "x"), "its own logs"),
    deny("fleet-scaleup", "ec2:RunInstances", ec2("instance/*"), "launching from another launch template", { "ec2:LaunchTemplate": ec2("launch-template/lt-0123456789abcdef0"), "ec2:Region": REGION }),
    deny("fleet-scaleup", "ec2:RunInstances", ec2("instance/*"), "launching without a launch template", { "ec2:Region": REGION }),
    deny("fleet-scaleup", "ec2:RunInstances", `arn:aws:ec2:${REGION}::image/ami-0fffffffffffffff0`, "launching another AMI", launch),
    deny("fleet-scaleup", "ec2:RunInstances", ec2("subnet/subnet-0fffffffffffffff0"), "launching into another subnet", launch),
    deny("fleet-scaleup", "ec2:RunInstances", ec2("security-group/sg-0fffffffffffffff0"), "launching with another security group", launch),
    deny("fleet-scaleup", "iam:PassRole", role("admin"), "passing another role (another instance profile)", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-scaleup", "iam:PassRole", role("fleet-instance"), "passing the instance role to another service", { "iam:PassedToService": "lambda.amazonaws.com" }),
    deny("fleet-scaleup", "iam:CreateServiceLinkedRole", role("aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"), "creating another service-linked role", { "iam:AWSServiceName": "autoscaling.amazonaws.com" }),
    deny("fleet-scaleup", "ec2:TerminateInstances", instance(OTHER), "terminating an instance outside the fleet's pools", { "aws:ResourceTag/strata:pool": "someone-else" }),
    deny("fleet-scaleup", "ec2:DeleteTags", instance(OTHER), "removing the pool tag", pool({ "aws:TagKeys": ["strata:pool"] })),
    deny("fleet-scaleup", "ec2:CreateTags", instance(OTHER), "re-tagging an existing instance"),
    deny("fleet-scaleup", "ssm:GetParameter", jit(OTHER), "reading a JIT config (write-only)"),
    deny("fleet-scaleup", "ssm:DeleteParameter", jit(OTHER), "deleting a JIT config"),
    deny("fleet-scaleup", "ssm:PutParameter", `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/other`, "writing a parameter outside the JIT and state prefixes"),
    deny("fleet-scaleup", "sqs:SendMessage", otherQueue, "sending to another stack's queue"),
    deny("fleet-scaleup", "sqs:ReceiveMessage", otherQueue, "taking jobs off another stack's queue"),
    deny("fleet-scaleup", "sqs:SendMessage", queue(POOL_QUEUE), "enqueueing jobs itself"),
    deny("fleet-scaleup", "sqs:SendMessage", queue(WAKE_QUEUE), "waking itself"),
    deny("fleet-scaleup", "secretsmanager:GetSecretValue", secret("webhook-secret"), "reading the webhook secret"),

    // Interruption handler (scaler/interruption.ts → handleInterruption): look the instance up, record, remove the idle runner.
    allow("fleet-interruption", "ec2:DescribeInstances", "*", "looks the interrupted instance up"),
    allow("fleet-interruption", "ssm:PutParameter", state(`interrupted/${SELF}`), "records the interruption (create-only)"),
    allow("fleet-interruption", "secretsmanager:GetSecretValue", secret("github-app"), "removes the idle runner as the GitHub App"),
    allow("fleet-interruption", "logs:PutLogEvents", logStream("interruption", "x"), "its own logs"),
    deny("fleet-interruption", "ec2:TerminateInstances", instance(OTHER), "terminating an instance, even a pool's", pool()),
    deny("fleet-interruption", "ec2:RunInstances", ec2("instance/*"), "launching a replacement", launch),
    deny("fleet-interruption", "iam:PassRole", role("fleet-instance"), "passing a role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-interruption", "ssm:GetParameter", jit(OTHER), "reading a JIT config"),
    deny("fleet-interruption", "ssm:DeleteParameter", state("jobs/42"), "deleting state"),
    deny("fleet-interruption", "sqs:SendMessage", queue(POOL_QUEUE), "enqueueing jobs"),
    deny("fleet-interruption", "secretsmanager:GetSecretValue", secret("webhook-secret"), "reading the webhook secret"),

    // Housekeeping (scaler/housekeeping.ts → runHousekeeping): reap instances and JIT configs, reconcile missed jobs, prune state.
    allow("fleet-housekeeping", "ec2:DescribeInstances", "*", "lists the pools' instances"),
    allow("fleet-housekeeping", "ec2:TerminateInstances", instance(OTHER), "reaps an overdue pool instance", pool()),
    allow("fleet-housekeeping", "ssm:GetParametersByPath", jitPath, "lists JIT configs (names only)"),
    allow("fleet-housekeeping", "ssm:DeleteParameter", jit(OTHER), "deletes a stale JIT config"),
    allow("fleet-housekeeping", "ssm:GetParametersByPath", statePath, "lists the state documents"),
    allow("fleet-housekeeping", "ssm:PutParameter", state("jobs/42"), "marks a reconciled job queued, records a re-run"),
    allow("fleet-housekeeping", "ssm:DeleteParameter", state("jobs/42"), "prunes old state"),
    allow("fleet-housekeeping", "sqs:SendMessage", queue(POOL_QUEUE), "enqueues a queued job whose webhook was missed"),
    allow("fleet-housekeeping", "secretsmanager:GetSecretValue", secret("github-app"), "removes offline runners, lists queued jobs as the GitHub App"),
    allow("fleet-housekeeping", "logs:PutLogEvents", logStream("housekeeping", "x"), "its own logs"),
    deny("fleet-housekeeping", "ec2:RunInstances", ec2("instance/*"), "launching anything", launch),
    deny("fleet-housekeeping", "iam:PassRole", role("fleet-instance"), "passing a role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-housekeeping", "secretsmanager:GetSecretValue", secret("webhook-secret"), "reading the webhook secret"),
    deny("fleet-housekeeping", "ec2:TerminateInstances", instance(OTHER), "terminating an instance outside the pools", { "aws:ResourceTag/strata:pool": "someone-else" }),
    deny("fleet-housekeeping", "ssm:PutParameter", jit(OTHER), "writing a JIT config"),
    deny("fleet-housekeeping", "ssm:GetParameter", jit(OTHER), "reading a JIT config's value"),
    deny("fleet-housekeeping", "sqs:SendMessage", queue(WAKE_QUEUE), "waking the consumer (not its job)"),
    deny("fleet-housekeeping", "sqs:SendMessage", otherQueue, "sending to another stack's queue"),
    deny("fleet-housekeeping", "sqs:ReceiveMessage", queue(POOL_QUEUE), "taking jobs off a pool queue"),

    // Generated workflows, after configure-aws-credentials (strata-build-bases: build and publish jobs).
    allow("github-push-bases", "ecr:GetAuthorizationToken", "*", "amazon-ecr-login"),
    allow("github-push-bases", "ecr:InitiateLayerUpload", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:UploadLayerPart", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:CompleteLayerUpload", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:PutImage", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:PutImage", repo("cache"), "exports the build cache"),
    allow("github-push-bases", "ecr:BatchGetImage", repo("cache"), "imports the build cache"),
    allow("github-push-bases", "ssm:GetParameter", AMI_PARAMETER, "the root program reads the public GPU AMI parameter"),
    allow("github-push-bases", "ec2:DescribeImages", "*", "the root program reads the AMI's root device"),
    allow("github-push-bases", "ec2:DescribeAvailabilityZones", "*", "the root program picks the fleet's zones"),
    allow("github-push-bases", "ec2:DescribeInstanceTypeOfferings", "*", "the root program picks the fleet's zones"),
    deny("github-push-bases", "ecr:PutImage", repo("runtimes"), "the base role pushing a runtime"),
    deny("github-push-bases", "ssm:GetParameter", jit(SELF), "the base role reading a JIT config"),
    deny("github-push-bases", "ec2:RunInstances", ec2("instance/*"), "the base role launching an instance", launch),
    // strata-build-runtimes.
    allow("github-push-runtimes", "ecr:GetAuthorizationToken", "*", "amazon-ecr-login"),
    allow("github-push-runtimes", "ecr:PutImage", repo("runtimes"), "pushes a runtime"),
    allow("github-push-runtimes", "ecr:PutImage", repo("cache"), "exports the build cache"),
    allow("github-push-runtimes", "ecr:BatchGetImage", repo("bases"), "pulls the base it builds FROM"),
    allow("github-push-runtimes", "ecr:GetDownloadUrlForLayer", repo("bases"), "pulls the base it builds FROM"),
    deny("github-push-runtimes", "ecr:PutImage", repo("bases"), "the runtime role overwriting a base"),
    // cosign after each push (signature tags sha256-<digest>.sig in the image's own repository) and before each runtime build.
    allow("github-push-bases", "ecr:BatchGetImage", repo("bases"), "cosign sign reads a base's existing signatures"),
    allow("github-push-bases", "ecr:BatchCheckLayerAvailability", repo("bases"), "cosign sign checks the signature's blobs"),
    allow("github-push-bases", "ecr:PutImage", repo("bases"), "cosign sign pushes a base's sha256-DIGEST.sig"),
    allow("github-push-runtimes", "ecr:BatchGetImage", repo("runtimes"), "cosign sign reads a runtime's existing signatures"),
    allow("github-push-runtimes", "ecr:InitiateLayerUpload", repo("runtimes"), "cosign sign uploads a runtime's signature"),
    allow("github-push-runtimes", "ecr:PutImage", repo("runtimes"), "cosign sign pushes a runtime's sha256-DIGEST.sig"),
    allow("github-push-runtimes", "ecr:GetDownloadUrlForLayer", repo("bases"), "cosign verify reads a base's signature before the build"),
    deny("github-push-runtimes", "ecr:InitiateLayerUpload", repo("bases"), "the runtime role forging a base's signature"),
    // Read-only (pull requests).
    allow("github-read-only", "ecr:BatchGetImage", repo("bases"), "pulls a base"),
    allow("github-read-only", "ecr:BatchGetImage", repo("runtimes"), "pulls a runtime"),
    deny("github-read-only", "ecr:PutImage", repo("bases"), "the read-only role pushing a base"),
    deny("github-read-only", "ecr:PutImage", repo("runtimes"), "the read-only role pushing a runtime"),
    deny("github-read-only", "ecr:InitiateLayerUpload", repo("cache"), "the read-only role writing the cache"),

    // strata-gc (cli/gc.ts): registry API reads of all three repositories, BatchDeleteImage on bases and cache.
    allow("github-gc", "ecr:GetAuthorizationToken", "*", "amazon-ecr-login"),
    allow("github-gc", "ecr:ListImages", repo("bases"), "lists the base tags"),
    allow("github-gc", "ecr:BatchGetImage", repo("bases"), "reads a base's manifest"),
    allow("github-gc", "ecr:GetDownloadUrlForLayer", repo("bases"), "reads a base's config (creation time)"),
    allow("github-gc", "ecr:DescribeImages", repo("bases"), "describes base images"),
    allow("github-gc", "ecr:BatchDeleteImage", repo("bases"), "deletes an unused base tag and its attestations"),
    allow("github-gc", "ecr:ListImages", repo("runtimes"), "lists the runtime releases"),
    allow("github-gc", "ecr:BatchGetImage", repo("runtimes"), "reads a runtime's layers (which bases it keeps)"),
    allow("github-gc", "ecr:GetDownloadUrlForLayer", repo("runtimes"), "reads a runtime's config"),
    allow("github-gc", "ecr:ListImages", repo("cache"), "lists the build cache tags"),
    allow("github-gc", "ecr:BatchGetImage", repo("cache"), "resolves a cache tag's digest"),
    allow("github-gc", "ecr:BatchDeleteImage", repo("cache"), "deletes the cache of a base name nothing keeps"),
    deny("github-gc", "ecr:BatchDeleteImage", repo("runtimes"), "the gc role deleting a runtime"),
    deny("github-gc", "ecr:PutImage", repo("bases"), "the gc role pushing a base"),
    deny("github-gc", "ecr:PutImage", repo("runtimes"), "the gc role pushing a runtime"),
    deny("github-gc", "ecr:InitiateLayerUpload", repo("bases"), "the gc role uploading a layer"),
    deny("github-gc", "ecr:DeleteRepository", repo("bases"), "the gc role deleting the repository"),
    deny("github-gc", "ecr:SetRepositoryPolicy", repo("bases"), "the gc role opening the repository"),
    deny("github-push-bases", "ecr:BatchDeleteImage", repo("bases"), "the base push role deleting a base"),
    deny("github-push-runtimes", "ecr:BatchDeleteImage", repo("runtimes"), "the runtime push role deleting a release"),
    deny("github-read-only", "ecr:BatchDeleteImage", repo("bases"), "the read-only role deleting a base"),

    // Who may assume the GitHub roles (the token's sub in the customised format, aud sts.amazonaws.com).
    assume("github-push-bases", "allowed", sub(`ref:${MAIN}`, BASES, MAIN), "the base-build workflow on the default branch"),
    assume("github-push-bases", "denied", sub("pull_request", BASES, "refs/pull/7/merge"), "a pull request, even running the base workflow"),
    assume("github-push-bases", "denied", sub("ref:refs/heads/feature", BASES, "refs/heads/feature"), "another branch"),
    assume("github-push-bases", "denied", sub("ref:refs/heads/main-evil", BASES, "refs/heads/main-evil"), "a branch whose name starts with the default branch's"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, "evil.yml", MAIN), "another workflow file on the default branch"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, RUNTIMES, MAIN), "the runtime workflow"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, "acme/other"), "another repository of the organisation"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, "mallory/models"), "a fork (its own repository)"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, REPOSITORY, "mallory/tools"), "a reusable workflow of another repository"),
    assume("github-push-bases", "denied", `repo:${REPOSITORY}:ref:${MAIN}`, "a token in the default subject format (customisation removed)"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN), "another audience", "https://github.com/acme"),
    assume("github-push-runtimes", "allowed", sub("ref:refs/tags/v1.2.3", RUNTIMES, "refs/tags/v1.2.3"), "the runtime workflow on a protected release tag"),
    assume("github-push-runtimes", "allowed", sub(`ref:${MAIN}`, RUNTIMES, MAIN), "the runtime workflow on the default branch (branch tags)"),
    assume("github-push-runtimes", "denied", sub("ref:refs/tags/release-1", RUNTIMES, "refs/tags/release-1"), "an unprotected tag"),
    assume("github-push-runtimes", "denied", sub("ref:refs/heads/feature", RUNTIMES, "refs/heads/feature"), "another branch"),
    assume("github-push-runtimes", "denied", sub("ref:refs/tags/v1.2.3", BASES, "refs/tags/v1.2.3"), "another workflow on a release tag"),
    assume("github-push-runtimes", "denied", sub("pull_request", RUNTIMES, "refs/pull/7/merge"), "a pull request"),
    assume("github-gc", "allowed", sub(`ref:${MAIN}`, GC, MAIN), "the base-GC workflow on the default branch"),
    assume("github-gc", "denied", sub(`ref:${MAIN}`, BASES, MAIN), "the base-build workflow"),
    assume("github-gc", "denied", sub(`ref:${MAIN}`, "evil.yml", MAIN), "another workflow file on the default branch"),
    assume("github-gc", "denied", sub("ref:refs/heads/feature", GC, "refs/heads/feature"), "the gc workflow on another branch"),
    assume("github-gc", "denied", sub("pull_request", GC, "refs/pull/7/merge"), "a pull request, even running the gc workflow"),
    assume("github-gc", "denied", sub(`ref:${MAIN}`, GC, MAIN, "mallory/models"), "a fork (its own repository)"),
    assume("github-gc", "denied", sub(`ref:${MAIN}`, GC, MAIN, REPOSITORY, "mallory/tools"), "a reusable workflow of another repository"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, GC, MAIN), "the gc workflow assuming the base push role"),
    assume("github-read-only", "allowed", sub("pull_request", "strata-pr-check.yml", "refs/pull/7/merge"), "a pull request's workflow (also from a fork)"),
    assume("github-read-only", "denied", sub("pull_request", "a.yml", "refs/heads/main", REPOSITORY, "mallory/tools"), "a pull request running another repository's workflow"),
    assume("github-read-only", "denied", sub("pull_request", "a.yml", "refs/pull/7/merge", "acme/other"), "another repository's pull request"),
  ];
}

describe("IAM simulation of every declared policy", () => {
  const verdicts: { row: Row; got: Verdict }[] = [];

  test("every row gets its expected answer", async () => {
    const failures: string[] = [];
    for (const row of rows(d)) {
      const got = await judge(d, row);
      verdicts.push({ row, got });
      if (got !== row.expect) failures.push(`${row.principal} ${row.action} ${row.resource}: expected ${row.expect}, got ${got} (${row.reason})`);
    }
    assert.deepEqual(failures, []);
    assert.ok(verdicts.some((v) => v.got === "allowed") && verdicts.some((v) => v.got === "denied"));
  });

  test("every AWS SDK command of the scaler's adapter has an allowed row for a scaler role", () => {
    const source = readFileSync(join(REPO, "scaler/aws.ts"), "utf8");
    const service = new Map<string, string>();
    for (const m of source.matchAll(/import\s*\{([^}]*)\}\s*from\s*"@aws-sdk\/client-([a-z0-9-]+)"/g)) {
      for (const name of m[1]!.split(",").map((s) => s.trim()).filter(Boolean)) service.set(name, m[2]!.replace(/-/g, ""));
    }
    const sent = [...source.matchAll(/new (\w+)Command\(/g)].map((m) => [`${m[1]}Command`, m[1]!] as const);
    const paged = [...source.matchAll(/paginate(\w+)\(/g)].map((m) => [`paginate${m[1]}`, m[1]!] as const);
    const actions = [...sent, ...paged].map(([name, op]) => `${service.get(name)}:${op}`);
    assert.ok(actions.length >= 6 && !actions.some((a) => a.startsWith("undefined")), actions.join(", "));
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && /^fleet-(webhook|scaleup|interruption|housekeeping)$/.test(r.principal)).map((r) => r.action));
    assert.deepEqual(actions.filter((a) => !allowed.has(a)), [], "add an allowed row for each new call");
  });

  test("every AWS SDK command of strata gc has an allowed row for the gc role", () => {
    const source = readFileSync(join(REPO, "cli/gc.ts"), "utf8");
    const actions = [...source.matchAll(/new (\w+)Command\(/g)].map((m) => `ecr:${m[1]}`);
    assert.ok(actions.includes("ecr:BatchDeleteImage"), actions.join(", "));
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && r.principal === "github-gc").map((r) => r.action));
    assert.deepEqual(actions.filter((a) => !allowed.has(a)), [], "add an allowed github-gc row for each new call");
  });

  test("every AWS call each scaler handler really makes (moto, loopback GitHub) is allowed for that handler's role", async (t) => {
    const moto = await startMoto();
    t.after(() => moto.stop());
    const github = loopbackGitHub();
    await github.start();
    t.after(() => github.close());
    const fleet = await createFleetStack(moto, github);
    const rec = recordAwsCalls(fleet);
    const webhook = createWebhookHandler(fleet.deps);
    const repo = { owner: "acme", repo: "models" };
    const launched = async (jobId: number) => {
      const { Reservations } = await fleet.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: "tag:strata:job-id", Values: [String(jobId)] }, { Name: "instance-state-name", Values: ["pending", "running"] }] }));
      const inst = Reservations![0]!.Instances![0]!;
      return { id: inst.InstanceId!, runnerName: inst.Tags!.find((x) => x.Key === "strata:runner-name")!.Value! };
    };

    // A job queued, launched, interrupted, failed and re-run; another cancelled while it boots; a missed webhook.
    github.addJob("acme/models", { id: 1, labels: GPU, run_id: 8001, name: "base" });
    await rec.as("webhook", () => webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", 1, GPU, { ...repo, runId: 8001, name: "base" }))));
    await rec.as("scaleup", () => runScaleUp(fleet.deps));
    const first = await launched(1);
    await rec.as("interruption", () => handleInterruption(fleet.deps, { "detail-type": "EC2 Spot Instance Interruption Warning", detail: { "instance-id": first.id, "instance-action": "terminate" } }));
    await fleet.deps.ec2.terminate([first.id]);
    Object.assign(github.jobs.get(1)!, { status: "completed", conclusion: "failure", runner_name: first.runnerName });
    await rec.as("webhook", () => webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 1, GPU, { ...repo, runnerName: first.runnerName, conclusion: "failure", runId: 8001, name: "base" }))));
    github.addJob("acme/models", { id: 2, labels: GPU });
    await rec.as("webhook", () => webhook(delivery(WEBHOOK_SECRET, jobPayload("queued", 2, GPU, repo))));
    await rec.as("scaleup", () => runScaleUp(fleet.deps));
    github.jobs.get(2)!.status = "completed";
    await rec.as("webhook", () => webhook(delivery(WEBHOOK_SECRET, jobPayload("completed", 2, GPU, { ...repo, conclusion: "cancelled" }))));
    github.addJob("acme/models", { id: 3, labels: GPU, created_at: new Date(Date.now() - 10 * 60_000).toISOString() });
    await rec.as("housekeeping", () => runHousekeeping(fleet.deps));

    const kind = (resource: string) => rowKind(resource);
    const allowed = rows(d).filter((r) => r.expect === "allowed");
    const missing = (calls: RecordedAwsCall[]) =>
      calls.filter((c) => !allowed.some((r) => r.principal === `fleet-${c.handler}` && r.action === c.action && kind(r.resource) === c.kind)).map((c) => `${c.handler}: ${c.action} on ${c.kind || "*"}`);
    const seen = (handler: string) => [...new Set(rec.calls.filter((c) => c.handler === handler).map((c) => `${c.action}${c.kind ? ` ${c.kind}` : ""}`))].sort();
    // The scenario reaches each handler's main paths (so the check below is not vacuous).
    for (const [handler, wanted] of Object.entries({
      webhook: ["sqs:SendMessage pool", "sqs:SendMessage wake", "ssm:PutParameter state", "ssm:GetParameter state", "ssm:DeleteParameter jit", "ec2:TerminateInstances", "secretsmanager:GetSecretValue webhook-secret", "secretsmanager:GetSecretValue github-app"],
      scaleup: ["ec2:RunInstances", "ec2:CreateTags", "iam:PassRole", "ssm:PutParameter jit", "ssm:AddTagsToResource jit", "sqs:ReceiveMessage pool", "sqs:DeleteMessage pool", "ssm:GetParametersByPath state"],
      interruption: ["ec2:DescribeInstances", "ssm:PutParameter state", "secretsmanager:GetSecretValue github-app"],
      housekeeping: ["ec2:DescribeInstances", "ssm:GetParametersByPath jit", "ssm:GetParametersByPath state", "sqs:SendMessage pool"],
    })) {
      assert.deepEqual(wanted.filter((w) => !seen(handler).includes(w)), [], `${handler} made ${seen(handler).join(", ")}`);
    }
    assert.deepEqual([...new Set(missing(rec.calls))], [], "each call a handler makes needs an allowed row for its role");
  });

  test("every AWS CLI call of the instance's user data has an allowed row for the instance role", () => {
    const script = readFileSync(join(REPO, "scaler/userdata.sh"), "utf8");
    const pascal = (op: string) => op.split("-").map((w) => w[0]!.toUpperCase() + w.slice(1)).join("");
    const actions = [...script.matchAll(/\baws ([a-z0-9]+) ([a-z-]+)/g)].map((m) => `${m[1]}:${pascal(m[2]!)}`);
    assert.ok(actions.length >= 2, actions.join(", "));
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && r.principal === "fleet-instance").map((r) => r.action));
    assert.deepEqual([...new Set(actions)].filter((a) => !allowed.has(a)), []);
  });

  test("every lookup the root program makes (the publish job re-runs it) is allowed for the base push role", () => {
    // Invoke token → the IAM action it needs; null: no permission needed (local, or sts:GetCallerIdentity).
    const needs: Record<string, string | null> = {
      "aws:index/getPartition:getPartition": null,
      "aws:index/getRegion:getRegion": null,
      "aws:index/getCallerIdentity:getCallerIdentity": null,
      "aws:ecr/getAuthorizationToken:getAuthorizationToken": "ecr:GetAuthorizationToken",
      "aws:ssm/getParameter:getParameter": "ssm:GetParameter",
      "aws:ec2/getAmi:getAmi": "ec2:DescribeImages",
      "aws:index/getAvailabilityZones:getAvailabilityZones": "ec2:DescribeAvailabilityZones",
      "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": "ec2:DescribeInstanceTypeOfferings",
      "aws:ec2/getVpc:getVpc": "ec2:DescribeVpcs",
      // The runner group's repository ids: a GitHub API read with the provider's token, no AWS permission.
      "github:index/getRepository:getRepository": null,
    };
    const tokens = [...new Set(d.calls.map((c) => c.token))];
    assert.deepEqual(tokens.filter((t) => !(t in needs)), [], "map each new invoke to the IAM action it needs");
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && r.principal === "github-push-bases").map((r) => r.action));
    assert.deepEqual(tokens.map((t) => needs[t]).filter((a): a is string => a !== null && !allowed.has(a)), []);
  });

  test("every generated workflow that assumes a role has an allowed OIDC row for that role and workflow file", async () => {
    const { generateWorkflows } = await import("../workflows/generate.ts");
    const { loadMatrix } = await import("../matrix/load.ts");
    const { VARIABLES } = await import("../components/github.ts");
    const files = generateWorkflows(loadMatrix(join(dir, "strata.yaml")), { stack: STACK });
    const roleOf: Record<string, string> = { [VARIABLES.pushBases]: "github-push-bases", [VARIABLES.pushRuntimes]: "github-push-runtimes", [VARIABLES.readOnly]: "github-read-only", [VARIABLES.gc]: "github-gc" };
    const uses: [string, string][] = [];
    for (const [path, text] of Object.entries(files)) {
      const doc = parse(text) as { jobs: Record<string, { steps?: { with?: Record<string, unknown> }[] }> };
      for (const job of Object.values(doc.jobs)) {
        for (const step of job.steps ?? []) {
          const m = /vars\.(\w+)/.exec(String(step.with?.["role-to-assume"] ?? ""));
          if (m) uses.push([path.split("/").pop()!, roleOf[m[1]!]!]);
        }
      }
    }
    assert.ok(uses.length >= 2);
    const oidc = rows(d).filter((r) => r.action === "sts:AssumeRoleWithWebIdentity" && r.expect === "allowed");
    for (const [file, principal] of uses) {
      assert.ok(
        oidc.some((r) => r.principal === principal && String(r.context?.["token.actions.githubusercontent.com:sub"]).includes(`/.github/workflows/${file}@`)),
        `${file} assumes ${principal}: add an allowed row with its sub`,
      );
    }
  });

  test("docs/security.md prints the table (STRATA_WRITE_DOCS=1 rewrites it)", () => {
    assert.ok(verdicts.length > 0, "the simulation ran");
    const path = join(REPO, "docs/security.md");
    const current = readFileSync(path, "utf8");
    const start = "<!-- simulation table: generated by test/iam-simulation.test.ts -->";
    const end = "<!-- end of simulation table -->";
    const short = (s: string) => s.replace(`:${REGION}:${ACCOUNT}:`, "::").replace(/^arn:aws:/, "");
    const cell = (s: string) => s.replace(/\|/g, "\\|");
    const lines = [
      "| principal | call | on | context | result | why |",
      "| --- | --- | --- | --- | --- | --- |",
      ...verdicts.map(({ row, got }) => {
        const on = row.action === "sts:AssumeRoleWithWebIdentity" ? `sub \`${row.context!["token.actions.githubusercontent.com:sub"]}\`` : `\`${short(row.resource)}\``;
        const context = Object.entries(row.context ?? {})
          .filter(([k]) => k !== "token.actions.githubusercontent.com:sub" && !(k === "token.actions.githubusercontent.com:aud" && row.context![k] === "sts.amazonaws.com"))
          .map(([k, v]) => `\`${k}=${[v].flat().map((x) => short(String(x))).join(",")}\``)
          .join(" ");
        return `| ${row.principal} | \`${row.action}\` | ${cell(on)} | ${cell(context)} | ${got === "allowed" ? "allowed" : "**denied**"} | ${cell(row.reason)} |`;
      }),
    ];
    const i = current.indexOf(start);
    const j = current.indexOf(end);
    assert.ok(i >= 0 && j > i, `docs/security.md needs the markers ${start} and ${end}`);
    const wanted = `${current.slice(0, i + start.length)}\n${lines.join("\n")}\n${current.slice(j)}`;
    if (process.env.STRATA_WRITE_DOCS === "1") writeFileSync(path, wanted);
    else assert.equal(current, wanted, "docs/security.md is out of date: run STRATA_WRITE_DOCS=1 node --import tsx --test test/iam-simulation.test.ts");
  });
});
