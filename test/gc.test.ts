import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compareVersions, selectGarbage, versionReader, type BaseEntry, type GcPolicy, type RuntimeEntry } from "../cli/gc.ts";
import { loadMatrix } from "../matrix/load.ts";
import { REPO } from "./helpers.ts";

const NOW = new Date("2026-12-01T00:00:00Z");
const daysAgo = (n: number) => new Date(NOW.getTime() - n * 86_400_000);
const h = (c: string) => c.repeat(12);

function base(tag: string, layers: string[], age: number | null, digest = `sha256:${tag}`): BaseEntry {
  return { tag, digest, layerSets: [layers], blobs: [...layers.map((l) => ({ digest: l, size: 100 })), { digest: `cfg-${tag}`, size: 10 }], created: age === null ? null : daysAgo(age) };
}
const runtime = (tag: string, baseLayers: string[]): RuntimeEntry => ({ tag, layerSets: [[...baseLayers, `app-${tag}`]] });

const policy = (over: Partial<GcPolicy> = {}): GcPolicy => ({
  current: new Set([`alpha-${h("c")}`]),
  currentNames: new Set(["alpha", "beta"]),
  inUse: new Set(),
  keepReleases: 2,
  minAgeDays: 30,
  prMaxAgeDays: 14,
  now: NOW,
  versionOf: (t) => /-(v[\d.]+|main)$/.exec(t)?.[1] ?? null,
  ...over,
});

describe("selectGarbage", () => {
  const bases = [
    base(`alpha-${h("a")}`, ["os", "a1"], 90), // v1 only
    base(`alpha-${h("b")}`, ["os", "a2"], 60), // v2
    base(`alpha-${h("c")}`, ["os", "a3"], 40), // current (v3)
    base(`beta-${h("a")}`, ["os", "b1"], 90), // shared by v1, v2, v3
    base(`gone-${h("a")}`, ["os", "g1"], 100), // nothing
  ];
  const runtimes = [
    runtime("app-alpha-v1", ["os", "a1"]),
    runtime("app-beta-v1", ["os", "b1"]),
    runtime("app-alpha-v2", ["os", "a2"]),
    runtime("app-beta-v2", ["os", "b1"]),
    runtime("app-alpha-v10", ["os", "a3"]),
    runtime("app-beta-v10", ["os", "b1"]),
  ];

  test("keeps current, released-and-kept and shared bases; deletes the rest; counts only blobs nothing else holds", () => {
    const r = selectGarbage(bases, runtimes, ["cache-base-alpha", "cache-base-gone", "cache-base-gone-linux-arm64", "buildrecord-gone"], policy());
    const d = Object.fromEntries(r.decisions.map((x) => [x.tag, x]));
    assert.deepEqual(r.releases, ["v10", "v2"], "v10 is newer than v2 (natural order)");
    assert.deepEqual(r.decisions.filter((x) => x.action === "delete").map((x) => x.tag).sort(), [`alpha-${h("a")}`, `gone-${h("a")}`]);
    assert.equal(d[`alpha-${h("b")}`].why, "used by release v2 (runtimes:app-alpha-v2)");
    assert.match(d[`beta-${h("a")}`].why, /^used by release v10/);
    // a1 is still held by the v1 runtime image (runtimes are not deleted): only alpha-a's config, gone's layer and config.
    assert.equal(r.freeBytes, 10 + 100 + 10);
    assert.deepEqual(r.cacheTags, ["cache-base-gone", "cache-base-gone-linux-arm64"]);
  });

  test("keeping more releases keeps their bases", () => {
    const r = selectGarbage(bases, runtimes, [], policy({ keepReleases: 3 }));
    assert.deepEqual(r.decisions.filter((x) => x.action === "delete").map((x) => x.tag), [`gone-${h("a")}`]);
  });

  test("open pull requests, age, unknown age and pr-* tags keep a base", () => {
    const extra = [base(`young-${h("a")}`, ["y"], 3), base(`nodate-${h("a")}`, ["n"], null), base("pr-12-alpha", ["p"], 5), base("pr-3-alpha", ["q"], 20)];
    const r = selectGarbage([...bases, ...extra], runtimes, [], policy({ inUse: new Set([`gone-${h("a")}`]) }));
    const d = Object.fromEntries(r.decisions.map((x) => [x.tag, x]));
    assert.match(d[`gone-${h("a")}`].why, /open pull request/);
    assert.equal(d[`young-${h("a")}`].why, "3 day(s) old, younger than 30");
    assert.match(d[`nodate-${h("a")}`].why, /age unknown/);
    assert.match(d["pr-12-alpha"].why, /pull-request tag younger than 14 days/);
    assert.equal(d["pr-3-alpha"].action, "keep", "20 days: past the pull-request limit but younger than --min-age-days");
    const old = selectGarbage([base("pr-3-alpha", ["q"], 45)], [], [], policy());
    assert.equal(old.decisions[0].action, "delete");
  });

  test("a tag that shares its image with a kept tag is not deleted (deleting the manifest would remove both)", () => {
    const twin = base(`renamed-${h("c")}`, ["zz"], 90, `sha256:alpha-${h("c")}`);
    const r = selectGarbage([...bases, twin], runtimes, [], policy());
    assert.match(r.decisions.find((x) => x.tag === twin.tag)!.why, new RegExp(`same image as a kept tag \\(alpha-${h("c")}\\)`));
  });

  test("branch builds always count; runtime tags no template matches keep their bases", () => {
    const r = selectGarbage(bases, [...runtimes, runtime("app-alpha-main", ["os", "a1"]), runtime("legacy-build-7", ["os", "g1"])], [], policy({ keepReleases: 1, versionOf: (t) => /-(v[\d.]+|main)$/.exec(t)?.[1] ?? null }));
    assert.deepEqual(r.releases, ["main", "v10"]);
    assert.equal(r.decisions.filter((x) => x.action === "delete").length, 1, "only alpha-b (v2, not kept)");
    assert.deepEqual(r.unattributed, ["legacy-build-7"]);
  });
});

describe("release versions", () => {
  test("natural order", () => {
    assert.deepEqual(["v0.10.0", "v0.9.1", "v0.9.10", "v1.0.0"].sort(compareVersions), ["v0.9.1", "v0.9.10", "v0.10.0", "v1.0.0"]);
  });

  test("read from runtime tags with the matrix's tag templates", () => {
    const versionOf = versionReader(loadMatrix(`${REPO}/strata.yaml`));
    assert.equal(versionOf("ampere-v0.1.1"), "v0.1.1");
    assert.equal(versionOf("hopper-main"), "main");
    assert.equal(versionOf("someone-else-v1"), null);
  });
});
