import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";
import type { PoolConfig } from "./config.ts";
import { POOL_TAG_KEY } from "./policy.ts";

/** Arguments of `RunnerPool`. */
export interface RunnerPoolArgs {
    /** The pool's validated configuration. Required. */
    pool: PoolConfig;
    /** AMI to launch: the pool's `amiId` or the one resolved from the SSM parameter. Required. */
    imageId: pulumi.Input<string>;
    /** The runners' security group. Required. */
    securityGroupId: pulumi.Input<string>;
    /** Instance profile of the runner role. Required. */
    instanceProfileArn: pulumi.Input<string>;
    /** User data script, plain text (base64-encoded here). Required. */
    userData: pulumi.Input<string>;
    /** Tags of the template and of every instance and volume it launches. Default: `{}`. */
    tags?: Record<string, string>;
}

/**
 * One pool of ephemeral GPU runners: the launch template the scaler starts instances from. Instance
 * type and subnet are chosen per launch by the scaler (from the pool's priority list and the fleet's
 * subnets), and so is the market (Spot or On-Demand), so that a pool can fall back to On-Demand.
 */
export class RunnerPool extends pulumi.ComponentResource {
    /** The pool's launch template. */
    public readonly launchTemplate: aws.ec2.LaunchTemplate;
    /** The AMI the template launches. */
    public readonly imageId: pulumi.Output<string>;

    constructor(name: string, args: RunnerPoolArgs, opts?: pulumi.ComponentResourceOptions) {
        super("strata:fleet:RunnerPool", name, {}, opts);
        const pool = args.pool;
        const tags = { ...(args.tags ?? {}), [POOL_TAG_KEY]: pool.name };
        this.imageId = pulumi.output(args.imageId);

        // The root device name differs between AMIs (/dev/sda1 on Ubuntu, /dev/xvda on Amazon Linux).
        const rootDeviceName = aws.ec2.getAmiOutput({
            filters: [{ name: "image-id", values: [this.imageId] }],
            includeDeprecated: true,
        }, { parent: this }).rootDeviceName;

        this.launchTemplate = new aws.ec2.LaunchTemplate(name, {
            description: `strata GPU runner pool ${pool.name}`,
            imageId: this.imageId,
            instanceType: pool.instanceTypes[0],
            iamInstanceProfile: { arn: args.instanceProfileArn },
            vpcSecurityGroupIds: [args.securityGroupId],
            // A runner that powers itself off (job done, or its max runtime reached) is gone for good.
            instanceInitiatedShutdownBehavior: "terminate",
            ebsOptimized: "true",
            metadataOptions: {
                httpEndpoint: "enabled",
                httpTokens: "required",
                httpPutResponseHopLimit: pool.metadataHopLimit,
                instanceMetadataTags: "disabled",
            },
            blockDeviceMappings: [{
                deviceName: rootDeviceName,
                ebs: {
                    volumeType: "gp3",
                    volumeSize: pool.rootVolumeGiB,
                    iops: pool.rootVolumeIops,
                    throughput: pool.rootVolumeThroughput,
                    encrypted: "true",
                    deleteOnTermination: "true",
                },
            }],
            userData: pulumi.output(args.userData).apply((script) => Buffer.from(script, "utf8").toString("base64")),
            tagSpecifications: [
                { resourceType: "instance", tags: { ...tags, Name: `strata-runner-${pool.name}` } },
                { resourceType: "volume", tags },
                { resourceType: "network-interface", tags },
            ],
            updateDefaultVersion: true,
            tags,
        }, { parent: this });

        this.registerOutputs({ launchTemplateId: this.launchTemplate.id, imageId: this.imageId });
    }
}
