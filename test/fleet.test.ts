import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { installMocks, isSecret, plainStrings, unwrapSecret, valueOf, type RecordedResource } from "./mocks.ts";

const ACCOUNT = "123456789012";
const REGION = "us-west-2";
const SSM_AMI = "ami-0aaaaaaaaaaaaaaa1";
const OVERRIDE_AMI = "ami-0bbbbbbbbbbbbbbb2";
const WEBHOOK_SECRET = "MOCKwebhookSECRETvalue0123456789abcdefABCDEF0123";
const PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMOCKprivateKEYmaterial\n-----END RSA PRIVATE KEY-----";
const FUNCTION_URL = "https://abcdefghijklmnop.lambda-url.us-west-2.on.aws/";

const mocks = await installMocks({
    calls: {
        "aws:index/getPartition:getPartition": () => ({ id: "aws", partition: "aws", dnsSuffix: "amazonaws.com", reverseDnsPrefix: "com.amazonaws" }),
        "aws:index/getRegion:getRegion": () => ({ id: REGION, region: REGION, name: REGION, endpoint: `ec2.${REGION}.amazonaws.com`, description: "US West (Oregon)" }),
        "aws:index/getCallerIdentity:getCallerIdentity": () => ({ id: ACCOUNT, accountId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:user/ci`, userId: "AIDAMOCK" }),
        "aws:index/getAvailabilityZones:getAvailabilityZones": () => ({
            id: REGION, names: ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"], zoneIds: ["usw2-az1", "usw2-az2", "usw2-az3", "usw2-az4"],
        }),
        // us-west-2a offers neither type; c and d offer both; b offers one.
        "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": () => ({
            id: REGION,
            locations: ["us-west-2b", "us-west-2c", "us-west-2c", "us-west-2d", "us-west-2d"],
            instanceTypes: ["g6.4xlarge", "g6.4xlarge", "g5.4xlarge", "g6.4xlarge", "g5.4xlarge"],
            locationTypes: ["availability-zone", "availability-zone", "availability-zone", "availability-zone", "availability-zone"],
        }),
        "aws:ssm/getParameter:getParameter": (inputs) => ({
            id: inputs.name, arn: `arn:aws:ssm:${REGION}::parameter${inputs.name}`, name: inputs.name, type: "String",
            value: SSM_AMI, insecureValue: SSM_AMI, version: 42,
        }),
        "aws:ec2/getAmi:getAmi": (inputs) => ({ id: inputs.filters[0].values[0], rootDeviceName: "/dev/sda1", blockDeviceMappings: [] }),
        "aws:ec2/getVpc:getVpc": (inputs) => ({ id: inputs.id, cidrBlock: "172.31.0.0/16" }),
        "github:index/getRepository:getRepository": (inputs) => ({ id: inputs.fullName, fullName: inputs.fullName, repoId: { "acme/models": 101, "acme/app": 102 }[inputs.fullName as string] }),
    },
    id: (type, name) => {
        const short = createHash("sha1").update(name).digest("hex").slice(0, 17);
        switch (type) {
            case "aws:ec2/launchTemplate:LaunchTemplate": return `lt-${short}`;
            case "aws:ec2/securityGroup:SecurityGroup": return `sg-${short}`;
            case "aws:ec2/subnet:Subnet": return `subnet-${short}`;
            case "aws:ec2/vpc:Vpc": return `vpc-${short}`;
            case "github:index/actionsRunnerGroup:ActionsRunnerGroup": return "42";
            default: return `${name}-id`;
        }
    },
    state: {
        "aws:ec2/launchTemplate:LaunchTemplate": ({ id }) => ({ arn: `arn:aws:ec2:${REGION}:${ACCOUNT}:launch-template/${id}`, latestVersion: 3 }),
        "aws:iam/role:Role": ({ name }) => ({ arn: `arn:aws:iam::${ACCOUNT}:role/${name}`, name }),
        "aws:iam/instanceProfile:InstanceProfile": ({ name }) => ({ arn: `arn:aws:iam::${ACCOUNT}:instance-profile/${name}`, name }),
        "aws:cloudwatch/logGroup:LogGroup": ({ inputs }) => ({ arn: `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:${inputs.name}` }),
        "aws:secretsmanager/secret:Secret": ({ name }) => ({ arn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:${name}-AbCdEf` }),
        "aws:lambda/function:Function": ({ name }) => ({ arn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${name}`, name }),
        "aws:lambda/functionUrl:FunctionUrl": () => ({ functionUrl: FUNCTION_URL }),
        "aws:cloudwatch/eventRule:EventRule": ({ name }) => ({ arn: `arn:aws:events:${REGION}:${ACCOUNT}:rule/${name}`, name }),
        "aws:sqs/queue:Queue": ({ inputs }) => ({ arn: `arn:aws:sqs:${REGION}:${ACCOUNT}:${inputs.name}`, url: `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${inputs.name}` }),
        "random:index/randomPassword:RandomPassword": () => ({ result: WEBHOOK_SECRET }),
    },
});

const { GpuRunnerFleet, parseFleetConfig, findWildcardWrites } = await import("../components/fleet/index.ts");
const { INSTANCE_ARN_TAG_KEY } = await import("../components/fleet/policy.ts");

const bundled: string[] = [];
const fakeBundle = (entry: string) => {
    bundled.push(entry);
    return new pulumi.asset.AssetArchive({ "index.mjs": new pulumi.asset.StringAsset(`// bundle of ${entry}\nexport const handler = async () => ({});`) });
};
const rendered: Record<string, string>[] = [];
const fakeUserData = (vars: Record<string, string>) => {
    rendered.push(vars);
    return `#!/bin/bash\n# runtime=${vars.MAX_RUNTIME_MINUTES} region=${vars.REGION} prefix=${vars.PARAM_PREFIX} user=${vars.RUNNER_USER}\n`;
};

function enabled(raw: unknown) {
    const c = parseFleetConfig(raw, "strata:fleet");
    if (!c.enabled) {
        throw new Error("test config must be enabled");
    }
    return c;
}

// Fleet A: own VPC, organization webhook, a Spot pool on the SSM AMI and an On-Demand pool with an AMI override.
const fleetA = new GpuRunnerFleet("a", {
    config: enabled({
        enabled: true,
        runnerOwner: "acme",
        repositories: ["acme/models", "Acme/App"],
        pools: [
            { name: "gpu-base-builder", maxRunners: 3 },
            { name: "gpu-big", instanceTypes: ["g6.12xlarge"], labels: ["self-hosted", "linux", "x64", "gpu", "big"], maxRunners: 1, spot: false, amiId: OVERRIDE_AMI, maxRuntimeMinutes: 120, metadataHopLimit: 2 },
        ],
    }),
    githubApp: { appId: "123456", installationId: "987654", privateKey: pulumi.secret(PRIVATE_KEY) },
    bundle: fakeBundle,
    userData: fakeUserData,
});

// Fleet B: existing VPC, repository webhook, defaults otherwise.
const fleetB = new GpuRunnerFleet("b", {
    config: enabled({ enabled: true, runnerOwner: "acme", runnerRepo: "acme/models", vpcId: "vpc-0123abcd", subnetIds: ["subnet-0aaa", "subnet-0bbb"] }),
    repositories: ["acme/models"],
    defaultBranch: "trunk",
    githubApp: { appId: "123456", installationId: "987654", privateKey: pulumi.secret(PRIVATE_KEY) },
    bundle: fakeBundle,
    userData: fakeUserData,
});

// Resolving every output makes all registrations of both fleets happen.
const outputsA = {
    url: await valueOf(fleetA.webhookUrl),
    lts: await valueOf(fleetA.launchTemplateIds),
    amis: await valueOf(fleetA.amiIds),
    role: await valueOf(fleetA.instanceRoleArn),
    subnets: await valueOf(fleetA.subnetIds),
};
const outputsB = { url: await valueOf(fleetB.webhookUrl), lts: await valueOf(fleetB.launchTemplateIds), subnets: await valueOf(fleetB.subnetIds) };
await mocks.settled(200);

const of = (fleet: "a" | "b", rs: RecordedResource[]) => rs.filter((r) => r.name.startsWith(`${fleet}-`));
const all = (type: string) => mocks.findAll(type);
const policyOf = (r: RecordedResource) => JSON.parse(r.inputs.policy as string);
const envOf = async (name: string) => (await mocks.findCreatedResource("aws:lambda/function:Function", name)).inputs.environment.variables as Record<string, string>;

test("outputs: webhook URL, per-pool launch template ids and AMIs, instance role, param prefix", () => {
    assert.equal(outputsA.url, FUNCTION_URL);
    assert.deepEqual(Object.keys(outputsA.lts).sort(), ["gpu-base-builder", "gpu-big"]);
    assert.match(outputsA.lts["gpu-base-builder"]!, /^lt-/);
    assert.deepEqual(outputsA.amis, { "gpu-base-builder": SSM_AMI, "gpu-big": OVERRIDE_AMI });
    assert.equal(outputsA.role, `arn:aws:iam::${ACCOUNT}:role/a-instance`);
    assert.equal(fleetA.paramPrefix, "/strata/test/jit/");
    assert.deepEqual(Object.keys(outputsB.lts), ["gpu-base-builder"]);
});

test("AMI comes from the SSM parameter through the mocked invoke, unless a pool overrides it", async () => {
    const ssmCalls = mocks.calls.filter((c) => c.token === "aws:ssm/getParameter:getParameter");
    assert.ok(ssmCalls.length >= 1);
    for (const c of ssmCalls) {
        assert.equal(c.inputs.name, "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id");
    }
    const base = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-base-builder");
    const big = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-big");
    assert.equal(base.inputs.imageId, SSM_AMI);
    assert.equal(big.inputs.imageId, OVERRIDE_AMI);
});

test("launch templates: IMDSv2 required, encrypted gp3 root volume, terminate on shutdown, pool-tagged", async () => {
    const lts = await all("aws:ec2/launchTemplate:LaunchTemplate");
    assert.equal(lts.length, 3);
    for (const lt of lts) {
        assert.equal(lt.inputs.metadataOptions.httpTokens, "required", `${lt.name} IMDSv2`);
        assert.equal(lt.inputs.metadataOptions.httpEndpoint, "enabled");
        assert.equal(lt.inputs.instanceInitiatedShutdownBehavior, "terminate");
        assert.equal(lt.inputs.blockDeviceMappings.length, 1);
        const bdm = lt.inputs.blockDeviceMappings[0];
        assert.equal(bdm.deviceName, "/dev/sda1", "root device name from getAmi");
        assert.equal(bdm.ebs.encrypted, "true");
        assert.equal(bdm.ebs.deleteOnTermination, "true");
        assert.equal(bdm.ebs.volumeType, "gp3");
        const instanceTags = lt.inputs.tagSpecifications.find((t: any) => t.resourceType === "instance").tags;
        assert.ok(instanceTags["strata:pool"], `${lt.name} tags instances with their pool`);
        assert.equal(instanceTags["strata:stack"], "test");
        assert.equal(lt.inputs.keyName, undefined, "no SSH key pair");
    }
    const base = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-base-builder");
    assert.deepEqual(
        { size: base.inputs.blockDeviceMappings[0].ebs.volumeSize, iops: base.inputs.blockDeviceMappings[0].ebs.iops, tp: base.inputs.blockDeviceMappings[0].ebs.throughput },
        { size: 200, iops: 6000, tp: 500 },
    );
    assert.equal(base.inputs.metadataOptions.httpPutResponseHopLimit, 1, "default: containers cannot reach IMDS");
    const big = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-big");
    assert.equal(big.inputs.metadataOptions.httpPutResponseHopLimit, 2);
});

test("user data is the rendered template, base64, with the pool's max runtime, region and param prefix", async () => {
    const big = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-big");
    const script = Buffer.from(big.inputs.userData as string, "base64").toString("utf8");
    assert.equal(script, "#!/bin/bash\n# runtime=120 region=us-west-2 prefix=/strata/test/jit/ user=runner\n");
    const base = await mocks.findCreatedResource("aws:ec2/launchTemplate:LaunchTemplate", "a-gpu-base-builder");
    assert.match(Buffer.from(base.inputs.userData as string, "base64").toString("utf8"), /runtime=360 /);
    for (const vars of rendered) {
        assert.deepEqual(Object.keys(vars).sort(), ["MAX_RUNTIME_MINUTES", "PARAM_PREFIX", "REGION", "RUNNER_USER", "RUNNER_VERSION"]);
        assert.equal(vars.RUNNER_VERSION, "2.329.0");
    }
});

test("no security group has an ingress rule; egress is HTTP(S) and in-VPC DNS only", async () => {
    const sgs = await all("aws:ec2/securityGroup:SecurityGroup");
    assert.equal(sgs.length, 2);
    for (const sg of sgs) {
        assert.deepEqual(sg.inputs.ingress, [], `${sg.name} has an explicit empty ingress list`);
        const ports = sg.inputs.egress.map((e: any) => `${e.protocol}/${e.fromPort}-${e.toPort}`).sort();
        assert.deepEqual(ports, ["tcp/443-443", "tcp/53-53", "tcp/80-80", "udp/53-53"]);
        for (const e of sg.inputs.egress.filter((x: any) => x.fromPort === 53)) {
            assert.ok(!e.cidrBlocks.includes("0.0.0.0/0"), "DNS stays inside the VPC");
        }
    }
    const sgB = sgs.find((s) => s.name.startsWith("b-"))!;
    assert.deepEqual(sgB.inputs.egress.find((e: any) => e.fromPort === 53).cidrBlocks, ["172.31.0.0/16"], "existing VPC CIDR from getVpc");
    for (const type of ["aws:ec2/securityGroupRule:SecurityGroupRule", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"]) {
        assert.equal((await all(type)).length, 0, `no ${type}`);
    }
});

test("no policy the fleet creates allows a write action on a wildcard resource", async () => {
    const policies = await all("aws:iam/rolePolicy:RolePolicy");
    assert.equal(policies.length, 10, "instance, webhook, scale-up, interruption and housekeeping policies of two fleets");
    for (const p of policies) {
        assert.deepEqual(findWildcardWrites(p.inputs.policy), [], p.name);
    }
    for (const type of ["aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/policy:Policy", "aws:iam/policyAttachment:PolicyAttachment"]) {
        assert.equal((await all(type)).length, 0, `no ${type}: every permission is in a checked inline policy`);
    }
    for (const role of await all("aws:iam/role:Role")) {
        assert.equal(role.inputs.managedPolicyArns, undefined, `${role.name} has no managed policies`);
    }
});

test("only the scale-up consumer launches, and only from strata's launch templates", async () => {
    const lts = of("a", await all("aws:ec2/launchTemplate:LaunchTemplate"));
    const templateArns = lts.map((lt) => `arn:aws:ec2:${REGION}:${ACCOUNT}:launch-template/${lt.id}`).sort();
    for (const other of ["a-webhook", "a-interruption", "a-housekeeping"]) {
        const actions = policyOf(await mocks.findCreatedResource("aws:iam/rolePolicy:RolePolicy", other)).Statement.flatMap((s: any) => [s.Action].flat());
        assert.ok(!actions.includes("ec2:RunInstances") && !actions.includes("iam:PassRole"), `${other} cannot launch`);
    }
    const policy = policyOf(await mocks.findCreatedResource("aws:iam/rolePolicy:RolePolicy", "a-scaleup"));
    const runs = policy.Statement.filter((s: any) => [s.Action].flat().some((a: string) => a === "ec2:RunInstances" || a === "ec2:*" || a === "*"));
    assert.equal(runs.length, 2);
    const run = runs.find((s: any) => s.Condition?.ArnEquals);
    // The other one: only the spot requests of these launches (ec2:LaunchTemplate does not apply to them).
    assert.deepEqual(runs.filter((s: any) => s !== run).map((s: any) => s.Resource), [`arn:aws:ec2:${REGION}:${ACCOUNT}:spot-instances-request/*`]);
    assert.deepEqual([...run.Condition.ArnEquals["ec2:LaunchTemplate"]].sort(), templateArns);
    assert.deepEqual(Object.keys(run.Condition), ["ArnEquals"]);
    const resources: string[] = run.Resource;
    assert.ok(!resources.includes("*"));
    for (const arn of templateArns) {
        assert.ok(resources.includes(arn));
    }
    assert.ok(resources.includes(`arn:aws:ec2:${REGION}::image/${SSM_AMI}`) && resources.includes(`arn:aws:ec2:${REGION}::image/${OVERRIDE_AMI}`));
    assert.ok(policy.Statement.some((s: any) => s.Action === "ec2:RunInstances" && s.Resource === `arn:aws:ec2:${REGION}:${ACCOUNT}:spot-instances-request/*`), "a Spot pool exists");
    for (const subnet of outputsA.subnets) {
        assert.ok(resources.includes(`arn:aws:ec2:${REGION}:${ACCOUNT}:subnet/${subnet}`));
    }
    // Other fleets' templates are not allowed.
    const other = of("b", await all("aws:ec2/launchTemplate:LaunchTemplate"))[0]!;
    assert.ok(!run.Condition.ArnEquals["ec2:LaunchTemplate"].some((a: string) => a.endsWith(other.id)));

    const tag = policy.Statement.find((s: any) => s.Action === "ec2:CreateTags");
    assert.deepEqual(tag.Condition, { StringEquals: { "ec2:CreateAction": "RunInstances" } });
    const pass = policy.Statement.find((s: any) => s.Action === "iam:PassRole");
    assert.equal(pass.Resource, outputsA.role);
    assert.equal(pass.Condition.StringEquals["iam:PassedToService"], "ec2.amazonaws.com");
    const terminate = policy.Statement.find((s: any) => s.Action === "ec2:TerminateInstances");
    assert.deepEqual(terminate.Condition, { StringEquals: { "aws:ResourceTag/strata:pool": ["gpu-base-builder", "gpu-big"] } });
    const untag = policy.Statement.find((s: any) => s.Action === "ec2:DeleteTags");
    assert.deepEqual(untag.Condition["ForAllValues:StringEquals"], { "aws:TagKeys": ["strata:job-id", "strata:delivery"] });
    const secrets = policy.Statement.find((s: any) => s.Action === "secretsmanager:GetSecretValue");
    assert.deepEqual(secrets.Resource, [`arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:a-github-app-AbCdEf`], "the consumer never reads the webhook secret");
    const serve = policy.Statement.find((s: any) => s.Sid === "ServePoolQueues");
    assert.deepEqual(serve.Resource, [`arn:aws:sqs:${REGION}:${ACCOUNT}:strata-test-gpu-base-builder.fifo`, `arn:aws:sqs:${REGION}:${ACCOUNT}:strata-test-gpu-big.fifo`]);
});

test("the webhook may only enqueue into the fleet's queues; it launches nothing and reads no JIT config", async () => {
    const policy = policyOf(await mocks.findCreatedResource("aws:iam/rolePolicy:RolePolicy", "a-webhook"));
    const send = policy.Statement.find((s: any) => s.Action === "sqs:SendMessage");
    assert.deepEqual(send.Resource, [
        `arn:aws:sqs:${REGION}:${ACCOUNT}:strata-test-gpu-base-builder.fifo`, `arn:aws:sqs:${REGION}:${ACCOUNT}:strata-test-gpu-big.fifo`, `arn:aws:sqs:${REGION}:${ACCOUNT}:strata-test-fleet-wake`,
    ]);
    const jit = policy.Statement.filter((s: any) => [s.Resource].flat().some((r: string) => r.includes("/strata/test/jit")));
    assert.deepEqual(jit.flatMap((s: any) => [s.Action].flat()), ["ssm:DeleteParameter"], "deleting is the claim of a cancelled job's config; never reading it");
});

test("scale-up queues: one FIFO queue per pool, no DLQ; the consumer is serialised and woken by the webhook, instance ends and a schedule", async () => {
    const q = await mocks.findCreatedResource("aws:sqs/queue:Queue", "a-gpu-base-builder-jobs");
    assert.equal(q.inputs.fifoQueue, true);
    assert.equal(q.inputs.contentBasedDeduplication, false);
    assert.ok(q.inputs.messageRetentionSeconds > 24 * 3600, "longer than GitHub's 24 h queue limit");
    assert.equal(q.inputs.redrivePolicy, undefined);
    const consumer = await mocks.findCreatedResource("aws:lambda/function:Function", "a-scaleup");
    assert.equal(consumer.inputs.reservedConcurrentExecutions, 1);
    const esm = await mocks.findCreatedResource("aws:lambda/eventSourceMapping:EventSourceMapping", "a-wake");
    assert.equal(esm.inputs.functionName, `arn:aws:lambda:${REGION}:${ACCOUNT}:function:a-scaleup`);
    const ended = await mocks.findCreatedResource("aws:cloudwatch/eventRule:EventRule", "a-instance-ended");
    assert.deepEqual(JSON.parse(ended.inputs.eventPattern).detail.state, ["shutting-down", "terminated"]);
    assert.equal((await mocks.findCreatedResource("aws:cloudwatch/eventTarget:EventTarget", "a-instance-ended")).inputs.arn, consumer.state.arn ?? `arn:aws:lambda:${REGION}:${ACCOUNT}:function:a-scaleup`);
    assert.equal((await mocks.findCreatedResource("aws:cloudwatch/eventRule:EventRule", "a-scaleup-schedule")).inputs.scheduleExpression, "rate(1 minute)");
    const spot = await mocks.findCreatedResource("aws:cloudwatch/eventRule:EventRule", "a-spot-interruption");
    assert.deepEqual(JSON.parse(spot.inputs.eventPattern)["detail-type"], ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]);
    assert.equal((await mocks.findCreatedResource("aws:cloudwatch/eventTarget:EventTarget", "a-spot-interruption")).inputs.arn, `arn:aws:lambda:${REGION}:${ACCOUNT}:function:a-interruption`);
});

test("the runner group admits only the served repositories, no public ones, and only the base-build workflow on the default branch", async () => {
    const groups = await all("github:index/actionsRunnerGroup:ActionsRunnerGroup");
    assert.deepEqual(groups.map((g) => g.name), ["a-runners"], "repository-level runners (fleet B) have no group");
    const g = groups[0]!;
    assert.equal(g.inputs.visibility, "selected");
    assert.deepEqual(g.inputs.selectedRepositoryIds, [101, 102]);
    assert.equal(g.inputs.allowsPublicRepositories, false);
    assert.equal(g.inputs.restrictedToWorkflows, true);
    assert.deepEqual(g.inputs.selectedWorkflows, ["acme/models/.github/workflows/strata-build-bases.yml@refs/heads/main", "acme/app/.github/workflows/strata-build-bases.yml@refs/heads/main"]);
    const envA = await envOf("a-scaleup");
    assert.equal(envA.STRATA_RUNNER_GROUP_ID, "42", "JIT runners register into it");
    assert.deepEqual(JSON.parse(envA.STRATA_REPOSITORIES!), ["acme/models", "acme/app"]);
    assert.deepEqual(JSON.parse((await envOf("b-scaleup")).STRATA_REPOSITORIES!), ["acme/models"], "defaults to the repositories passed in (strata:github.repositories)");
});

test("the housekeeping Lambda cannot launch, pass roles or read the webhook secret", async () => {
    const policy = policyOf(await mocks.findCreatedResource("aws:iam/rolePolicy:RolePolicy", "a-housekeeping"));
    const actions = policy.Statement.flatMap((s: any) => [s.Action].flat());
    for (const forbidden of ["ec2:RunInstances", "iam:PassRole", "ec2:CreateTags", "ssm:GetParameter"]) {
        assert.ok(!actions.includes(forbidden), forbidden);
    }
    const jitWrites = policy.Statement.filter((s: any) => [s.Resource].flat().some((r: string) => r.includes("/strata/test/jit")) && [s.Action].flat().includes("ssm:PutParameter"));
    assert.deepEqual(jitWrites, [], "housekeeping writes only state documents, never JIT configs");
    const secrets = policy.Statement.find((s: any) => s.Action === "secretsmanager:GetSecretValue");
    assert.deepEqual(secrets.Resource, [`arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:a-github-app-AbCdEf`]);
});

test("the instance role has no registry access and reads only its own JIT config", async () => {
    const policy = policyOf(await mocks.findCreatedResource("aws:iam/rolePolicy:RolePolicy", "a-instance"));
    assert.deepEqual(policy.Statement.flatMap((s: any) => [s.Action].flat()).filter((a: string) => a.startsWith("ecr:")), []);
    const jit = policy.Statement.find((s: any) => [s.Action].flat().includes("ssm:GetParameter"));
    assert.equal(jit.Resource, `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/test/jit/*`);
    assert.deepEqual(jit.Condition, { StringEquals: { [`ssm:resourceTag/${INSTANCE_ARN_TAG_KEY}`]: "${ec2:SourceInstanceARN}" } });
    assert.ok(!policy.Statement.some((s: any) => [s.Action].flat().includes("ec2:TerminateInstances")), "instances end by shutting down");
    const logs = policy.Statement.find((s: any) => [s.Action].flat().includes("logs:PutLogEvents"));
    assert.equal(logs.Resource, `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/strata/test/fleet/runners:*`);
    const trust = JSON.parse((await mocks.findCreatedResource("aws:iam/role:Role", "a-instance")).inputs.assumeRolePolicy);
    assert.deepEqual(trust.Statement[0].Principal, { Service: "ec2.amazonaws.com" });
});

test("the webhook secret and the App key reach the engine only as secrets", async () => {
    const versions = await all("aws:secretsmanager/secretVersion:SecretVersion");
    assert.equal(versions.length, 4);
    for (const v of versions) {
        assert.ok(isSecret(v.inputs.secretString), `${v.name} secretString is a secret`);
    }
    const app = await mocks.findCreatedResource("aws:secretsmanager/secretVersion:SecretVersion", "a-github-app");
    assert.deepEqual(JSON.parse(unwrapSecret<string>(app.inputs.secretString)), { appId: "123456", installationId: "987654", privateKey: PRIVATE_KEY });
    const hook = await mocks.findCreatedResource("aws:secretsmanager/secretVersion:SecretVersion", "a-webhook-secret");
    assert.equal(unwrapSecret(hook.inputs.secretString), WEBHOOK_SECRET);
    for (const type of ["github:index/organizationWebhook:OrganizationWebhook", "github:index/repositoryWebhook:RepositoryWebhook"]) {
        for (const hook of await all(type)) {
            assert.ok(isSecret(hook.inputs.configuration), `${hook.name} configuration (holding the secret) is a secret`);
        }
    }

    // Nowhere in plain text: no resource input outside a secret wrapper contains either value.
    const keyLine = "MOCKprivateKEYmaterial";
    for (const r of mocks.resources) {
        if (r.type === "random:index/randomPassword:RandomPassword") {
            continue;
        }
        for (const s of plainStrings(r.inputs)) {
            assert.ok(!s.includes(WEBHOOK_SECRET), `${r.type} ${r.name} carries the webhook secret in plain text`);
            assert.ok(!s.includes(keyLine), `${r.type} ${r.name} carries the App key in plain text`);
        }
    }
    for (const fn of await all("aws:lambda/function:Function")) {
        for (const [k, v] of Object.entries(fn.inputs.environment.variables)) {
            assert.equal(typeof v, "string", `${fn.name} ${k} is a plain (non-secret) value`);
        }
    }
});

test("STRATA_POOLS carries each pool's cap, Spot choice, template and subnets", async () => {
    const env = await envOf("a-webhook");
    const pools = JSON.parse(env.STRATA_POOLS!);
    assert.deepEqual(pools.map((p: any) => p.name), ["gpu-base-builder", "gpu-big"]);
    const [base, big] = pools;
    assert.equal(base.maxRunners, 3);
    assert.equal(base.spot, true);
    assert.equal(base.maxRuntimeMinutes, 360);
    assert.deepEqual(base.instanceTypes, ["g6.4xlarge", "g5.4xlarge"]);
    assert.deepEqual(base.labels, ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"]);
    assert.equal(base.launchTemplateId, outputsA.lts["gpu-base-builder"]);
    assert.equal(base.launchTemplateVersion, "3");
    assert.deepEqual(base.subnetIds, outputsA.subnets);
    assert.equal(big.maxRunners, 1);
    assert.equal(big.spot, false);
    assert.equal(big.maxRuntimeMinutes, 120);
    const envB = await envOf("b-webhook");
    assert.deepEqual(JSON.parse(envB.STRATA_POOLS!)[0].subnetIds, ["subnet-0aaa", "subnet-0bbb"]);
});

test("both Lambdas get the scaler environment; the repo variable only when configured", async () => {
    for (const name of ["a-webhook", "a-scaleup", "a-interruption", "a-housekeeping"]) {
        const env = await envOf(name);
        assert.match(env.STRATA_WEBHOOK_SECRET_ARN!, /^arn:aws:secretsmanager:.*a-webhook-secret/);
        assert.match(env.STRATA_GITHUB_APP_SECRET_ARN!, /^arn:aws:secretsmanager:.*a-github-app/);
        assert.equal(env.STRATA_GITHUB_API_URL, "https://api.github.com");
        assert.equal(env.STRATA_RUNNER_OWNER, "acme");
        assert.equal(env.STRATA_RUNNER_GROUP_ID, "42");
        assert.equal(env.STRATA_STATE_PREFIX, "/strata/test/state/");
        assert.equal(env.STRATA_SPOT_BREAKER_FAILURES, "3");
        assert.equal(env.STRATA_PARAM_PREFIX, "/strata/test/jit/");
        assert.equal(env.STRATA_TAG_KEY, "strata:pool");
        assert.equal(env.STRATA_INSTANCE_ARN_TAG_KEY, INSTANCE_ARN_TAG_KEY);
        assert.ok(!("STRATA_RUNNER_REPO" in env));
    }
    const envB = await envOf("b-webhook");
    assert.equal(envB.STRATA_RUNNER_REPO, "models", "the scaler takes the name without the owner");
    assert.equal(envB.STRATA_RUNNER_GROUP_ID, "1", "repository runners: the id the JIT API wants");
});

test("Lambdas: Node 20 on arm64, 256 MiB, bundled by the injected bundler; webhook behind a public function URL", async () => {
    const fns = await all("aws:lambda/function:Function");
    assert.equal(fns.length, 8);
    for (const fn of fns) {
        assert.equal(fn.inputs.runtime, "nodejs22.x");
        assert.deepEqual(fn.inputs.architectures, ["arm64"]);
        assert.equal(fn.inputs.memorySize, 256);
        assert.equal(fn.inputs.handler, "index.handler");
        assert.equal(fn.inputs.reservedConcurrentExecutions, /scaleup/.test(fn.name) ? 1 : undefined, "only the launcher is serialised");
        assert.match(fn.inputs.loggingConfig.logGroup, /^\/strata\/test\/fleet\/(webhook|scaleup|interruption|housekeeping)$/);
    }
    assert.equal((await mocks.findCreatedResource("aws:lambda/function:Function", "a-webhook")).inputs.timeout, 30);
    assert.ok(bundled.some((e) => e.endsWith("/scaler/webhook.ts")));
    for (const entry of ["housekeeping", "scaleup", "interruption"]) assert.ok(bundled.some((e) => e.endsWith(`/scaler/${entry}.ts`)));
    const url = await mocks.findCreatedResource("aws:lambda/functionUrl:FunctionUrl", "a-webhook");
    assert.equal(url.inputs.authorizationType, "NONE");
    assert.equal(url.inputs.functionName, "a-webhook");
    for (const lg of await all("aws:cloudwatch/logGroup:LogGroup")) {
        assert.equal(lg.inputs.retentionInDays, 30, `${lg.name} has a retention`);
    }
});

test("housekeeping runs every 5 minutes", async () => {
    const rule = await mocks.findCreatedResource("aws:cloudwatch/eventRule:EventRule", "a-housekeeping");
    assert.equal(rule.inputs.scheduleExpression, "rate(5 minutes)");
    const target = await mocks.findCreatedResource("aws:cloudwatch/eventTarget:EventTarget", "a-housekeeping");
    assert.equal(target.inputs.arn, `arn:aws:lambda:${REGION}:${ACCOUNT}:function:a-housekeeping`);
    const perm = await mocks.findCreatedResource("aws:lambda/permission:Permission", "a-housekeeping");
    assert.equal(perm.inputs.principal, "events.amazonaws.com");
    assert.equal(perm.inputs.sourceArn, `arn:aws:events:${REGION}:${ACCOUNT}:rule/a-housekeeping`);
});

test("GitHub webhook: organization-wide, or on the repository when runnerRepo is set", async () => {
    const org = await mocks.findCreatedResource("github:index/organizationWebhook:OrganizationWebhook", "a-workflow-job");
    assert.deepEqual(org.inputs.events, ["workflow_job"]);
    // The whole configuration travels as a secret because its `secret` field is one.
    const orgConfig = unwrapSecret<Record<string, unknown>>(org.inputs.configuration);
    assert.equal(orgConfig.contentType, "json");
    assert.equal(orgConfig.url, FUNCTION_URL);
    assert.equal(orgConfig.insecureSsl, false);
    assert.equal(orgConfig.secret, WEBHOOK_SECRET);
    const repo = await mocks.findCreatedResource("github:index/repositoryWebhook:RepositoryWebhook", "b-workflow-job");
    assert.equal(repo.inputs.repository, "models");
    assert.deepEqual(repo.inputs.events, ["workflow_job"]);
    assert.equal(unwrapSecret<Record<string, unknown>>(repo.inputs.configuration).secret, WEBHOOK_SECRET);
    assert.equal((await all("github:index/organizationWebhook:OrganizationWebhook")).length, 1);
    assert.equal((await all("github:index/repositoryWebhook:RepositoryWebhook")).length, 1);
});

test("own VPC: private runner subnets behind one NAT in the zones offering the GPU types, free S3 endpoint", async () => {
    const vpcs = await all("aws:ec2/vpc:Vpc");
    assert.deepEqual(vpcs.map((v) => v.name), ["a-network-vpc"], "fleet B uses the given VPC");
    const runners = await mocks.findAll("aws:ec2/subnet:Subnet", /^a-network-runners-/);
    assert.equal(runners.length, 2);
    assert.deepEqual(runners.map((s) => s.inputs.availabilityZone).sort(), ["us-west-2c", "us-west-2d"]);
    for (const s of runners) {
        assert.equal(s.inputs.mapPublicIpOnLaunch, false);
    }
    assert.deepEqual([...outputsA.subnets].sort(), runners.map((s) => s.id).sort());
    assert.equal((await all("aws:ec2/natGateway:NatGateway")).length, 1);
    const privateRoutes = await mocks.findCreatedResource("aws:ec2/routeTable:RouteTable", "a-network-private");
    assert.equal(privateRoutes.inputs.routes[0].natGatewayId, "a-network-nat-id");
    const s3 = await mocks.findCreatedResource("aws:ec2/vpcEndpoint:VpcEndpoint", "a-network-s3");
    assert.equal(s3.inputs.serviceName, `com.amazonaws.${REGION}.s3`);
    assert.equal(s3.inputs.vpcEndpointType, "Gateway");
});

test("every taggable resource carries strata:stack", async () => {
    const taggable = [
        "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/natGateway:NatGateway",
        "aws:ec2/eip:Eip", "aws:ec2/routeTable:RouteTable", "aws:ec2/vpcEndpoint:VpcEndpoint", "aws:ec2/securityGroup:SecurityGroup",
        "aws:ec2/launchTemplate:LaunchTemplate", "aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile",
        "aws:cloudwatch/logGroup:LogGroup", "aws:secretsmanager/secret:Secret", "aws:lambda/function:Function", "aws:cloudwatch/eventRule:EventRule",
        "aws:sqs/queue:Queue",
    ];
    await mocks.settled();
    const awsTypes = new Set(mocks.resources.filter((r) => r.type.startsWith("aws:")).map((r) => r.type));
    const untagged = [...awsTypes].filter((t) => !taggable.includes(t)).sort();
    // Types without a tags argument; a new resource type must be added to one of the two lists.
    assert.deepEqual(untagged, [
        "aws:cloudwatch/eventTarget:EventTarget", "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:iam/rolePolicy:RolePolicy",
        "aws:lambda/eventSourceMapping:EventSourceMapping", "aws:lambda/functionUrl:FunctionUrl", "aws:lambda/permission:Permission", "aws:secretsmanager/secretVersion:SecretVersion",
    ]);
    for (const r of mocks.resources.filter((x) => taggable.includes(x.type))) {
        assert.equal(r.inputs.tags?.["strata:stack"], "test", `${r.type} ${r.name}`);
    }
});

const scalerConfigModule = new URL("../scaler/config.ts", import.meta.url);
test("the Lambda environment parses with the scaler's own config parser", { skip: !existsSync(scalerConfigModule) && "scaler/config.ts not written yet" }, async () => {
    const { parseConfig } = await import(scalerConfigModule.href);
    const a = parseConfig(await envOf("a-webhook"));
    assert.deepEqual(a.pools.map((p: any) => [p.name, p.maxRunners, p.spot]), [["gpu-base-builder", 3, true], ["gpu-big", 1, false]]);
    assert.equal(a.paramPrefix, "/strata/test/jit/");
    assert.equal(a.tagKey, "strata:pool");
    assert.equal(a.pools[0].queueUrl, `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/strata-test-gpu-base-builder.fifo`);
    assert.equal(a.runnerGroupId, 42);
    const b = parseConfig(await envOf("b-housekeeping"));
    assert.equal(b.repo, "models");
    assert.equal(b.runnerGroupId, 1);
});

test("the mocks are strict: an unknown invoke fails", async () => {
    await assert.rejects(pulumi.runtime.invoke("aws:ec2/getSubnets:getSubnets", {}));
    assert.ok(mocks.calls.some((c) => c.token === "aws:ec2/getSubnets:getSubnets"));
});
