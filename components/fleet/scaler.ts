import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";
import { BUNDLE_FILE } from "./bundle.ts";
import { assumeRolePolicy, type PolicyDocument } from "./policy.ts";

/** Lambda runtime of the scaler functions. */
export const SCALER_RUNTIME = "nodejs22.x";

/** Arguments of `ScalerFunction`. */
export interface ScalerFunctionArgs {
    /** What the function does, for the console. Required. */
    description: string;
    /** The bundled code (an archive holding `index.mjs`). Required. */
    code: pulumi.Input<pulumi.asset.Archive>;
    /** Environment variables. Must never hold secret values (only their ARNs). Required. */
    environment: pulumi.Input<Record<string, pulumi.Input<string>>>;
    /** The function role's inline policy, given the ARN of the function's log group. Required. */
    policy: (logGroupArn: pulumi.Output<string>) => pulumi.Output<PolicyDocument>;
    /** Name of the log group the function writes to. Required. */
    logGroupName: pulumi.Input<string>;
    /** Log retention in days. Default: `30`. */
    logRetentionDays?: number;
    /** Reserved concurrency; `1` serialises the function. Default: unreserved. */
    reservedConcurrency?: number;
    /** Timeout in seconds. Default: `30`. */
    timeout?: number;
    /** Memory in MiB. Default: `256`. */
    memorySize?: number;
    /** Tags of the function, role and log group. Default: `{}`. */
    tags?: Record<string, string>;
}

/** One scaler Lambda (Node 20, arm64) with its own role, inline policy and log group. */
export class ScalerFunction extends pulumi.ComponentResource {
    public readonly function: aws.lambda.Function;
    public readonly role: aws.iam.Role;
    public readonly logGroup: aws.cloudwatch.LogGroup;

    constructor(name: string, args: ScalerFunctionArgs, opts?: pulumi.ComponentResourceOptions) {
        super("strata:fleet:ScalerFunction", name, {}, opts);
        const tags = args.tags ?? {};
        this.logGroup = new aws.cloudwatch.LogGroup(name, {
            name: args.logGroupName,
            retentionInDays: args.logRetentionDays ?? 30,
            tags,
        }, { parent: this });
        this.role = new aws.iam.Role(name, {
            description: args.description,
            assumeRolePolicy: JSON.stringify(assumeRolePolicy("lambda.amazonaws.com")),
            tags,
        }, { parent: this });
        const policy = new aws.iam.RolePolicy(name, {
            role: this.role.name,
            policy: args.policy(this.logGroup.arn).apply((doc) => JSON.stringify(doc)),
        }, { parent: this });
        this.function = new aws.lambda.Function(name, {
            description: args.description,
            runtime: SCALER_RUNTIME,
            architectures: ["arm64"],
            handler: `${BUNDLE_FILE.replace(/\.mjs$/, "")}.handler`,
            code: args.code,
            role: this.role.arn,
            memorySize: args.memorySize ?? 256,
            timeout: args.timeout ?? 30,
            ...(args.reservedConcurrency !== undefined ? { reservedConcurrentExecutions: args.reservedConcurrency } : {}),
            environment: { variables: args.environment },
            loggingConfig: { logFormat: "JSON", logGroup: this.logGroup.name },
            tags,
        }, { parent: this, dependsOn: [policy, this.logGroup] });
        this.registerOutputs({ functionArn: this.function.arn, roleArn: this.role.arn });
    }
}
