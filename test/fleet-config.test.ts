import { test } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_AMI_PARAMETER, labelSetKey, parseFleetConfig, type FleetConfig } from "../components/fleet/config.ts";

function enabled(raw: unknown): FleetConfig {
    const c = parseFleetConfig(raw, "strata:fleet");
    assert.equal(c.enabled, true);
    return c as FleetConfig;
}

function problems(raw: unknown): string {
    try {
        parseFleetConfig(raw, "strata:fleet");
    } catch (e) {
        assert.ok(e instanceof Error);
        assert.match(e.message, /^Invalid stack config strata:fleet \(fix it in Pulumi\.<stack>\.yaml\):/);
        return e.message;
    }
    assert.fail(`expected ${JSON.stringify(raw)} to be rejected`);
}

test("absent or disabled config yields a disabled fleet", () => {
    assert.deepEqual(parseFleetConfig(undefined, "strata:fleet"), { enabled: false });
    assert.deepEqual(parseFleetConfig({}, "strata:fleet"), { enabled: false });
    assert.deepEqual(parseFleetConfig({ enabled: false, runnerOwner: "acme" }, "strata:fleet"), { enabled: false });
});

test("defaults: one gpu-base-builder pool, the DLAMI parameter, Spot, 200 GiB gp3", () => {
    const c = enabled({ enabled: true, runnerOwner: "acme" });
    assert.equal(c.runnerOwner, "acme");
    assert.equal(c.amiParameter, DEFAULT_AMI_PARAMETER);
    assert.equal(c.amiParameter, "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id");
    assert.match(c.runnerVersion, /^2\.\d+\.\d+$/);
    assert.equal(c.egress, "nat");
    assert.equal(c.vpcId, undefined);
    assert.deepEqual(c.pools, [{
        name: "gpu-base-builder",
        instanceTypes: ["g6.4xlarge", "g5.4xlarge"],
        labels: ["self-hosted", "linux", "x64", "gpu", "strata-base-builder"],
        rootVolumeGiB: 200,
        rootVolumeIops: 6000,
        rootVolumeThroughput: 500,
        maxRunners: 4,
        maxRuntimeMinutes: 360,
        spot: true,
        metadataHopLimit: 1,
    }]);
});

test("a pool given by name only gets every default; explicit values win", () => {
    const c = enabled({ enabled: true, runnerOwner: "acme", pools: [{ name: "a" + "b" }, { name: "big", labels: ["self-hosted", "big"], spot: false, maxRunners: 2, amiId: "ami-0123456789abcdef0" }] });
    assert.equal(c.pools[0]!.rootVolumeGiB, 200);
    assert.equal(c.pools[1]!.spot, false);
    assert.equal(c.pools[1]!.maxRunners, 2);
    assert.equal(c.pools[1]!.amiId, "ami-0123456789abcdef0");
});

test("duplicate pool names are rejected with the key path", () => {
    const msg = problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu" }, { name: "gpu", labels: ["self-hosted", "other"] }] });
    assert.match(msg, /strata:fleet\.pools\[1\]\.name: duplicates pools\[0\]\.name "gpu"/);
});

test("labels without self-hosted are rejected", () => {
    const msg = problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu", labels: ["linux", "gpu"] }] });
    assert.match(msg, /strata:fleet\.pools\[0\]\.labels: must include "self-hosted"/);
});

test("two pools with the same label set (any order or case) are rejected", () => {
    const msg = problems({
        enabled: true, runnerOwner: "acme",
        pools: [{ name: "one", labels: ["self-hosted", "gpu", "x"] }, { name: "two", labels: ["GPU", "x", "self-hosted"] }],
    });
    assert.match(msg, /strata:fleet\.pools\[1\]\.labels: has the same label set as pools\[0\]/);
    assert.equal(labelSetKey(["b", "A", "a"]), "a,b");
});

test("field limits name the field and the fix", () => {
    const msg = problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu", rootVolumeGiB: 50, maxRunners: 0, instanceTypes: [] }] });
    assert.match(msg, /strata:fleet\.pools\[0\]\.rootVolumeGiB: must be at least 100/);
    assert.match(msg, /strata:fleet\.pools\[0\]\.maxRunners: must be at least 1/);
    assert.match(msg, /strata:fleet\.pools\[0\]\.instanceTypes: must list at least one instance type/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu", rootVolumeIops: 3000, rootVolumeThroughput: 1000 }] }),
        /pools\[0\]\.rootVolumeThroughput: gp3 allows at most 0\.25 MiB\/s per IOPS: raise rootVolumeIops to 4000/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu", metadataHopLimit: 3 }] }), /pools\[0\]\.metadataHopLimit/);
});

test("enabled needs runnerOwner; runnerRepo must be owner/name of that owner", () => {
    assert.match(problems({ enabled: true }), /strata:fleet\.runnerOwner: is required when enabled/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", runnerRepo: "models" }), /strata:fleet\.runnerRepo: must be "owner\/name"/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", runnerRepo: "other/models" }), /strata:fleet\.runnerRepo: must belong to runnerOwner "acme"/);
    assert.equal(enabled({ enabled: true, runnerOwner: "acme", runnerRepo: "acme/models" }).runnerRepo, "acme/models");
});

test("vpcId and subnetIds go together", () => {
    assert.match(problems({ enabled: true, runnerOwner: "acme", vpcId: "vpc-0123abcd" }), /strata:fleet\.subnetIds: vpcId and subnetIds go together/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", subnetIds: ["subnet-0abc"] }), /strata:fleet\.vpcId: vpcId and subnetIds go together/);
    assert.deepEqual(enabled({ enabled: true, runnerOwner: "acme", vpcId: "vpc-0123abcd", subnetIds: ["subnet-0abc"] }).subnetIds, ["subnet-0abc"]);
});

test("unknown keys (typos) and wrong types are rejected", () => {
    assert.match(problems({ enabled: true, runnerOwner: "acme", pool: [] }), /strata:fleet: unknown key\(s\) "pool": remove them or fix the spelling/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", pools: [{ name: "gpu", spott: true }] }), /strata:fleet\.pools\[0\]: unknown key\(s\) "spott"/);
    assert.match(problems({ enabled: "yes" }), /strata:fleet\.enabled:/);
    assert.match(problems({ enabled: true, runnerOwner: "acme", pools: [] }), /strata:fleet\.pools: must define at least one pool/);
});

test("the where argument names the key in messages", () => {
    assert.throws(() => parseFleetConfig({ enabled: true }, "myproj:fleet"), /myproj:fleet\.runnerOwner/);
});

test("runnerGroupId is refused (the fleet declares its group); fleet repositories must belong to runnerOwner", () => {
    assert.throws(() => parseFleetConfig({ enabled: true, runnerOwner: "acme", runnerGroupId: 7 }, "strata:fleet"), /strata:fleet\.runnerGroupId: is no longer used/);
    assert.throws(() => parseFleetConfig({ enabled: true, runnerOwner: "acme", repositories: ["evil/models"] }, "strata:fleet"), /strata:fleet\.repositories\[0\]: must belong to runnerOwner "acme"/);
    const c = parseFleetConfig({ enabled: true, runnerOwner: "acme", repositories: ["acme/models"] }, "strata:fleet");
    assert.ok(c.enabled && c.spotBreaker.failures === 3 && c.spotBreaker.windowMinutes === 30 && c.spotBreaker.onDemandMinutes === 60);
});
