import { z } from "zod";
import { KNOWN_RUNNER_SHA256, missingRunnerSha256 } from "../../scaler/userdata.ts";

/** Stack configuration key read by the fleet. */
export const FLEET_CONFIG_KEY = "strata:fleet";

/** Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04), x86_64, latest. */
export const DEFAULT_AMI_PARAMETER =
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";

/** actions/runner release installed by user data when the AMI has none baked in. Bump with releases. */
export const DEFAULT_RUNNER_VERSION = "2.329.0";

export const DEFAULT_POOL_NAME = "gpu-base-builder";
export const DEFAULT_INSTANCE_TYPES: readonly string[] = ["g6.4xlarge", "g5.4xlarge"];
export const DEFAULT_LABELS: readonly string[] = ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"];

const poolName = z
    .string()
    .regex(/^[a-z][a-z0-9-]{0,30}[a-z0-9]$/, "must be 2-32 characters of lowercase letters, digits and '-', starting with a letter");

const instanceType = z
    .string()
    .regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, "must be an EC2 instance type such as g6.4xlarge");

const label = z
    .string()
    .min(1, "must not be empty")
    .max(100, "must be at most 100 characters")
    .regex(/^[^,\s]+$/, "must not contain spaces or commas");

const poolSchema = z
    .strictObject({
        name: poolName,
        instanceTypes: z.array(instanceType).min(1, "must list at least one instance type").default([...DEFAULT_INSTANCE_TYPES]),
        labels: z.array(label).min(1, "must list at least one label").default([...DEFAULT_LABELS]),
        rootVolumeGiB: z.number().int().min(100, "must be at least 100 (GiB): GPU base images and the layer cache need the room").max(16384).default(200),
        rootVolumeIops: z.number().int().min(3000, "gp3 needs at least 3000 IOPS").max(80000).default(6000),
        rootVolumeThroughput: z.number().int().min(125, "gp3 needs at least 125 MiB/s").max(2000).default(500),
        maxRunners: z.number().int().min(1, "must be at least 1 (remove the pool instead)").max(100).default(4),
        maxRuntimeMinutes: z.number().int().min(10).max(7200).default(360),
        spot: z.boolean().default(true),
        metadataHopLimit: z.number().int().min(1, "must be 1 (host only) or 2 (containers too)").max(2, "must be 1 (host only) or 2 (containers too)").default(1),
        amiId: z.string().regex(/^ami-[0-9a-f]{8,17}$/, "must be an AMI id such as ami-0123456789abcdef0").optional(),
    })
    .superRefine((pool, ctx) => {
        if (!pool.labels.includes("self-hosted")) {
            ctx.addIssue({ code: "custom", path: ["labels"], message: `must include "self-hosted" (got ${JSON.stringify(pool.labels)})` });
        }
        if (pool.rootVolumeIops > pool.rootVolumeGiB * 500) {
            ctx.addIssue({ code: "custom", path: ["rootVolumeIops"], message: `gp3 allows at most 500 IOPS per GiB: raise rootVolumeGiB to ${Math.ceil(pool.rootVolumeIops / 500)} or lower the IOPS` });
        }
        if (pool.rootVolumeThroughput > pool.rootVolumeIops / 4) {
            ctx.addIssue({ code: "custom", path: ["rootVolumeThroughput"], message: `gp3 allows at most 0.25 MiB/s per IOPS: raise rootVolumeIops to ${pool.rootVolumeThroughput * 4} or lower the throughput` });
        }
    });

const fleetSchema = z
    .strictObject({
        enabled: z.boolean().default(false),
        vpcId: z.string().regex(/^vpc-[0-9a-f]+$/, "must be a VPC id such as vpc-0123abcd").optional(),
        subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, "must be a subnet id such as subnet-0123abcd")).min(1).optional(),
        egress: z.enum(["nat", "public-ip"]).default("nat"),
        runnerOwner: z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$/, "must be a GitHub organization or user login").optional(),
        runnerRepo: z.string().regex(/^[A-Za-z0-9-]+\/[A-Za-z0-9._-]+$/, 'must be "owner/name"').optional(),
        runnerGroupId: z.number().int().min(1).optional(),
        repositories: z.array(z.string().regex(/^[A-Za-z0-9-]+\/[A-Za-z0-9._-]+$/, 'must be "owner/name"')).min(1, "must list at least one repository").optional(),
        spotBreaker: z
            .strictObject({
                failures: z.number().int().min(1).max(1000).default(3),
                windowMinutes: z.number().int().min(1).max(1440).default(30),
                onDemandMinutes: z.number().int().min(1).max(10080).default(60),
            })
            .prefault({}),
        githubApiUrl: z.url({ protocol: /^https$/ }).default("https://api.github.com"),
        pools: z.array(poolSchema).min(1, "must define at least one pool").prefault([{ name: DEFAULT_POOL_NAME }]),
        amiParameter: z.string().startsWith("/", "must be an SSM parameter name starting with '/'").default(DEFAULT_AMI_PARAMETER),
        runnerVersion: z.string().regex(/^\d+\.\d+\.\d+$/, "must be an actions/runner version such as 2.329.0").default(DEFAULT_RUNNER_VERSION),
        /** SHA-256 of actions-runner-linux-x64-<runnerVersion>.tar.gz; default the known one of that version. */
        runnerSha256: z.string().regex(/^[0-9a-f]{64}$/, "must be the package's SHA-256: 64 lowercase hex digits").optional(),
    })
    .superRefine((fleet, ctx) => {
        if (fleet.enabled && !fleet.runnerSha256 && !KNOWN_RUNNER_SHA256[fleet.runnerVersion]) {
            ctx.addIssue({ code: "custom", path: ["runnerSha256"], message: `is required for runnerVersion ${fleet.runnerVersion}: ${missingRunnerSha256(fleet.runnerVersion)}` });
        }
        if (fleet.enabled && !fleet.runnerOwner) {
            ctx.addIssue({ code: "custom", path: ["runnerOwner"], message: "is required when enabled: set it to the organization (or user) that owns the runners" });
        }
        if ((fleet.vpcId === undefined) !== (fleet.subnetIds === undefined)) {
            ctx.addIssue({ code: "custom", path: [fleet.vpcId ? "subnetIds" : "vpcId"], message: "vpcId and subnetIds go together: set both to use an existing VPC, or neither to let the fleet create its own" });
        }
        if (fleet.runnerRepo && fleet.runnerOwner && fleet.runnerRepo.split("/")[0]!.toLowerCase() !== fleet.runnerOwner.toLowerCase()) {
            ctx.addIssue({ code: "custom", path: ["runnerRepo"], message: `must belong to runnerOwner "${fleet.runnerOwner}"` });
        }
        if (fleet.runnerGroupId !== undefined) {
            ctx.addIssue({ code: "custom", path: ["runnerGroupId"], message: "is no longer used: the fleet declares its own runner group (selected repositories, the base-build workflow only); remove the key" });
        }
        for (const [i, repo] of (fleet.repositories ?? []).entries()) {
            if (fleet.runnerOwner && repo.split("/")[0]!.toLowerCase() !== fleet.runnerOwner.toLowerCase()) {
                ctx.addIssue({ code: "custom", path: ["repositories", i], message: `must belong to runnerOwner "${fleet.runnerOwner}" (the GitHub App installation the scaler uses)` });
            }
        }
        const names = new Map<string, number>();
        const labelSets = new Map<string, number>();
        fleet.pools.forEach((pool, i) => {
            const seen = names.get(pool.name);
            if (seen !== undefined) {
                ctx.addIssue({ code: "custom", path: ["pools", i, "name"], message: `duplicates pools[${seen}].name "${pool.name}": pool names must be unique` });
            } else {
                names.set(pool.name, i);
            }
            const key = labelSetKey(pool.labels);
            const same = labelSets.get(key);
            if (same !== undefined) {
                ctx.addIssue({ code: "custom", path: ["pools", i, "labels"], message: `has the same label set as pools[${same}]: a queued job could not tell the pools apart, add a distinguishing label` });
            } else {
                labelSets.set(key, i);
            }
        });
    });

type ParsedFleet = z.output<typeof fleetSchema>;

/** One runner pool after defaults are applied. */
export type PoolConfig = ParsedFleet["pools"][number];

/** Fleet configuration of an enabled fleet, all defaults applied. */
export type FleetConfig = Omit<ParsedFleet, "enabled" | "runnerOwner"> & { enabled: true; runnerOwner: string };

/** What `parseFleetConfig` returns: a disabled fleet carries nothing else. */
export type FleetConfigResult = { enabled: false } | FleetConfig;

/** GitHub matches labels case-insensitively; the order is irrelevant. */
export function labelSetKey(labels: readonly string[]): string {
    return [...new Set(labels.map((l) => l.toLowerCase()))].sort().join(",");
}

/**
 * Validate the raw value of the `strata:fleet` stack config key.
 *
 * `where` names the key in error messages (usually `strata:fleet`). Throws an `Error` listing every
 * problem as `<key path>: <what is wrong and how to fix it>`.
 */
export function parseFleetConfig(raw: unknown, where: string = FLEET_CONFIG_KEY): FleetConfigResult {
    const result = fleetSchema.safeParse(raw ?? {});
    if (!result.success) {
        const lines = result.error.issues.map((issue) => {
            const message = issue.code === "unrecognized_keys"
                ? `unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}: remove them or fix the spelling`
                : issue.message;
            return `  ${formatPath(where, issue.path)}: ${message}`;
        });
        throw new Error(`Invalid stack config ${where} (fix it in Pulumi.<stack>.yaml):\n${lines.join("\n")}`);
    }
    const { enabled, runnerOwner, ...rest } = result.data;
    if (!enabled) {
        return { enabled: false };
    }
    return { ...rest, enabled: true, runnerOwner: runnerOwner! };
}

function formatPath(where: string, path: readonly PropertyKey[]): string {
    let out = where;
    for (const part of path) {
        out += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
    }
    return out;
}
