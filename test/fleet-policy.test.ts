import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as pulumi from "@pulumi/pulumi";
import {
    findWildcardWrites, housekeepingPolicy, instancePolicy, interruptionPolicy, isReadOnlyAction, scaleUpPolicy, webhookPolicy,
    type LaunchPolicyInputs, type PolicyDocument,
} from "../components/fleet/policy.ts";
import { pickAvailabilityZones } from "../components/fleet/network.ts";
import { esbuildBundle, scalerEntry } from "../components/fleet/bundle.ts";
import { parseFleetConfig, type FleetConfig } from "../components/fleet/config.ts";
import { poolDescriptor, userDataVars } from "../components/fleet/index.ts";

const scope = { partition: "aws", region: "eu-west-1", accountId: "111122223333" };
const doc = (...Statement: PolicyDocument["Statement"]): PolicyDocument => ({ Version: "2012-10-17", Statement });

test("isReadOnlyAction", () => {
    for (const a of ["ec2:DescribeInstances", "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:BatchCheckLayerAvailability", "ssm:GetParametersByPath", "ec2:Describe*"]) {
        assert.ok(isReadOnlyAction(a), a);
    }
    for (const a of ["ec2:RunInstances", "ssm:PutParameter", "ecr:PutImage", "s3:*", "*", "ec2:*", "iam:PassRole"]) {
        assert.ok(!isReadOnlyAction(a), a);
    }
});

test("findWildcardWrites flags write actions on wildcard resources", () => {
    const flagged = (d: PolicyDocument) => findWildcardWrites(JSON.stringify(d)).map((f) => f.reason);
    assert.deepEqual(flagged(doc({ Effect: "Allow", Action: "ec2:TerminateInstances", Resource: "*" })), ["Resource is *"]);
    assert.deepEqual(flagged(doc({ Effect: "Allow", Action: ["s3:PutObject"], Resource: ["arn:aws:s3:::*"] })), ["resource part is *"]);
    assert.deepEqual(flagged(doc({ Effect: "Allow", Action: "ssm:PutParameter", Resource: "arn:aws:ssm:*:*:parameter/x" })), ["wildcard partition, service, region or account"]);
    assert.deepEqual(flagged(doc({ Effect: "Allow", Action: "ec2:TerminateInstances", Resource: "arn:aws:ec2:eu-west-1:111122223333:instance/*" })), ["type-wide resource without a condition"]);
    assert.deepEqual(flagged(doc({ Effect: "Allow", NotAction: "iam:*", Resource: "*" })), ["NotAction/NotResource allow"]);
    assert.deepEqual(flagged(doc({ Effect: "Allow", Action: "*", Resource: "*" })), ["Resource is *"]);
    // Each action is reported.
    assert.equal(findWildcardWrites(doc({ Effect: "Allow", Action: ["ecr:PutImage", "ecr:UploadLayerPart", "ecr:BatchGetImage"], Resource: "*" })).length, 2);
});

test("findWildcardWrites accepts reads, scoped writes, conditioned creates, denies and trust policies", () => {
    assert.deepEqual(findWildcardWrites(doc(
        { Effect: "Allow", Action: ["ec2:DescribeInstances", "ecr:GetAuthorizationToken"], Resource: "*" },
        { Effect: "Allow", Action: "ecr:PutImage", Resource: "arn:aws:ecr:eu-west-1:111122223333:repository/strata/cuda" },
        { Effect: "Allow", Action: "ssm:PutParameter", Resource: "arn:aws:ssm:eu-west-1:111122223333:parameter/strata/dev/jit/*" },
        { Effect: "Allow", Action: "ec2:CreateTags", Resource: "arn:aws:ec2:eu-west-1:111122223333:instance/*", Condition: { StringEquals: { "ec2:CreateAction": "RunInstances" } } },
        { Effect: "Allow", Action: "logs:PutLogEvents", Resource: "arn:aws:logs:eu-west-1:111122223333:log-group:/strata/x:*" },
        { Effect: "Allow", Action: "ssmmessages:OpenDataChannel", Resource: "*" },
        { Effect: "Deny", Action: "*", Resource: "*" },
        { Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" },
    )), []);
});

const launch: LaunchPolicyInputs = {
    ...scope, poolNames: ["gpu"], paramPrefix: "/strata/dev/jit/", statePrefix: "/strata/dev/state/",
    queueArns: ["arn:aws:sqs:eu-west-1:111122223333:strata-dev-gpu.fifo"], wakeQueueArn: "arn:aws:sqs:eu-west-1:111122223333:strata-dev-fleet-wake",
    logGroupArn: "arn:aws:logs:eu-west-1:111122223333:log-group:/strata/dev/fleet/webhook",
    secretArns: ["arn:aws:secretsmanager:eu-west-1:111122223333:secret:a", "arn:aws:secretsmanager:eu-west-1:111122223333:secret:b"],
    launchTemplateIds: ["lt-0abc"], subnetIds: ["subnet-1"], securityGroupIds: ["sg-1"], imageIds: ["ami-1"],
    instanceRoleArn: "arn:aws:iam::111122223333:role/runner", spot: true,
};

test("the fleet's policies pass the wildcard check", () => {
    assert.deepEqual(findWildcardWrites(webhookPolicy(launch)), []);
    assert.deepEqual(findWildcardWrites(scaleUpPolicy(launch)), []);
    assert.deepEqual(findWildcardWrites(scaleUpPolicy({ ...launch, spot: false })), []);
    assert.deepEqual(findWildcardWrites(interruptionPolicy(launch)), []);
    assert.deepEqual(findWildcardWrites(housekeepingPolicy(launch)), []);
    assert.deepEqual(findWildcardWrites(instancePolicy({ ...scope, paramPrefix: "/strata/dev/jit/", logGroupArn: launch.logGroupArn })), []);
});

test("only the scale-up consumer launches; no scaler role reads a JIT config", () => {
    const actions = (d: { Statement: { Action?: string | string[]; Resource?: string | string[] }[] }) => d.Statement.flatMap((s) => [s.Action ?? []].flat());
    for (const d of [webhookPolicy(launch), interruptionPolicy(launch), housekeepingPolicy(launch)]) {
        assert.ok(!actions(d).includes("ec2:RunInstances") && !actions(d).includes("iam:PassRole"));
    }
    for (const d of [webhookPolicy(launch), scaleUpPolicy(launch), interruptionPolicy(launch), housekeepingPolicy(launch)]) {
        const onJit = d.Statement.filter((s) => [s.Resource ?? []].flat().some((r) => r.includes("/strata/dev/jit")));
        assert.ok(!onJit.some((s) => [s.Action ?? []].flat().includes("ssm:GetParameter")), "ssm:GetParameter on a JIT config");
    }
    const send = webhookPolicy(launch).Statement.find((s) => s.Action === "sqs:SendMessage")!;
    assert.deepEqual(send.Resource, [...launch.queueArns, launch.wakeQueueArn]);
});

test("scale-up policy: RunInstances conditioned on the templates; Spot SLR only with Spot pools", () => {
    const p = scaleUpPolicy(launch);
    const run = p.Statement.find((s) => s.Action === "ec2:RunInstances")!;
    assert.deepEqual(run.Condition, { ArnEquals: { "ec2:LaunchTemplate": ["arn:aws:ec2:eu-west-1:111122223333:launch-template/lt-0abc"] } });
    assert.ok(p.Statement.some((s) => s.Action === "ec2:RunInstances" && s.Resource === "arn:aws:ec2:eu-west-1:111122223333:spot-instances-request/*"));
    assert.ok(p.Statement.some((s) => s.Action === "iam:CreateServiceLinkedRole"));
    const onDemand = scaleUpPolicy({ ...launch, spot: false });
    assert.ok(!onDemand.Statement.some((s) => s.Action === "iam:CreateServiceLinkedRole"));
    assert.ok(!JSON.stringify(onDemand.Statement.filter((s) => s.Action === "ec2:RunInstances")).includes("spot-instances-request"));
});

test("instance policy: no registry access at all, only the runner's own needs", () => {
    const p = instancePolicy({ ...scope, paramPrefix: "/strata/dev/jit/", logGroupArn: "arn:aws:logs:eu-west-1:111122223333:log-group:g" });
    assert.deepEqual(p.Statement.map((s) => s.Sid), ["ReadAndDeleteOwnJitConfig", "WriteFleetLogs", "SessionManager"]);
    assert.ok(!p.Statement.some((s) => [s.Action].flat().some((a) => a!.startsWith("ecr:"))));
});

test("pickAvailabilityZones prefers zones offering the most wanted types, then tops up", () => {
    const offers = [
        { location: "z-b", instanceType: "g6" }, { location: "z-c", instanceType: "g6" }, { location: "z-c", instanceType: "g5" },
        { location: "z-d", instanceType: "g5" }, { location: "z-d", instanceType: "g6" },
    ];
    assert.deepEqual(pickAvailabilityZones(offers, ["z-a", "z-b", "z-c", "z-d"], 2), ["z-c", "z-d"]);
    assert.deepEqual(pickAvailabilityZones([{ location: "z-c", instanceType: "g6" }], ["z-a", "z-b", "z-c"], 2), ["z-c", "z-a"]);
    assert.deepEqual(pickAvailabilityZones([], ["z-a", "z-b"], 2), ["z-a", "z-b"]);
    assert.deepEqual(pickAvailabilityZones([{ location: "z-x", instanceType: "g6" }], ["z-a", "z-b"], 2), ["z-a", "z-b"], "unavailable zones are ignored");
    assert.throws(() => pickAvailabilityZones([], ["z-a"], 2), /need 2 availability zones/);
});

test("poolDescriptor and userDataVars", () => {
    const c = parseFleetConfig({ enabled: true, runnerOwner: "acme" }, "strata:fleet") as FleetConfig;
    const pool = c.pools[0]!;
    assert.deepEqual(poolDescriptor(pool, "lt-1", 4, ["subnet-1"], "https://sqs/q.fifo"), {
        name: "gpu-base-builder", labels: pool.labels, launchTemplateId: "lt-1", launchTemplateVersion: "4",
        instanceTypes: ["g6.4xlarge", "g5.4xlarge"], subnetIds: ["subnet-1"], maxRunners: 4, maxRuntimeMinutes: 360, spot: true, queueUrl: "https://sqs/q.fifo",
    });
    const vars = userDataVars({ pool, region: "eu-west-1", paramPrefix: "/strata/dev/jit/", runnerVersion: "2.329.0" });
    assert.deepEqual(vars, { REGION: "eu-west-1", PARAM_PREFIX: "/strata/dev/jit/", MAX_RUNTIME_MINUTES: "360", RUNNER_VERSION: "2.329.0", RUNNER_USER: "runner" });
});

const userdataModule = new URL("../scaler/userdata.ts", import.meta.url);
test("userDataVars are exactly what scaler/userdata.ts renders", { skip: !existsSync(userdataModule) && "scaler/userdata.ts not written yet" }, async () => {
    const { renderUserData } = await import(userdataModule.href);
    const c = parseFleetConfig({ enabled: true, runnerOwner: "acme" }, "strata:fleet") as FleetConfig;
    const script: string = renderUserData(userDataVars({ pool: c.pools[0]!, region: "eu-west-1", paramPrefix: "/strata/dev/jit/", runnerVersion: c.runnerVersion }));
    assert.match(script, /^#!/);
    assert.ok(script.includes("/strata/dev/jit/"));
    assert.doesNotMatch(script, /\{\{[A-Z_]+\}\}/);
});

test("esbuildBundle bundles an entry and its imports into one ESM index.mjs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-bundle-"));
    writeFileSync(join(dir, "dep.ts"), "export const greeting: string = 'hello from dep';\n");
    writeFileSync(join(dir, "entry.ts"), "import { greeting } from './dep.ts';\nexport const handler = async () => ({ statusCode: 200, body: greeting });\n");
    const archive = await esbuildBundle(join(dir, "entry.ts"));
    const assets = await archive.assets;
    assert.deepEqual(Object.keys(assets), ["index.mjs"]);
    const text = await (assets["index.mjs"] as pulumi.asset.StringAsset).text;
    assert.match(text, /hello from dep/);
    assert.match(text, /export\s*\{[^}]*handler/);
    assert.doesNotMatch(text, /from ['"]\.\/dep/);
    // Load it the way Lambda does: a file named index.mjs.
    writeFileSync(join(dir, "index.mjs"), text);
    const mod = await import(pathToFileURL(join(dir, "index.mjs")).href);
    assert.deepEqual(await mod.handler(), { statusCode: 200, body: "hello from dep" });
    await assert.rejects(esbuildBundle(join(dir, "missing.ts")));
    assert.match(scalerEntry("webhook"), /\/scaler\/webhook\.ts$/);
});
