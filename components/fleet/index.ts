import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";
import * as github from "@pulumi/github";
import * as random from "@pulumi/random";
import { renderUserData, type UserDataVars } from "../../scaler/userdata.ts";
import { esbuildBundle, scalerEntry, type Bundler } from "./bundle.ts";
import type { FleetConfig, PoolConfig } from "./config.ts";
import { FleetNetwork } from "./network.ts";
import {
    assumeRolePolicy,
    housekeepingPolicy,
    instancePolicy,
    interruptionPolicy,
    scaleUpPolicy,
    INSTANCE_ARN_TAG_KEY,
    POOL_TAG_KEY,
    STACK_TAG_KEY,
    webhookPolicy,
    type AwsScope,
    type PolicyDocument,
} from "./policy.ts";
import { RunnerPool } from "./pool.ts";
import { ScalerFunction } from "./scaler.ts";

export { parseFleetConfig, FLEET_CONFIG_KEY, type FleetConfig, type FleetConfigResult, type PoolConfig } from "./config.ts";
export { findWildcardWrites, type PolicyDocument } from "./policy.ts";
export { esbuildBundle, type Bundler } from "./bundle.ts";
export { RunnerPool } from "./pool.ts";
export { FleetNetwork } from "./network.ts";
export { ScalerFunction } from "./scaler.ts";

/** Renders the runner user data script from its variables (see `userDataVars`). */
export type UserDataRenderer = (vars: Record<string, string>) => string | Promise<string>;

/** The GitHub App the scaler authenticates as. */
export interface GithubAppArgs {
    /** App id. Required. */
    appId: pulumi.Input<string>;
    /** Installation id of the App on `runnerOwner`. Required. */
    installationId: pulumi.Input<string>;
    /** PEM private key of the App; stored only as a Pulumi secret and in Secrets Manager. Required. */
    privateKey: pulumi.Input<string>;
}

/** Arguments of `GpuRunnerFleet`. */
export interface GpuRunnerFleetArgs {
    /** The parsed `strata:fleet` config of an enabled fleet (`parseFleetConfig`). Required. */
    config: FleetConfig;
    /** The GitHub App that mints JIT runner configs. Required. */
    githubApp: GithubAppArgs;
    /** Repositories ("owner/name") the fleet serves when `config.repositories` is unset: `strata:github.repositories`. Default: `[]` (then `config.repositories` is required). */
    repositories?: string[];
    /** Branch the base-build workflow runs on, the only ref the runner group admits. Default: `"main"`. */
    defaultBranch?: string;
    /** Bundles a scaler entry file into Lambda code. Default: `esbuildBundle` (esbuild at deploy time). */
    bundle?: Bundler;
    /** Renders runner user data. Default: `renderUserData` of `scaler/userdata.ts`, imported lazily. */
    userData?: UserDataRenderer;
    /** Retention of every log group of the fleet, in days. Default: `30`. */
    logRetentionDays?: number;
}

/** The tag that marks instances the scaler launched: the value of `STRATA_TAG_KEY`. */
export const TAG_KEY = POOL_TAG_KEY;

/**
 * A fleet of ephemeral, just-in-time GitHub Actions runners on GPU instances.
 *
 * GitHub sends `workflow_job` webhooks to a Lambda function URL; the webhook Lambda verifies the
 * signature and enqueues a queued job of a served repository whose labels a pool serves in that pool's
 * FIFO queue. The scale-up consumer (reserved concurrency 1, the only launcher) serves each queue up to
 * the pool's cap: one instance per job GitHub still reports queued, from the pool's launch template,
 * with a single-use JIT runner config (in the fleet's runner group) in Parameter Store. The instance
 * fetches and deletes its config, runs one job and powers off. An interruption Lambda records spot
 * interruptions (breaker, re-run on-demand); housekeeping every 5 minutes reaps overdue instances and
 * stale configs and enqueues queued jobs whose webhook was missed.
 */
export class GpuRunnerFleet extends pulumi.ComponentResource {
    /** URL GitHub delivers `workflow_job` events to. */
    public readonly webhookUrl: pulumi.Output<string>;
    /** Launch template id of each pool, by pool name. */
    public readonly launchTemplateIds: pulumi.Output<Record<string, string>>;
    /** AMI id each pool launches, by pool name. */
    public readonly amiIds: pulumi.Output<Record<string, string>>;
    /** ARN of the runner instance role. */
    public readonly instanceRoleArn: pulumi.Output<string>;
    /** Parameter Store prefix of the JIT configs, `/strata/<stack>/jit/`. */
    public readonly paramPrefix: string;
    /** Subnets the runners launch into. */
    public readonly subnetIds: pulumi.Output<string[]>;

    public readonly network: FleetNetwork;
    public readonly pools: Record<string, RunnerPool>;
    public readonly webhookFunction: ScalerFunction;
    public readonly housekeepingFunction: ScalerFunction;
    public readonly scaleUpFunction: ScalerFunction;
    public readonly interruptionFunction: ScalerFunction;
    /** The pools' FIFO scale-up queues, by pool name. */
    public readonly queues: Record<string, aws.sqs.Queue>;
    /** The organization runner group JIT runners register into (none for repository-level runners). */
    public readonly runnerGroup: github.ActionsRunnerGroup | undefined;

    constructor(name: string, args: GpuRunnerFleetArgs, opts?: pulumi.ComponentResourceOptions) {
        super("strata:fleet:GpuRunnerFleet", name, {}, opts);
        const config = args.config;
        const stack = pulumi.getStack();
        const tags = { [STACK_TAG_KEY]: stack };
        const retention = args.logRetentionDays ?? 30;
        const bundle = args.bundle ?? esbuildBundle;
        const renderUserData = args.userData ?? defaultUserData;
        const parent = { parent: this };
        this.paramPrefix = `/strata/${stack}/jit/`;

        const scope: pulumi.Output<AwsScope> = pulumi.all([
            aws.getPartitionOutput({}, parent).partition,
            aws.getRegionOutput({}, parent).region,
            aws.getCallerIdentityOutput({}, parent).accountId,
        ]).apply(([partition, region, accountId]) => ({ partition, region, accountId }));

        this.network = new FleetNetwork(`${name}-network`, {
            existing: config.vpcId && config.subnetIds ? { vpcId: config.vpcId, subnetIds: config.subnetIds } : undefined,
            egress: config.egress,
            instanceTypes: [...new Set(config.pools.flatMap((p) => p.instanceTypes))],
            tags,
        }, parent);
        this.subnetIds = this.network.subnetIds;

        // Runner instances: role, profile, log group.
        const runnerLogGroup = new aws.cloudwatch.LogGroup(`${name}-runners`, {
            name: `/strata/${stack}/fleet/runners`,
            retentionInDays: retention,
            tags,
        }, parent);
        const instanceRole = new aws.iam.Role(`${name}-instance`, {
            description: "strata GPU runner instances",
            assumeRolePolicy: JSON.stringify(assumeRolePolicy("ec2.amazonaws.com")),
            tags,
        }, parent);
        new aws.iam.RolePolicy(`${name}-instance`, {
            role: instanceRole.name,
            policy: pulumi.all([scope, runnerLogGroup.arn]).apply(([s, logGroupArn]) =>
                JSON.stringify(instancePolicy({ ...s, paramPrefix: this.paramPrefix, logGroupArn }))),
        }, parent);
        const instanceProfile = new aws.iam.InstanceProfile(`${name}-instance`, { role: instanceRole.name, tags }, parent);
        this.instanceRoleArn = instanceRole.arn;

        // Pools.
        const ssmAmi = config.pools.some((p) => !p.amiId)
            ? aws.ssm.getParameterOutput({ name: config.amiParameter }, parent).insecureValue
            : undefined;
        this.pools = {};
        for (const pool of config.pools) {
            const imageId = pool.amiId ? pulumi.output(pool.amiId) : ssmAmi!;
            const userData = scope.apply(async (s) => renderUserData(userDataVars({
                pool, region: s.region, paramPrefix: this.paramPrefix, runnerVersion: config.runnerVersion, runnerSha256: config.runnerSha256,
            })));
            this.pools[pool.name] = new RunnerPool(`${name}-${pool.name}`, {
                pool,
                imageId,
                securityGroupId: this.network.securityGroup.id,
                instanceProfileArn: instanceProfile.arn,
                userData,
                tags,
            }, parent);
        }
        const pools = config.pools.map((p) => ({ config: p, resource: this.pools[p.name]! }));
        this.launchTemplateIds = pulumi.all(Object.fromEntries(pools.map((p) => [p.config.name, p.resource.launchTemplate.id])));
        this.amiIds = pulumi.all(Object.fromEntries(pools.map((p) => [p.config.name, p.resource.imageId])));

        // Secrets: values only ever travel as Pulumi secrets.
        const webhookSecretValue = new random.RandomPassword(`${name}-webhook-secret`, { length: 48, special: false }, parent);
        const webhookSecretString = pulumi.secret(webhookSecretValue.result);
        const webhookSecret = new aws.secretsmanager.Secret(`${name}-webhook-secret`, {
            description: "strata GPU fleet: HMAC secret of GitHub workflow_job deliveries",
            recoveryWindowInDays: 7,
            tags,
        }, parent);
        new aws.secretsmanager.SecretVersion(`${name}-webhook-secret`, { secretId: webhookSecret.id, secretString: webhookSecretString }, parent);
        const appSecret = new aws.secretsmanager.Secret(`${name}-github-app`, {
            description: "strata GPU fleet: GitHub App {appId, installationId, privateKey}",
            recoveryWindowInDays: 7,
            tags,
        }, parent);
        new aws.secretsmanager.SecretVersion(`${name}-github-app`, {
            secretId: appSecret.id,
            secretString: pulumi.secret(pulumi.all([args.githubApp.appId, args.githubApp.installationId, args.githubApp.privateKey])
                .apply(([appId, installationId, privateKey]) => JSON.stringify({ appId, installationId, privateKey }))),
        }, parent);

        // What the fleet serves: only these repositories, and (org runners) only through a runner group
        // limited to them and to the base-build workflow on the default branch.
        const served = [...new Set((config.repositories ?? args.repositories ?? []).map((r) => r.toLowerCase()))];
        if (served.length === 0) {
            throw new Error("strata:fleet.repositories: no repository to serve; set strata:github.repositories or strata:fleet.repositories (\"owner/name\")");
        }
        const foreign = served.filter((r) => r.split("/")[0] !== config.runnerOwner.toLowerCase());
        if (foreign.length > 0) {
            throw new Error(`strata:fleet.repositories: ${foreign.join(", ")} not owned by runnerOwner "${config.runnerOwner}"; the fleet's GitHub App installation cannot serve them`);
        }
        const defaultBranch = args.defaultBranch ?? "main";
        this.runnerGroup = config.runnerRepo ? undefined : new github.ActionsRunnerGroup(`${name}-runners`, {
            name: `strata-${stack}`,
            visibility: "selected",
            selectedRepositoryIds: served.map((fullName) => github.getRepositoryOutput({ fullName }, parent).repoId),
            allowsPublicRepositories: false,
            restrictedToWorkflows: true,
            selectedWorkflows: served.map((r) => baseBuildWorkflowRef(r, defaultBranch)),
        }, parent);

        // Scale-up queues: one FIFO queue per pool (one message group: arrival order), deduplicated by job
        // id. No dead-letter queue: a job that cannot be served yet is meant to wait (backoff) until it is
        // served, cancelled or 24 h old, and then the consumer deletes it with a log line; a DLQ's
        // maxReceiveCount would move waiting jobs where nothing serves them.
        this.queues = {};
        for (const pool of config.pools) {
            this.queues[pool.name] = new aws.sqs.Queue(`${name}-${pool.name}-jobs`, {
                name: `strata-${stack}-${pool.name}.fifo`,
                fifoQueue: true,
                contentBasedDeduplication: false,
                messageRetentionSeconds: 2 * 24 * 3600,
                visibilityTimeoutSeconds: 120,
                sqsManagedSseEnabled: true,
                tags,
            }, parent);
        }
        // Wake-ups of the consumer: droppable (the schedule wakes it every minute anyway).
        const wakeQueue = new aws.sqs.Queue(`${name}-wake`, {
            name: `strata-${stack}-fleet-wake`,
            messageRetentionSeconds: 60,
            visibilityTimeoutSeconds: 6 * CONSUMER_TIMEOUT_SECONDS,
            sqsManagedSseEnabled: true,
            tags,
        }, parent);
        const queueArns = pulumi.all(config.pools.map((p) => this.queues[p.name]!.arn));
        const statePrefix = `/strata/${stack}/state/`;

        // Scaler Lambdas.
        const poolsJson = pulumi.all([
            pulumi.all(pools.map((p) => pulumi.all([p.resource.launchTemplate.id, p.resource.launchTemplate.latestVersion, this.queues[p.config.name]!.url]))),
            this.subnetIds,
        ]).apply(([templates, subnetIds]) => JSON.stringify(pools.map((p, i) => poolDescriptor(p.config, templates[i]![0], templates[i]![1], subnetIds, templates[i]![2]))));
        const environment: Record<string, pulumi.Input<string>> = {
            STRATA_POOLS: poolsJson,
            STRATA_WEBHOOK_SECRET_ARN: webhookSecret.arn,
            STRATA_GITHUB_APP_SECRET_ARN: appSecret.arn,
            STRATA_GITHUB_API_URL: config.githubApiUrl,
            STRATA_RUNNER_OWNER: config.runnerOwner,
            // The scaler wants the repository name alone; the owner is STRATA_RUNNER_OWNER.
            ...(config.runnerRepo ? { STRATA_RUNNER_REPO: config.runnerRepo.split("/")[1]! } : {}),
            // Repository-level runners have no groups: 1 is the id the JIT config API wants for them.
            STRATA_RUNNER_GROUP_ID: this.runnerGroup ? this.runnerGroup.id : "1",
            STRATA_REPOSITORIES: JSON.stringify(served),
            STRATA_PARAM_PREFIX: this.paramPrefix,
            STRATA_STATE_PREFIX: statePrefix,
            STRATA_WAKE_QUEUE_URL: wakeQueue.url,
            STRATA_SPOT_BREAKER_FAILURES: String(config.spotBreaker.failures),
            STRATA_SPOT_BREAKER_WINDOW_MINUTES: String(config.spotBreaker.windowMinutes),
            STRATA_SPOT_BREAKER_ON_DEMAND_MINUTES: String(config.spotBreaker.onDemandMinutes),
            STRATA_TAG_KEY: POOL_TAG_KEY,
            STRATA_INSTANCE_ARN_TAG_KEY: INSTANCE_ARN_TAG_KEY,
            STRATA_INSTANCE_ARN_PREFIX: scope.apply((s) => `arn:${s.partition}:ec2:${s.region}:${s.accountId}:instance/`),
        };
        const common = pulumi.all([scope, queueArns, wakeQueue.arn]).apply(([s, qs, wake]) => ({
            ...s, poolNames: config.pools.map((p) => p.name), paramPrefix: this.paramPrefix, statePrefix, queueArns: qs, wakeQueueArn: wake,
        }));
        const lambda = (role: string, description: string, policy: (logGroupArn: pulumi.Output<string>) => pulumi.Output<PolicyDocument>, extra: { timeout?: number; reservedConcurrency?: number } = {}) =>
            new ScalerFunction(`${name}-${role}`, {
                description,
                code: bundle(scalerEntry(role)),
                environment,
                logGroupName: `/strata/${stack}/fleet/${role}`,
                logRetentionDays: retention,
                tags,
                policy,
                ...extra,
            }, parent);

        this.webhookFunction = lambda("webhook", "strata GPU fleet: verifies workflow_job deliveries and enqueues served jobs", (logGroupArn) =>
            pulumi.all([common, logGroupArn, webhookSecret.arn, appSecret.arn]).apply(([c, logArn, hookArn, appArn]) => webhookPolicy({ ...c, logGroupArn: logArn, secretArns: [hookArn, appArn] })));
        // GitHub signs every delivery and the handler verifies the HMAC, so the URL itself is public.
        const functionUrl = new aws.lambda.FunctionUrl(`${name}-webhook`, {
            functionName: this.webhookFunction.function.name,
            authorizationType: "NONE",
        }, parent);
        this.webhookUrl = functionUrl.functionUrl;

        // The only launcher, serialised by reserved concurrency 1: counting a pool and launching into its
        // free slots can never race another launch.
        this.scaleUpFunction = lambda("scaleup", "strata GPU fleet: the only launcher; serves each pool's queue up to its cap", (logGroupArn) =>
            pulumi.all([common, logGroupArn, appSecret.arn, this.launchTemplateIds, this.subnetIds, this.network.securityGroup.id, this.amiIds, instanceRole.arn])
                .apply(([c, logArn, appArn, templateIds, subnetIds, sgId, amiIds, roleArn]) => scaleUpPolicy({
                    ...c, logGroupArn: logArn, secretArns: [appArn],
                    launchTemplateIds: Object.values(templateIds), subnetIds, securityGroupIds: [sgId],
                    imageIds: [...new Set(Object.values(amiIds))], instanceRoleArn: roleArn, spot: config.pools.some((p) => p.spot),
                })), { timeout: CONSUMER_TIMEOUT_SECONDS, reservedConcurrency: 1 });
        new aws.lambda.EventSourceMapping(`${name}-wake`, {
            eventSourceArn: wakeQueue.arn,
            functionName: this.scaleUpFunction.function.arn,
            batchSize: 10,
        }, parent);

        this.interruptionFunction = lambda("interruption", "strata GPU fleet: records spot interruptions for the breaker and the re-run", (logGroupArn) =>
            pulumi.all([common, logGroupArn, appSecret.arn]).apply(([c, logArn, appArn]) => interruptionPolicy({ ...c, logGroupArn: logArn, secretArns: [appArn] })));

        this.housekeepingFunction = lambda("housekeeping", "strata GPU fleet: reaps overdue runners and stale JIT configs, enqueues missed jobs", (logGroupArn) =>
            pulumi.all([common, logGroupArn, appSecret.arn]).apply(([c, logArn, appArn]) => housekeepingPolicy({ ...c, logGroupArn: logArn, secretArns: [appArn] })), { timeout: 120 });

        // EventBridge: what wakes which handler.
        const rule = (ruleName: string, target: ScalerFunction, ruleArgs: Pick<aws.cloudwatch.EventRuleArgs, "description" | "scheduleExpression" | "eventPattern">) => {
            const r = new aws.cloudwatch.EventRule(`${name}-${ruleName}`, { ...ruleArgs, tags }, parent);
            new aws.lambda.Permission(`${name}-${ruleName}`, {
                action: "lambda:InvokeFunction",
                function: target.function.name,
                principal: "events.amazonaws.com",
                sourceArn: r.arn,
            }, parent);
            new aws.cloudwatch.EventTarget(`${name}-${ruleName}`, { rule: r.name, arn: target.function.arn }, parent);
            return r;
        };
        rule("housekeeping", this.housekeepingFunction, { description: "strata GPU fleet housekeeping", scheduleExpression: "rate(5 minutes)" });
        rule("scaleup-schedule", this.scaleUpFunction, { description: "strata GPU fleet: serve waiting jobs (backoff expiry)", scheduleExpression: "rate(1 minute)" });
        rule("instance-ended", this.scaleUpFunction, {
            description: "strata GPU fleet: a slot frees when an instance ends",
            eventPattern: JSON.stringify(INSTANCE_ENDED_PATTERN),
        });
        rule("spot-interruption", this.interruptionFunction, {
            description: "strata GPU fleet: spot interruption warnings and rebalance recommendations",
            eventPattern: JSON.stringify(SPOT_INTERRUPTION_PATTERN),
        });

        // GitHub webhook (provider from opts.providers / the stack's github config).
        const hookConfiguration = { url: this.webhookUrl, contentType: "json", secret: webhookSecretString, insecureSsl: false };
        if (config.runnerRepo) {
            new github.RepositoryWebhook(`${name}-workflow-job`, {
                repository: config.runnerRepo.split("/")[1]!,
                events: ["workflow_job"],
                active: true,
                configuration: hookConfiguration,
            }, parent);
        } else {
            new github.OrganizationWebhook(`${name}-workflow-job`, {
                events: ["workflow_job"],
                active: true,
                configuration: hookConfiguration,
            }, parent);
        }

        this.registerOutputs({
            webhookUrl: this.webhookUrl,
            launchTemplateIds: this.launchTemplateIds,
            amiIds: this.amiIds,
            instanceRoleArn: this.instanceRoleArn,
            paramPrefix: this.paramPrefix,
        });
    }
}

/** Timeout of the scale-up consumer in seconds (its handler stops taking new jobs well before). */
export const CONSUMER_TIMEOUT_SECONDS = 60;

/** EC2 instance state changes that free a slot (EventBridge cannot filter by tag: the consumer counts anyway). */
export const INSTANCE_ENDED_PATTERN = {
    source: ["aws.ec2"],
    "detail-type": ["EC2 Instance State-change Notification"],
    detail: { state: ["shutting-down", "terminated"] },
};

export const SPOT_INTERRUPTION_PATTERN = {
    source: ["aws.ec2"],
    "detail-type": ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"],
};

/** File name of the generated base-build workflow (workflows/generate.ts writes it). */
export const BASE_BUILD_WORKFLOW = ".github/workflows/strata-build-bases.yml";

/** The `selectedWorkflows` entry of the runner group: the base-build workflow of `repository` on `branch`. */
export function baseBuildWorkflowRef(repository: string, branch: string): string {
    return `${repository}/${BASE_BUILD_WORKFLOW}@refs/heads/${branch}`;
}

/** One entry of `STRATA_POOLS`. */
export interface PoolDescriptor {
    name: string;
    labels: string[];
    launchTemplateId: string;
    launchTemplateVersion: string;
    instanceTypes: string[];
    subnetIds: string[];
    maxRunners: number;
    maxRuntimeMinutes: number;
    spot: boolean;
    queueUrl: string;
}

/** What the scaler learns about a pool. */
export function poolDescriptor(pool: PoolConfig, launchTemplateId: string, launchTemplateVersion: number | string, subnetIds: string[], queueUrl: string): PoolDescriptor {
    return {
        name: pool.name,
        labels: [...pool.labels],
        launchTemplateId,
        launchTemplateVersion: String(launchTemplateVersion),
        instanceTypes: [...pool.instanceTypes],
        subnetIds: [...subnetIds],
        maxRunners: pool.maxRunners,
        maxRuntimeMinutes: pool.maxRuntimeMinutes,
        spot: pool.spot,
        queueUrl,
    };
}

/** Unprivileged user the runner runs as on the instance. */
export const RUNNER_USER = "runner";

/**
 * Variables of a pool's user data: exactly the `{{PLACEHOLDERS}}` of scaler/userdata.sh
 * (`renderUserData` rejects unknown or missing ones). Labels and runner name come with the JIT config.
 */
export function userDataVars(i: { pool: PoolConfig; region: string; paramPrefix: string; runnerVersion: string; runnerSha256?: string }): Record<string, string> {
    return {
        REGION: i.region,
        PARAM_PREFIX: i.paramPrefix,
        MAX_RUNTIME_MINUTES: String(i.pool.maxRuntimeMinutes),
        RUNNER_VERSION: i.runnerVersion,
        ...(i.runnerSha256 ? { RUNNER_SHA256: i.runnerSha256 } : {}),
        RUNNER_USER: RUNNER_USER,
    };
}

/** The instance user data: scaler/userdata.sh rendered for a pool. */
function defaultUserData(vars: Record<string, string>): string {
    return renderUserData(vars as unknown as UserDataVars);
}
