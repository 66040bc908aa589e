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
    INSTANCE_ARN_TAG_KEY,
    POOL_TAG_KEY,
    STACK_TAG_KEY,
    webhookPolicy,
    type AwsScope,
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
 * signature, and for a queued job whose labels a pool serves, launches one instance from that pool's
 * launch template (below the pool's cap), and stores a single-use JIT runner config in Parameter Store
 * for it. The instance fetches and deletes its config, runs one job and powers off (terminating
 * itself). A housekeeping Lambda every 5 minutes reaps overdue instances and stale configs.
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

        // Scaler Lambdas.
        const poolsJson = pulumi.all([
            pulumi.all(pools.map((p) => pulumi.all([p.resource.launchTemplate.id, p.resource.launchTemplate.latestVersion]))),
            this.subnetIds,
        ]).apply(([templates, subnetIds]) => JSON.stringify(pools.map((p, i) => poolDescriptor(p.config, templates[i]![0], templates[i]![1], subnetIds))));
        const environment: Record<string, pulumi.Input<string>> = {
            STRATA_POOLS: poolsJson,
            STRATA_WEBHOOK_SECRET_ARN: webhookSecret.arn,
            STRATA_GITHUB_APP_SECRET_ARN: appSecret.arn,
            STRATA_GITHUB_API_URL: config.githubApiUrl,
            STRATA_RUNNER_OWNER: config.runnerOwner,
            // The scaler wants the repository name alone; the owner is STRATA_RUNNER_OWNER.
            ...(config.runnerRepo ? { STRATA_RUNNER_REPO: config.runnerRepo.split("/")[1]! } : {}),
            // 1 is the "Default" runner group, which the JIT config API needs an id for.
            STRATA_RUNNER_GROUP_ID: String(config.runnerGroupId ?? 1),
            STRATA_PARAM_PREFIX: this.paramPrefix,
            STRATA_TAG_KEY: POOL_TAG_KEY,
            STRATA_INSTANCE_ARN_TAG_KEY: INSTANCE_ARN_TAG_KEY,
            STRATA_INSTANCE_ARN_PREFIX: scope.apply((s) => `arn:${s.partition}:ec2:${s.region}:${s.accountId}:instance/`),
        };
        const scalerCommon = { poolNames: config.pools.map((p) => p.name), paramPrefix: this.paramPrefix };

        this.webhookFunction = new ScalerFunction(`${name}-webhook`, {
            description: "strata GPU fleet: launches a JIT runner per queued workflow_job",
            code: bundle(scalerEntry("webhook")),
            environment,
            logGroupName: `/strata/${stack}/fleet/webhook`,
            logRetentionDays: retention,
            tags,
            policy: (logGroupArn) => pulumi.all([
                scope, logGroupArn, pulumi.all([webhookSecret.arn, appSecret.arn]), this.launchTemplateIds, this.subnetIds,
                this.network.securityGroup.id, this.amiIds, instanceRole.arn,
            ]).apply(([s, logArn, secretArns, templateIds, subnetIds, sgId, amiIds, roleArn]) => webhookPolicy({
                ...s, ...scalerCommon, logGroupArn: logArn, secretArns,
                launchTemplateIds: Object.values(templateIds), subnetIds, securityGroupIds: [sgId],
                imageIds: [...new Set(Object.values(amiIds))], instanceRoleArn: roleArn, spot: config.pools.some((p) => p.spot),
            })),
        }, parent);
        // GitHub signs every delivery and the handler verifies the HMAC, so the URL itself is public.
        const functionUrl = new aws.lambda.FunctionUrl(`${name}-webhook`, {
            functionName: this.webhookFunction.function.name,
            authorizationType: "NONE",
        }, parent);
        this.webhookUrl = functionUrl.functionUrl;

        this.housekeepingFunction = new ScalerFunction(`${name}-housekeeping`, {
            description: "strata GPU fleet: reaps overdue runners and stale JIT configs",
            code: bundle(scalerEntry("housekeeping")),
            environment,
            logGroupName: `/strata/${stack}/fleet/housekeeping`,
            logRetentionDays: retention,
            timeout: 120,
            tags,
            policy: (logGroupArn) => pulumi.all([scope, logGroupArn, appSecret.arn]).apply(([s, logArn, appArn]) => housekeepingPolicy({
                ...s, ...scalerCommon, logGroupArn: logArn, secretArns: [appArn],
            })),
        }, parent);
        const schedule = new aws.cloudwatch.EventRule(`${name}-housekeeping`, {
            description: "strata GPU fleet housekeeping",
            scheduleExpression: "rate(5 minutes)",
            tags,
        }, parent);
        new aws.lambda.Permission(`${name}-housekeeping`, {
            action: "lambda:InvokeFunction",
            function: this.housekeepingFunction.function.name,
            principal: "events.amazonaws.com",
            sourceArn: schedule.arn,
        }, parent);
        new aws.cloudwatch.EventTarget(`${name}-housekeeping`, { rule: schedule.name, arn: this.housekeepingFunction.function.arn }, parent);

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
}

/** What the scaler learns about a pool. */
export function poolDescriptor(pool: PoolConfig, launchTemplateId: string, launchTemplateVersion: number | string, subnetIds: string[]): PoolDescriptor {
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
