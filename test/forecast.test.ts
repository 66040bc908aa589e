import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { forecastOptions, historyFromFile } from "../cli/forecast.ts";
import { MatrixError } from "../matrix/errors.ts";
import {
  appendRecord,
  cachedStepCount,
  forecastHeadline,
  forecastRebuild,
  formatDuration,
  formatForecast,
  LEDGER_MAX,
  money,
  priceTable,
  type BuildRecord,
  type RebuildInput,
} from "../matrix/forecast.ts";
import { cleanup, project } from "./helpers.ts";

const H = 3600;
const ampereArgs = { TORCH_CHANNEL: "stable", TORCH_VER: "2.7.1+cu126", TORCH_CUDA_SUFFIX: "cu126", CUDA_ARCH_LIST: "8.0;8.6", FA_VER: "2.7.4.post1", MAX_JOBS: "4" };

function record(base: string, wallSeconds: number, over: Partial<BuildRecord> = {}): BuildRecord {
  return {
    base,
    tag: `${base}-000000000000`,
    dockerfile: "docker/Dockerfile.base",
    target: "base",
    args: ampereArgs,
    startedAt: `2026-11-0${(wallSeconds % 9) + 1}T00:00:00.000Z`,
    wallSeconds,
    instanceType: "g6.4xlarge",
    lifecycle: "spot",
    cachedSteps: 3,
    totalSteps: 9,
    outcome: "passed",
    ...over,
  };
}

const rebuild = (name: string, args: Record<string, string> = ampereArgs, dockerfile = "docker/Dockerfile.base"): RebuildInput => ({ name, tag: `${name}-111111111111`, dockerfile, target: "base", args });
const OPTS = { instanceTypes: ["g6.4xlarge", "g5.4xlarge"], prices: priceTable() };

/** The README's example: ampere has history, ada is like ampere but for another arch list, turing has none. */
export function exampleForecast() {
  const history = [record("ampere", 2 * H + 10 * 60, { startedAt: "2026-11-01T00:00:00Z" }), record("ampere", 2 * H + 25 * 60, { startedAt: "2026-11-08T00:00:00Z" }), record("ampere", 1 * H + 58 * 60, { startedAt: "2026-11-15T00:00:00Z" })];
  return forecastRebuild([rebuild("ampere"), rebuild("ada", { ...ampereArgs, CUDA_ARCH_LIST: "8.9" }), rebuild("turing", { TORCH_VER: "2.7.1+cu126", CUDA_ARCH_LIST: "7.5" }, "docker/Dockerfile.turing")], history, OPTS);
}

describe("forecastRebuild", () => {
  test("a base with history: the median of its builds, with the basis and the price's source", () => {
    const f = exampleForecast();
    const ampere = f.bases.find((b) => b.name === "ampere")!;
    assert.equal(ampere.seconds, 2 * H + 10 * 60);
    assert.equal(ampere.basis, "from 3 earlier builds of this base (median 2 h 10 min on g6.4xlarge)");
    assert.equal(ampere.basisKind, "history");
    assert.equal(ampere.priceBasis, "g6.4xlarge at $0.60/h spot, $1.3/h on-demand, 1 GPU (default price table)");
    assert.ok(Math.abs(ampere.cost!.onDemand - (13 / 6) * 1.3232) < 1e-9);
  });

  test("a base without history of its own: a similar base's, naming what differs", () => {
    const ada = exampleForecast().bases.find((b) => b.name === "ada")!;
    assert.equal(ada.basisKind, "similar");
    assert.equal(ada.from, "ampere");
    assert.equal(ada.basis, "from base `ampere` (same Dockerfile and torch, different CUDA_ARCH_LIST): median of 3 builds, 2 h 10 min on g6.4xlarge");
  });

  test("no history: no number at all, and the total says what it leaves out", () => {
    const f = exampleForecast();
    const turing = f.bases.find((b) => b.name === "turing")!;
    assert.deepEqual([turing.seconds, turing.cost, turing.gpuHours, turing.basis], [null, null, null, "no history"]);
    assert.deepEqual(f.total.noHistory, ["turing"]);
    assert.equal(forecastHeadline(f), "this change rebuilds 3 bases: about 4.3 GPU-hours (4 h 20 min of builds), about $2.6 on spot ($5.7 on-demand); not counted, no history: turing");
    const text = formatForecast(f).join("\n");
    assert.match(text, /^ {2}turing: no history$/m);
    assert.doesNotMatch(text.split("turing:")[1], /\$/, "no price without a duration");
  });

  test("fully cached builds are left out of the median unless nothing else is recorded", () => {
    const full = { cachedSteps: 9, totalSteps: 9 };
    const f = forecastRebuild([rebuild("ampere")], [record("ampere", 7200), record("ampere", 60, full), record("ampere", 50, full)], OPTS);
    assert.equal(f.bases[0].seconds, 7200);
    assert.match(f.bases[0].basis, /^from 1 earlier build of this base \(median 2 h on g6\.4xlarge\); 2 fully cached builds left out$/);
    const only = forecastRebuild([rebuild("ampere")], [record("ampere", 60, full)], OPTS);
    assert.equal(only.bases[0].seconds, 60);
    assert.match(only.bases[0].basis, /every recorded build was fully cached, so this may be low/);
  });

  test("the median is of the last 5 builds", () => {
    const hist = [1, 2, 3, 4, 5, 6, 7].map((h, i) => record("ampere", h * H, { startedAt: `2026-11-1${i}T00:00:00Z` }));
    assert.equal(forecastRebuild([rebuild("ampere")], hist, OPTS).bases[0].seconds, 5 * H);
  });

  test("a similar base needs the same Dockerfile and target; the one with fewest differing args wins", () => {
    const other = forecastRebuild([rebuild("x", ampereArgs, "docker/Dockerfile.other")], [record("ampere", H)], OPTS);
    assert.equal(other.bases[0].basisKind, "none");
    const hist = [record("far", H, { args: { ...ampereArgs, TORCH_VER: "2.8.0+cu126", CUDA_ARCH_LIST: "9.0" } }), record("near", 2 * H, { args: { ...ampereArgs, CUDA_ARCH_LIST: "9.0" } })];
    const f = forecastRebuild([rebuild("new", { ...ampereArgs, CUDA_ARCH_LIST: "8.9" })], hist, OPTS);
    assert.equal(f.bases[0].from, "near");
    const torchDiffers = forecastRebuild([rebuild("new", { ...ampereArgs, TORCH_VER: "2.9.0+cu126" })], [hist[0]], OPTS);
    assert.match(torchDiffers.bases[0].basis, /\(same Dockerfile, different CUDA_ARCH_LIST, TORCH_VER\)/);
  });

  test("prices: the configured table overrides a default; the type the builds ran on is used; unpriced types say so", () => {
    const prices = priceTable({ "g6.4xlarge": { onDemand: 2, spot: 1, gpus: 1 } });
    const f = forecastRebuild([rebuild("ampere")], [record("ampere", H)], { ...OPTS, prices });
    assert.deepEqual(f.bases[0].cost, { spot: 1, onDemand: 2 });
    assert.match(f.bases[0].priceBasis, /\(strata:forecast\.prices\)$/);
    const g5 = forecastRebuild([rebuild("ampere")], [record("ampere", H, { instanceType: "g5.4xlarge" })], OPTS);
    assert.equal(g5.bases[0].instanceType, "g5.4xlarge");
    assert.equal(g5.bases[0].cost!.onDemand, 1.624);
    const big = forecastRebuild([rebuild("ampere")], [record("ampere", H, { instanceType: null })], { instanceTypes: ["g6.12xlarge"], prices: priceTable() });
    assert.equal(big.bases[0].gpuHours, 4, "4 GPUs for an hour");
    const none = forecastRebuild([rebuild("ampere")], [record("ampere", H)], { instanceTypes: ["x9.mega"], prices: priceTable() });
    assert.equal(none.bases[0].cost, null);
    assert.equal(none.bases[0].seconds, H, "the duration still has its basis");
    assert.match(none.bases[0].priceBasis, /no price for the pool's instance types \(x9\.mega\): add them to strata:forecast\.prices/);
  });
});

describe("records and text", () => {
  test("cached and total steps from a plain BuildKit log, of one bake target or a single build", () => {
    const multi = [
      "#1 [internal] load local bake definitions",
      "#5 [base-alpha internal] load build context",
      "#7 [base-alpha builder 1/4] FROM docker.io/strata-test/tiny:1",
      "#8 [base-alpha builder 2/4] WORKDIR /work",
      "#8 CACHED",
      "#9 [base-alpha builder 3/4] COPY src/ ./src/",
      "#9 CACHED",
      "#10 [base-beta builder 3/4] COPY src/ ./src/",
      "#10 CACHED",
      "#11 [base-alpha builder 4/4] RUN test -n \"$GREETING\"",
      "#11 0.104 compiling",
      "#11 DONE 3.2s",
      "#12 [base-alpha base 2/2] COPY --from=builder /work/out/ /opt/strata/",
      "#12 DONE 0.0s",
    ].join("\n");
    assert.deepEqual(cachedStepCount(multi, "base-alpha"), { cachedSteps: 2, totalSteps: 4 });
    const single = "#4 [builder 2/4] WORKDIR /work\n#4 CACHED\n#6 [builder 4/4] RUN make\n#6 DONE 1s\n";
    assert.deepEqual(cachedStepCount(single, "base-alpha"), { cachedSteps: 1, totalSteps: 2 });
    assert.equal(cachedStepCount("no steps here"), null);
  });

  test("a ledger keeps the last records only", () => {
    let ledger = null;
    for (let i = 0; i < LEDGER_MAX + 5; i++) ledger = appendRecord(ledger, record("ampere", i + 1));
    assert.equal(ledger!.records.length, LEDGER_MAX);
    assert.equal(ledger!.records[0].wallSeconds, 6);
  });

  test("durations and money read as people write them", () => {
    assert.deepEqual([formatDuration(45), formatDuration(12 * 60), formatDuration(2 * H + 10 * 60), formatDuration(3 * H)], ["45 s", "12 min", "2 h 10 min", "3 h"]);
    assert.deepEqual([money(0.0008), money(0.42), money(9.14), money(27.4)], ["$0.00080", "$0.42", "$9.1", "$27"]);
  });
});

describe("CLI inputs", () => {
  test("the price table comes from strata:forecast; the base pool's instance types from strata:fleet and runner labels", () => {
    const o = forecastOptions("x", {
      "strata:forecast": { prices: { "g6.12xlarge": { onDemand: 4, spot: 2, gpus: 4 } } },
      "strata:fleet": { enabled: true, runnerOwner: "acme", pools: [{ name: "small" }, { name: "big", instanceTypes: ["g6.12xlarge"], labels: ["self-hosted", "strata-big"] }] },
      "strata:github": { repositories: ["acme/x"], runnerLabels: ["self-hosted", "strata-big"] },
    });
    assert.deepEqual(o.instanceTypes, ["g6.12xlarge"]);
    assert.equal(o.prices.source["g6.12xlarge"], "config");
    assert.deepEqual(forecastOptions("x", {}).instanceTypes, ["g6.4xlarge", "g5.4xlarge"]);
    assert.throws(
      () => forecastOptions("x", { "strata:forecast": { prices: { "g6.4xlarge": { onDemand: -1, spot: 1, gpus: 1 } } } }),
      (e: unknown) => e instanceof MatrixError && /Pulumi\.x\.yaml.*strata:forecast\.prices\.g6\.4xlarge\.onDemand/.test(`${e.problems[0].file} ${e.problems[0].message}`),
    );
  });

  test("--history FILE: a ledger or a list; anything else names the file and the field", () => {
    const dir = project({ "l.json": JSON.stringify({ version: 1, base: "ampere", records: [record("ampere", 60)] }), "bad.json": JSON.stringify([{ base: "x" }]) });
    try {
      assert.equal(historyFromFile(join(dir, "l.json")).length, 1);
      assert.throws(() => historyFromFile(join(dir, "bad.json")), (e: unknown) => e instanceof MatrixError && /not a build history/.test(e.problems[0].message));
    } finally {
      cleanup(dir);
    }
  });

  test("strata impact prints the forecast of a change from --history, with its basis", () => {
    const dir = project({});
    try {
      const git = (...a: string[]) => spawnSync("git", ["-c", "user.name=t", "-c", "user.email=t@example.invalid", ...a], { cwd: dir, encoding: "utf8" });
      spawnSync("cp", ["-r", join(import.meta.dirname, "..", "docker"), join(import.meta.dirname, "..", "app"), join(import.meta.dirname, "..", "strata.yaml"), dir]);
      git("init", "-q", "-b", "main");
      git("add", "-A");
      git("commit", "-qm", "init");
      writeFileSync(join(dir, "app/requirements.txt"), "numpy\n", { flag: "a" });
      writeFileSync(join(dir, "history.json"), JSON.stringify([{ version: 1, base: "ampere", records: [record("ampere", 2 * H + 10 * 60)] }]));
      const r = spawnSync(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.mjs"), "impact", "--base", "HEAD", "--history", "history.json"], { cwd: dir, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      // turing and hopper share ampere's Dockerfile: they are forecast from ampere's build, saying so.
      assert.match(r.stdout, /^Forecast: this change rebuilds 3 bases: about 6\.5 GPU-hours \(6 h 30 min of builds\), about \$3\.9 on spot \(\$8\.6 on-demand\)$/m);
      assert.match(r.stdout, /^ {2}turing: about 2 h 10 min, .*\n {4}from base `ampere` \(same Dockerfile and torch, different CUDA_ARCH_LIST, CUDA_VERSION, FA_VER\): median of 1 build, 2 h 10 min on g6\.4xlarge$/m);
      assert.match(r.stdout, /^ {2}ampere: about 2 h 10 min, about \$1\.3 on spot \/ \$2\.9 on-demand\n {4}from 1 earlier build of this base \(median 2 h 10 min on g6\.4xlarge\)$/m);
      const none = spawnSync(process.execPath, [join(import.meta.dirname, "..", "bin", "strata.mjs"), "impact", "--base", "HEAD"], { cwd: dir, encoding: "utf8" });
      assert.match(none.stdout, /^Forecast: this change rebuilds 3 bases: no history to forecast from$/m);
      assert.match(none.stdout, /no build records read: pass --history-registry/);
    } finally {
      cleanup(dir);
    }
  });
});
