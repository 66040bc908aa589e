import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";

/** Arguments of `FleetNetwork`. */
export interface FleetNetworkArgs {
    /** An existing VPC and its private subnets. Default: none, a VPC of the fleet's own is created. */
    existing?: { vpcId: string; subnetIds: string[] };
    /**
     * Egress of the fleet's own VPC: `"nat"` runs instances in private subnets behind one NAT gateway;
     * `"public-ip"` runs them in public subnets with a public IPv4 address each (no inbound is allowed
     * by the security group either way). Ignored with `existing`. Default: `"nat"`.
     */
    egress?: "nat" | "public-ip";
    /** Instance types the pools launch; the own VPC's two subnets go to the zones offering most of them. Default: `[]` (first two zones). */
    instanceTypes?: string[];
    /** Tags of every taggable resource. Default: `{}`. */
    tags?: Record<string, string>;
}

/** CIDR of the fleet's own VPC. */
export const FLEET_VPC_CIDR = "10.42.0.0/16";
const RUNNER_SUBNET_CIDRS = ["10.42.0.0/18", "10.42.64.0/18"];
const NAT_SUBNET_CIDR = "10.42.255.0/28";

/**
 * The network of the fleet: a VPC of its own (or the given one), the runner subnets, and the runners'
 * security group, which has no ingress rule at all and egress to HTTP(S) anywhere and DNS in the VPC.
 */
export class FleetNetwork extends pulumi.ComponentResource {
    /** The VPC the runners run in. */
    public readonly vpcId: pulumi.Output<string>;
    /** Subnets the scaler may launch into. */
    public readonly subnetIds: pulumi.Output<string[]>;
    /** The runners' security group. */
    public readonly securityGroup: aws.ec2.SecurityGroup;
    /** The NAT gateway of the own VPC with `egress: "nat"`, else undefined. */
    public readonly natGateway?: aws.ec2.NatGateway;

    constructor(name: string, args: FleetNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
        super("strata:fleet:FleetNetwork", name, {}, opts);
        const tags = args.tags ?? {};
        let vpcCidr: pulumi.Output<string>;
        if (args.existing) {
            this.vpcId = pulumi.output(args.existing.vpcId);
            this.subnetIds = pulumi.output([...args.existing.subnetIds]);
            vpcCidr = aws.ec2.getVpcOutput({ id: args.existing.vpcId }, { parent: this }).cidrBlock;
        } else {
            const own = createOwnVpc(name, this, args.egress ?? "nat", args.instanceTypes ?? [], tags);
            this.vpcId = own.vpc.id;
            this.subnetIds = pulumi.all(own.subnets.map((s) => s.id));
            this.natGateway = own.natGateway;
            vpcCidr = own.vpc.cidrBlock;
        }

        this.securityGroup = new aws.ec2.SecurityGroup(`${name}-runners`, {
            description: "strata GPU runners: no inbound; HTTPS/HTTP out, DNS in the VPC",
            vpcId: this.vpcId,
            // An explicit empty list makes Pulumi remove any ingress rule added out of band.
            ingress: [],
            egress: [
                { description: "HTTPS", protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] },
                { description: "HTTP (apt mirrors)", protocol: "tcp", fromPort: 80, toPort: 80, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] },
                { description: "DNS (udp)", protocol: "udp", fromPort: 53, toPort: 53, cidrBlocks: [vpcCidr] },
                { description: "DNS (tcp)", protocol: "tcp", fromPort: 53, toPort: 53, cidrBlocks: [vpcCidr] },
            ],
            tags: { ...tags, Name: `${name}-runners` },
        }, { parent: this });

        this.registerOutputs({ vpcId: this.vpcId, subnetIds: this.subnetIds, securityGroupId: this.securityGroup.id });
    }
}

/**
 * The `count` zones offering most of the wanted instance types (ties broken by name), topped up from
 * `allZones` in order when fewer zones offer any of them.
 */
export function pickAvailabilityZones(
    offerings: { location: string; instanceType: string }[],
    allZones: string[],
    count: number,
): string[] {
    const score = new Map<string, Set<string>>();
    for (const o of offerings) {
        if (allZones.length === 0 || allZones.includes(o.location)) {
            score.set(o.location, (score.get(o.location) ?? new Set()).add(o.instanceType));
        }
    }
    const ranked = [...score.entries()]
        .sort(([a, sa], [b, sb]) => sb.size - sa.size || a.localeCompare(b))
        .map(([zone]) => zone);
    const picked = ranked.slice(0, count);
    for (const zone of allZones) {
        if (picked.length >= count) {
            break;
        }
        if (!picked.includes(zone)) {
            picked.push(zone);
        }
    }
    if (picked.length < count) {
        throw new Error(`need ${count} availability zones for the fleet VPC, found ${picked.length}`);
    }
    return picked;
}

function createOwnVpc(name: string, parent: pulumi.Resource, egress: "nat" | "public-ip", instanceTypes: string[], tags: Record<string, string>) {
    const opts = { parent };
    const allZones = aws.getAvailabilityZonesOutput({ state: "available" }, opts).names;
    const offered = instanceTypes.length === 0
        ? pulumi.output([] as { location: string; instanceType: string }[])
        : aws.ec2.getInstanceTypeOfferingsOutput({
            locationType: "availability-zone",
            filters: [{ name: "instance-type", values: instanceTypes }],
        }, opts).apply((r) => r.locations.map((location, i) => ({ location, instanceType: r.instanceTypes[i]! })));
    const zones = pulumi.all([offered, allZones]).apply(([o, all]) => pickAvailabilityZones(o, all, RUNNER_SUBNET_CIDRS.length));

    const vpc = new aws.ec2.Vpc(`${name}-vpc`, {
        cidrBlock: FLEET_VPC_CIDR,
        enableDnsSupport: true,
        enableDnsHostnames: true,
        tags: { ...tags, Name: `${name}-vpc` },
    }, opts);
    const igw = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id, tags: { ...tags, Name: `${name}-igw` } }, opts);

    const publicRoutes = new aws.ec2.RouteTable(`${name}-public`, {
        vpcId: vpc.id,
        routes: [{ cidrBlock: "0.0.0.0/0", gatewayId: igw.id }],
        tags: { ...tags, Name: `${name}-public` },
    }, opts);

    let runnerRoutes = publicRoutes;
    let natGateway: aws.ec2.NatGateway | undefined;
    if (egress === "nat") {
        const natSubnet = new aws.ec2.Subnet(`${name}-nat`, {
            vpcId: vpc.id,
            cidrBlock: NAT_SUBNET_CIDR,
            availabilityZone: zones[0],
            mapPublicIpOnLaunch: false,
            tags: { ...tags, Name: `${name}-nat` },
        }, opts);
        new aws.ec2.RouteTableAssociation(`${name}-nat`, { subnetId: natSubnet.id, routeTableId: publicRoutes.id }, opts);
        const eip = new aws.ec2.Eip(`${name}-nat`, { domain: "vpc", tags: { ...tags, Name: `${name}-nat` } }, { ...opts, dependsOn: [igw] });
        natGateway = new aws.ec2.NatGateway(`${name}-nat`, {
            allocationId: eip.id,
            subnetId: natSubnet.id,
            tags: { ...tags, Name: `${name}-nat` },
        }, opts);
        runnerRoutes = new aws.ec2.RouteTable(`${name}-private`, {
            vpcId: vpc.id,
            routes: [{ cidrBlock: "0.0.0.0/0", natGatewayId: natGateway.id }],
            tags: { ...tags, Name: `${name}-private` },
        }, opts);
    }

    const subnets = RUNNER_SUBNET_CIDRS.map((cidrBlock, i) => {
        const subnet = new aws.ec2.Subnet(`${name}-runners-${i}`, {
            vpcId: vpc.id,
            cidrBlock,
            availabilityZone: zones[i],
            // Only the "public-ip" choice hands out public addresses; nothing can connect in either way.
            mapPublicIpOnLaunch: egress === "public-ip",
            tags: { ...tags, Name: `${name}-runners-${i}` },
        }, opts);
        new aws.ec2.RouteTableAssociation(`${name}-runners-${i}`, { subnetId: subnet.id, routeTableId: runnerRoutes.id }, opts);
        return subnet;
    });

    // Free gateway endpoint: ECR stores layers in S3, so layer pushes and pulls skip the NAT's per-GB charge.
    const region = aws.getRegionOutput({}, opts).region;
    new aws.ec2.VpcEndpoint(`${name}-s3`, {
        vpcId: vpc.id,
        serviceName: pulumi.interpolate`com.amazonaws.${region}.s3`,
        vpcEndpointType: "Gateway",
        routeTableIds: [runnerRoutes.id],
        tags: { ...tags, Name: `${name}-s3` },
    }, opts);

    return { vpc, subnets, natGateway };
}
