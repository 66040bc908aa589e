// Signatures: the generated sign and verify steps, run with bash exactly as generated, against the real cosign 2.5
// (Debian trixie, .ci/engine-deps.sh), a loopback distribution registry and a loopback sigstore (the Fulcio CA, CT
// log, Rekor and RFC 3161 timestamp authority of @sigstore/mock, plus GitHub Actions' OIDC token endpoint:
// test/support/sigstore.ts). The cosign
// shim on PATH (test/support/cosign-shim) only adds the loopback Fulcio/Rekor URLs; the Pulumi CLI, which is not
// installed here, is a stub answering `pulumi stack output` (test/support/pulumi-stub).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { RegistryClient, type Manifest } from "../cli/registry.ts";
import { baseSignerIdentity, parseGitHubConfig } from "../components/github-trust.ts";
import { loadMatrix } from "../matrix/load.ts";
import { ACTIONS, COSIGN_VERSION, generateWorkflows, verifyBasesScript, WORKFLOW_FILES, type WorkflowOptions } from "../workflows/generate.ts";
import { COSIGN_BIN, REPO_ROOT, run, signingToolsAvailable, startRegistry, type LoopbackRegistry } from "./engine/harness.ts";
import { startSigstore, startTimestampAuthority, type ActionsIdentity, type LoopbackSigstore } from "./support/sigstore.ts";

const plan = loadMatrix(join(REPO_ROOT, "strata.yaml"));
const OPTS: WorkflowOptions = { stack: "prod", matrix: "strata.yaml" };
const REPOSITORY = "acme/strata";

interface Step {
  name?: string;
  id?: string;
  uses?: string;
  with?: Record<string, string>;
  env?: Record<string, string>;
  run?: string;
  "continue-on-error"?: boolean;
}
interface Job {
  permissions?: Record<string, string>;
  steps: Step[];
}

function jobs(files: Record<string, string>, file: string): Record<string, Job> {
  return (parse(files[file]!) as { jobs: Record<string, Job> }).jobs;
}
const stepNamed = (job: Job, prefix: string): Step => {
  const hit = job.steps.find((s) => s.name?.startsWith(prefix));
  assert.ok(hit, `no step '${prefix}…' in [${job.steps.map((s) => s.name).join(" | ")}]`);
  return hit;
};
const indexOf = (job: Job, prefix: string) => job.steps.indexOf(stepNamed(job, prefix));

const SIGN = "Sign the pushed digests";
const VERIFY = "Verify the bases' signatures";

/** The identities under test: the base workflow on main, and what must never pass for it. */
const ID = {
  baseMain: { repository: REPOSITORY, workflow: WORKFLOW_FILES.bases, ref: "refs/heads/main", event: "push" },
  pullRequest: { repository: REPOSITORY, workflow: WORKFLOW_FILES.bases, ref: "refs/pull/7/merge", event: "pull_request" },
  runtimesWorkflow: { repository: REPOSITORY, workflow: WORKFLOW_FILES.runtimes, ref: "refs/heads/main", event: "push" },
  otherRepository: { repository: "evil/strata", workflow: WORKFLOW_FILES.bases, ref: "refs/heads/main", event: "push" },
} satisfies Record<string, ActionsIdentity>;

describe("generated signing steps (structure)", () => {
  const files = generateWorkflows(plan, OPTS);
  const sharded = generateWorkflows(plan, { ...OPTS, runtimeShardSize: 1 });

  test("each base job signs after its pulumi up, with id-token: write and the pinned cosign-installer", () => {
    const job = jobs(files, WORKFLOW_FILES.bases)["build-1"]!;
    assert.equal(job.permissions?.["id-token"], "write");
    const sign = indexOf(job, SIGN);
    assert.ok(sign > indexOf(job, "pulumi up"), "signing follows the push");
    assert.deepEqual(job.steps[sign - 1], { name: "Install cosign", uses: ACTIONS.cosignInstaller, with: { "cosign-release": COSIGN_VERSION } });
    assert.equal(COSIGN_VERSION, "v2.5.0", "the release the tests run (Debian trixie's cosign 2.5.0)");
    // The publish job only rewrites a variable: it pushes nothing, so it signs nothing.
    assert.ok(!jobs(files, WORKFLOW_FILES.bases).publish!.steps.some((s) => s.name?.startsWith(SIGN)));
  });

  test("runtime jobs verify their base before the build, and sign what the build pushed", () => {
    for (const [label, set] of [["per runtime", files], ["per runtime shard", sharded]] as const) {
      const job = jobs(set, WORKFLOW_FILES.runtimes)["build-1"]!;
      assert.equal(job.permissions?.["id-token"], "write", label);
      const build = label === "per runtime" ? indexOf(job, "Build FROM the published base") : indexOf(job, "pulumi up");
      const verify = indexOf(job, VERIFY);
      assert.ok(verify < build, `${label}: verify (step ${verify}) runs before the build (step ${build})`);
      assert.ok(job.steps.slice(0, verify).some((s) => s.uses === ACTIONS.cosignInstaller), `${label}: cosign installed before verifying`);
      assert.ok(job.steps.slice(0, verify).some((s) => s.name === "Log in to ECR"), `${label}: logged in before reading signatures`);
      assert.ok(indexOf(job, SIGN) > build, `${label}: signing follows the push`);
      // Fail closed: nothing about signing may be skipped or tolerated.
      for (const s of job.steps.filter((s) => s.name?.startsWith(VERIFY) || s.name?.startsWith(SIGN) || s.uses === ACTIONS.cosignInstaller)) {
        assert.equal(s["continue-on-error"], undefined, `${label}: ${s.name}`);
        assert.equal((s as { if?: string }).if, undefined, `${label}: ${s.name}`);
      }
      const v = stepNamed(job, VERIFY);
      assert.match(v.run!, /^set -euo pipefail\n/);
      assert.equal(v.env?.BASE_SIGNER, baseSignerIdentity("${{ github.repository }}", "main"));
    }
  });

  test("the steps are the exported scripts; the identity is the base workflow on the configured default branch", () => {
    const trunk = generateWorkflows(plan, { ...OPTS, defaultBranch: "trunk" });
    const job = jobs(trunk, WORKFLOW_FILES.runtimes)["build-1"]!;
    assert.equal(stepNamed(job, VERIFY).run, verifyBasesScript({ transparencyLog: true, timestampUrl: "https://timestamp.sigstore.dev/api/v1/timestamp" }));
    assert.equal(stepNamed(job, VERIFY).env?.BASE_SIGNER, "https://github.com/${{ github.repository }}/.github/workflows/strata-build-bases.yml@refs/heads/trunk");
    assert.match(stepNamed(jobs(trunk, WORKFLOW_FILES.bases)["build-1"]!, SIGN).run!, /cosign sign --yes --recursive --tlog-upload=true "\$image"/);
  });

  test("strata:github.signing.transparencyLog false: no Rekor upload, a timestamp authority instead, verified as such", () => {
    const gh = parseGitHubConfig({ repositories: [REPOSITORY], signing: { transparencyLog: false } });
    assert.deepEqual(gh.signing, { transparencyLog: false, timestampUrl: "https://timestamp.sigstore.dev/api/v1/timestamp" });
    assert.deepEqual(parseGitHubConfig({ repositories: [REPOSITORY] }).signing, { transparencyLog: true, timestampUrl: "https://timestamp.sigstore.dev/api/v1/timestamp" });
    const priv = generateWorkflows(plan, { ...OPTS, signing: gh.signing });
    const sign = stepNamed(jobs(priv, WORKFLOW_FILES.bases)["build-1"]!, SIGN).run!;
    assert.match(sign, /cosign sign --yes --recursive --tlog-upload=false --timestamp-server-url 'https:\/\/timestamp\.sigstore\.dev\/api\/v1\/timestamp' "\$image"/);
    const verify = stepNamed(jobs(priv, WORKFLOW_FILES.runtimes)["build-1"]!, VERIFY).run!;
    assert.match(verify, /--insecure-ignore-tlog=true --use-signed-timestamps --timestamp-certificate-chain tsa-chain\.pem/);
    assert.throws(() => parseGitHubConfig({ repositories: [REPOSITORY], signing: { timestampUrl: "http://tsa.example" } }), /strata:github\.signing\.timestampUrl/);
    assert.throws(() => parseGitHubConfig({ repositories: [REPOSITORY], signing: { tlog: false } }), /strata:github\.signing: unknown key\(s\) 'tlog'/);
  });
});

const tools = signingToolsAvailable();

describe("signing and verifying with the real cosign against a loopback registry and sigstore", { skip: tools.ok ? false : tools.why }, () => {
  let registry: LoopbackRegistry;
  let sigstore: LoopbackSigstore;
  let client: RegistryClient;
  let dir: string;
  const files = generateWorkflows(plan, OPTS);
  const sharded = generateWorkflows(plan, { ...OPTS, runtimeShardSize: 1 });
  const baseJob = jobs(files, WORKFLOW_FILES.bases)["build-1"]!;
  const runtimeJob = jobs(files, WORKFLOW_FILES.runtimes)["build-1"]!;
  const shardJob = jobs(sharded, WORKFLOW_FILES.runtimes)["build-1"]!;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "strata-signing-"));
    registry = await startRegistry();
    sigstore = await startSigstore(dir);
    client = new RegistryClient(registry.address, undefined);
  });
  after(async () => {
    await sigstore?.close();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A one-platform OCI index (what a base is) under `repo:tag`, with fresh content. */
  async function pushImage(repo: string, tag: string): Promise<{ index: string; child: string; ref: string }> {
    const layer = await client.putBlob(repo, randomBytes(64), "application/vnd.oci.image.layer.v1.tar");
    const config = await client.putBlob(repo, Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [layer.digest] } })), "application/vnd.oci.image.config.v1+json");
    const manifest = { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers: [layer] };
    const body = Buffer.from(JSON.stringify(manifest));
    const child = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    await client.putManifest(repo, child, manifest as Manifest & { mediaType: string });
    const index = await client.putManifest(repo, tag, {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{ mediaType: manifest.mediaType, digest: child, size: body.length, platform: { os: "linux", architecture: "amd64" } }],
    } as Manifest & { mediaType: string });
    return { index, child, ref: `${registry.address}/${repo}:${tag}@${index}` };
  }

  /** An attestation-like artifact (what the attest step lists in ATTESTATIONS_FILE). */
  async function pushArtifact(repo: string): Promise<string> {
    const config = await client.putBlob(repo, Buffer.from("{}"), "application/vnd.oci.empty.v1+json");
    const layer = await client.putBlob(repo, Buffer.from(JSON.stringify({ spdxVersion: "SPDX-2.3", name: randomBytes(4).toString("hex") })), "application/spdx+json");
    const manifest = { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/spdx+json", config, layers: [layer] };
    const body = Buffer.from(JSON.stringify(manifest));
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    await client.putManifest(repo, digest, manifest as Manifest & { mediaType: string });
    return `${registry.address}/${repo}@${digest}`;
  }

  const sigTag = (digest: string) => `${digest.replace(":", "-")}.sig`;

  /** `${{ … }}` expressions of a step's env, as GitHub would expand them for this run. */
  function expand(env: Record<string, string> | undefined, context: Record<string, string>): Record<string, string> {
    return Object.fromEntries(
      Object.entries(env ?? {}).map(([k, v]) => [
        k,
        v.replace(/\$\{\{\s*([^}]+?)\s*\}\}/g, (_, expr: string) => {
          assert.ok(expr in context, `no value for \${{ ${expr} }} in step env ${k}`);
          return context[expr]!;
        }),
      ]),
    );
  }

  /**
   * Runs one generated step's script with bash, in a fresh work directory, as the job `id` (its OIDC token comes
   * from the loopback sigstore). `withCosign: false` leaves cosign off PATH.
   */
  async function runStep(step: Step, opts: { id?: ActionsIdentity; env?: Record<string, string>; context?: Record<string, string>; withCosign?: boolean; stackOutputs?: Record<string, unknown>; attestations?: string[]; runnerTemp?: string }) {
    const work = await mkdtemp(join(dir, "job-"));
    const outputs = join(work, "stack-outputs");
    const runnerTemp = opts.runnerTemp ?? join(work, "runner-temp");
    await run("mkdir", ["-p", outputs, runnerTemp, join(work, "home")]);
    for (const [name, value] of Object.entries(opts.stackOutputs ?? {})) await writeFile(join(outputs, `${name}.json`), JSON.stringify(value));
    if (opts.attestations) await writeFile(join(runnerTemp, "strata-attestations.txt"), opts.attestations.join("\n") + "\n");
    await writeFile(join(work, "step.sh"), step.run!);
    const path = [...(opts.withCosign === false ? [] : [join(REPO_ROOT, "test/support/cosign-shim")]), join(REPO_ROOT, "test/support/pulumi-stub"), "/usr/bin", "/bin"].join(":");
    const env: NodeJS.ProcessEnv = {
      PATH: path,
      HOME: join(work, "home"),
      TUF_ROOT: join(work, "home", "tuf"),
      RUNNER_TEMP: runnerTemp,
      GITHUB_STEP_SUMMARY: join(work, "summary.md"),
      GITHUB_OUTPUT: join(work, "output.txt"),
      STRATA_STACK: "prod",
      STRATA_MATRIX: "strata.yaml",
      STRATA_COSIGN: COSIGN_BIN,
      STRATA_COSIGN_LOG: join(work, "cosign.log"),
      STRATA_SIGSTORE_URL: sigstore.url,
      STRATA_TEST_STACK_OUTPUTS: outputs,
      ...sigstore.trustEnv,
      ...(opts.id ? sigstore.jobEnv(opts.id) : {}),
      ...expand(step.env, { "github.repository": REPOSITORY, ...opts.context }),
      ...opts.env,
    };
    const r = await run("/usr/bin/bash", [join(work, "step.sh")], { cwd: work, env, timeoutMs: 120_000 });
    const read = (f: string) => readFile(join(work, f), "utf8").catch(() => "");
    return { ...r, out: r.stdout + r.stderr, summary: await read("summary.md"), cosignCalls: (await read("cosign.log")).trim().split("\n").filter(Boolean) };
  }

  /** Signs `ref` (a base's `repo:tag@digest`) with the generated base sign step, as `id`. */
  async function signBase(ref: string, id: ActionsIdentity = ID.baseMain) {
    const r = await runStep(stepNamed(baseJob, SIGN), { id, env: { STRATA_BASE: "turing" }, stackOutputs: { "prod-base-turing.baseRefs": { turing: ref } } });
    assert.equal(r.code, 0, r.out);
    return r;
  }

  /** Runs the per-runtime job's verify step for base `turing` at `ref`. */
  const verifyBase = (ref: string, opts: { withCosign?: boolean } = {}) =>
    runStep(stepNamed(runtimeJob, VERIFY), { ...opts, env: { BASE_REFS: JSON.stringify({ turing: ref }) }, context: { "steps.base.outputs.bases": '["turing"]' } });

  test("the base job signs every digest it pushed (index and platform manifest, attestations), by digest, and the base identity verifies", async () => {
    const base = await pushImage("strata/bases", "turing-111111111111");
    const attestation = await pushArtifact("strata/bases");
    const r = await runStep(stepNamed(baseJob, SIGN), {
      id: ID.baseMain,
      env: { STRATA_BASE: "turing" },
      stackOutputs: { "prod-base-turing.baseRefs": { turing: base.ref } },
      // The base itself named again, by digest only: signed once.
      attestations: [attestation, base.ref.replace(/:turing-\d+@/, "@")],
    });
    assert.equal(r.code, 0, r.out);
    // By digest only, never by tag; keyless (no --key); Rekor upload on.
    assert.equal(r.cosignCalls.length, 2, r.cosignCalls.join("\n"));
    for (const call of r.cosignCalls) assert.match(call, /^sign --yes --recursive --tlog-upload=true 127\.0\.0\.1:\d+\/strata\/bases@sha256:[0-9a-f]{64}$/);
    const tags = await client.tags("strata/bases");
    for (const d of [base.index, base.child, attestation.split("@")[1]!]) assert.ok(tags.includes(sigTag(d)), `${sigTag(d)} pushed (tags: ${tags.join(", ")})`);
    assert.ok(sigstore.requests.includes("POST /api/v1/signingCert") && sigstore.requests.includes("POST /api/v1/log/entries"), sigstore.requests.join(", "));
    assert.match(r.summary, /### Signed \(2, keyless, Rekor\)/);

    const v = await verifyBase(base.ref);
    assert.equal(v.code, 0, v.out);
    assert.match(v.out, /Base `turing` \(127\.0\.0\.1:\d+\/strata\/bases@sha256:[0-9a-f]{64}\): signature by https:\/\/github\.com\/acme\/strata\/\.github\/workflows\/strata-build-bases\.yml@refs\/heads\/main verified/);
    assert.deepEqual(v.cosignCalls, [`verify --certificate-identity ${baseSignerIdentity(REPOSITORY, "main")} --certificate-oidc-issuer https://token.actions.githubusercontent.com ${base.ref.replace(/:turing-\d+@/, "@")}`]);
  });

  test("the runtime job signs the digest its bake pushed; the runtime shard job the refs its stack outputs", async () => {
    const rt = await pushImage("strata/runtimes", "turing-main");
    const metadata = { "runtime-turing": { "containerimage.digest": rt.index, "image.name": `${registry.address}/strata/runtimes:turing-main,${registry.address}/strata/runtimes:turing-abc1234` } };
    const step = stepNamed(runtimeJob, SIGN);
    const r = await runStep({ ...step, run: `printf '%s' '${JSON.stringify(metadata)}' > "$RUNNER_TEMP/strata-bake-metadata.json"\n${step.run}` }, { id: ID.runtimesWorkflow });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(r.cosignCalls, [`sign --yes --recursive --tlog-upload=true ${registry.address}/strata/runtimes@${rt.index}`]);

    const shardRt = await pushImage("strata/runtimes", "ampere-main");
    const s = await runStep(stepNamed(shardJob, SIGN), {
      id: ID.runtimesWorkflow,
      env: { STRATA_SHARD: "runtimes-1" },
      stackOutputs: { "prod-runtimes-1.runtimes": { ampere: { base: "ampere", tags: ["ampere-main"], ref: shardRt.ref } } },
    });
    assert.equal(s.code, 0, s.out);
    assert.ok((await client.tags("strata/runtimes")).includes(sigTag(shardRt.index)));
  });

  test("signing refuses a ref without a digest and a job with nothing to sign", async () => {
    const base = await pushImage("strata/bases", "turing-222222222222");
    const tagOnly = await runStep(stepNamed(baseJob, SIGN), {
      id: ID.baseMain,
      env: { STRATA_BASE: "turing" },
      stackOutputs: { "prod-base-turing.baseRefs": { turing: base.ref } },
      attestations: [`${registry.address}/strata/bases:latest`],
    });
    assert.equal(tagOnly.code, 1, tagOnly.out);
    assert.match(tagOnly.out, /::error title=strata signing::pushed image '127\.0\.0\.1:\d+\/strata\/bases:latest' is not pinned by a sha256 digest/);
    const empty = await runStep(stepNamed(baseJob, SIGN), { id: ID.baseMain, env: { STRATA_BASE: "turing" }, stackOutputs: { "prod-base-turing.baseRefs": {} } });
    assert.equal(empty.code, 1, empty.out);
    assert.match(empty.out, /nothing to sign/);
    const noCosign = await runStep(stepNamed(baseJob, SIGN), { id: ID.baseMain, withCosign: false, env: { STRATA_BASE: "turing" }, stackOutputs: { "prod-base-turing.baseRefs": { turing: base.ref } } });
    assert.equal(noCosign.code, 1);
    assert.match(noCosign.out, /cosign is not installed/);
  });

  test("verification fails closed: unsigned, signed by a pull request, another workflow or another repository", async () => {
    const unsigned = await pushImage("strata/bases", "turing-333333333333");
    const cases: [string, ActionsIdentity | undefined][] = [
      ["unsigned", undefined],
      ["pull request build of the base workflow", ID.pullRequest],
      ["the runtimes workflow on main", ID.runtimesWorkflow],
      ["the base workflow of another repository", ID.otherRepository],
    ];
    for (const [label, signer] of cases) {
      const base = label === "unsigned" ? unsigned : await pushImage("strata/bases", `turing-${randomBytes(6).toString("hex")}`);
      if (signer) await signBase(base.ref, signer);
      const v = await verifyBase(base.ref);
      assert.equal(v.code, 1, `${label}: ${v.out}`);
      assert.match(v.out, /::error title=strata base signature::base 'turing' \(.*\) has no valid signature by https:\/\/github\.com\/acme\/strata\/\.github\/workflows\/strata-build-bases\.yml@refs\/heads\/main/, label);
      assert.doesNotMatch(v.out, /signature by .* verified/, label);
      // cosign's own reason: no signature at all, or a certificate for another identity.
      assert.match(v.out, signer ? /none of the expected identities matched/ : /no signatures found/, `${label}: ${v.out}`);
    }
  });

  test("verification fails closed for a re-pushed tag, a copied signature, a ref without digest, a registry error and no cosign", async () => {
    const good = await pushImage("strata/bases", "turing-444444444444");
    await signBase(good.ref);
    // Someone re-pushes the tag with other content and copies the good signature onto the new digest.
    const evil = await pushImage("strata/bases", "turing-444444444444");
    const sig = await client.manifest("strata/bases", sigTag(good.index));
    assert.ok(sig);
    await client.putManifest("strata/bases", sigTag(evil.index), sig.manifest as Manifest & { mediaType: string });
    const copied = await verifyBase(evil.ref);
    assert.equal(copied.code, 1, copied.out);
    assert.match(copied.out, /has no valid signature by/);
    assert.match(copied.out, /invalid or missing digest in claim/, copied.out);
    // The signed digest itself is unaffected: runtimes build FROM the digest, not the tag.
    const pinned = await verifyBase(good.ref);
    assert.equal(pinned.code, 0, pinned.out);

    const tagOnly = await verifyBase(`${registry.address}/strata/bases:turing-444444444444`);
    assert.equal(tagOnly.code, 1);
    assert.match(tagOnly.out, /is not pinned by a sha256 digest/);
    assert.deepEqual(tagOnly.cosignCalls, [], "nothing verified by tag");

    const unreachable = await verifyBase(`127.0.0.1:9/strata/bases:turing-444444444444@${good.index}`);
    assert.equal(unreachable.code, 1, unreachable.out);
    assert.match(unreachable.out, /has no valid signature by/);

    const missing = await runStep(stepNamed(runtimeJob, VERIFY), { env: { BASE_REFS: "{}" }, context: { "steps.base.outputs.bases": '["turing"]' } });
    assert.equal(missing.code, 1);
    assert.match(missing.out, /base 'turing' has no published ref/);

    const noCosign = await verifyBase(good.ref, { withCosign: false });
    assert.equal(noCosign.code, 1);
    assert.match(noCosign.out, /cosign is not installed: base signatures cannot be checked, so nothing is built/);
  });

  test("a runtime shard verifies exactly the bases of its runtimes, at the refs the root stack publishes", async () => {
    const shards = JSON.parse(stepNamed(shardJob, VERIFY).env!.SHARD_BASES!) as Record<string, string[]>;
    assert.deepEqual(shards, { "runtimes-1": ["ampere"], "runtimes-2": ["hopper"], "runtimes-3": ["turing"] });
    const ampere = await pushImage("strata/bases", "ampere-555555555555");
    const hopper = await pushImage("strata/bases", "hopper-555555555555");
    await signBase(ampere.ref);
    const rootRefs = { "prod.baseRefs": { ampere: ampere.ref, hopper: hopper.ref } };
    const ok = await runStep(stepNamed(shardJob, VERIFY), { env: { STRATA_SHARD: "runtimes-1" }, stackOutputs: rootRefs });
    assert.equal(ok.code, 0, ok.out);
    assert.equal(ok.cosignCalls.length, 1, "only the shard's own base");
    const unsigned = await runStep(stepNamed(shardJob, VERIFY), { env: { STRATA_SHARD: "runtimes-2" }, stackOutputs: rootRefs });
    assert.equal(unsigned.code, 1, unsigned.out);
    assert.match(unsigned.out, /base 'hopper' .* has no valid signature/);
    const unknown = await runStep(stepNamed(shardJob, VERIFY), { env: { STRATA_SHARD: "runtimes-9" }, stackOutputs: rootRefs });
    assert.equal(unknown.code, 1);
    assert.match(unknown.out, /no base to verify/);
  });

  test("with several repositories, a base signed by the base workflow of any of them verifies, and nothing else", async () => {
    const multi = jobs(generateWorkflows(plan, { ...OPTS, baseSigners: [REPOSITORY, "acme/models"] }), WORKFLOW_FILES.runtimes)["build-1"]!;
    const step = stepNamed(multi, VERIFY);
    assert.equal(step.env!.BASE_SIGNER, undefined);
    assert.equal(step.env!.BASE_SIGNER_REGEXP, "^https://github\\.com/(?:acme/strata|acme/models)/\\.github/workflows/strata-build-bases\\.yml@refs/heads/main$");
    const models = { repository: "acme/models", workflow: WORKFLOW_FILES.bases, ref: "refs/heads/main", event: "push" } satisfies ActionsIdentity;
    const cases: [string, ActionsIdentity, number][] = [
      ["this repository's base workflow", ID.baseMain, 0],
      ["the other configured repository's base workflow", models, 0],
      ["a pull-request build in the other repository", { ...models, ref: "refs/pull/3/merge", event: "pull_request" }, 1],
      ["an unconfigured repository", ID.otherRepository, 1],
    ];
    for (const [label, signer, code] of cases) {
      const base = await pushImage("strata/bases", `turing-${randomBytes(6).toString("hex")}`);
      await signBase(base.ref, signer);
      const v = await runStep(step, { env: { BASE_REFS: JSON.stringify({ turing: base.ref }) }, context: { "steps.base.outputs.bases": '["turing"]' } });
      assert.equal(v.code, code, `${label}: ${v.out}`);
      assert.match(v.cosignCalls[0] ?? "", /^verify --certificate-identity-regexp \^https:/, label);
    }
  });

  test("a runtime shard whose pulumi up read another base than the one verified fails before attesting or signing", async () => {
    const CHECK = "The runtimes were built FROM the verified bases";
    const steps = shardJob.steps.map((st) => st.name);
    assert.ok(steps.indexOf("pulumi up (runtime shard stack)") < steps.indexOf(CHECK) && steps.indexOf(CHECK) < steps.findIndex((n) => n?.startsWith("Attest")), steps.join(" | "));
    const ampere = await pushImage("strata/bases", "ampere-666666666666");
    const republished = await pushImage("strata/bases", "ampere-777777777777");
    await signBase(ampere.ref);
    const runnerTemp = await mkdtemp(join(dir, "runner-temp-"));
    const verified = await runStep(stepNamed(shardJob, VERIFY), { env: { STRATA_SHARD: "runtimes-1" }, stackOutputs: { "prod.baseRefs": { ampere: ampere.ref } }, runnerTemp });
    assert.equal(verified.code, 0, verified.out);
    const same = await runStep(stepNamed(shardJob, CHECK), { env: { STRATA_SHARD: "runtimes-1" }, stackOutputs: { "prod-runtimes-1.baseRefs": { ampere: ampere.ref } }, runnerTemp });
    assert.equal(same.code, 0, same.out);
    const moved = await runStep(stepNamed(shardJob, CHECK), { env: { STRATA_SHARD: "runtimes-1" }, stackOutputs: { "prod-runtimes-1.baseRefs": { ampere: republished.ref } }, runnerTemp });
    assert.equal(moved.code, 1, moved.out);
    assert.match(moved.out, new RegExp(`base 'ampere' changed while this job ran: verified ${ampere.index}`));
    const unverified = await runStep(stepNamed(shardJob, CHECK), { env: { STRATA_SHARD: "runtimes-1" }, stackOutputs: { "prod-runtimes-1.baseRefs": { ampere: ampere.ref } } });
    assert.equal(unverified.code, 1, "without the verify step's list nothing passes");
    assert.match(unverified.out, /no verified bases are listed/);
  });

  test("transparencyLog false: no Rekor entry, a timestamp from the authority instead, verified with its chain", async () => {
    const tsa = await startTimestampAuthority(dir);
    try {
      const priv = generateWorkflows(plan, { ...OPTS, signing: { transparencyLog: false, timestampUrl: tsa.url } });
      const tls = { SSL_CERT_FILE: tsa.tlsCaFile, CURL_CA_BUNDLE: tsa.tlsCaFile };
      const base = await pushImage("strata/bases", "turing-666666666666");
      const rekorBefore = sigstore.requests.filter((r) => r === "POST /api/v1/log/entries").length;
      const signed = await runStep(stepNamed(jobs(priv, WORKFLOW_FILES.bases)["build-1"]!, SIGN), {
        id: ID.baseMain,
        env: { STRATA_BASE: "turing", ...tls },
        stackOutputs: { "prod-base-turing.baseRefs": { turing: base.ref } },
      });
      assert.equal(signed.code, 0, signed.out);
      assert.equal(sigstore.requests.filter((r) => r === "POST /api/v1/log/entries").length, rekorBefore, "nothing sent to Rekor");
      assert.ok(tsa.requests.includes("POST /api/v1/timestamp"), tsa.requests.join(", "));
      assert.match(signed.summary, /timestamp authority, no transparency log/);

      const step = stepNamed(jobs(priv, WORKFLOW_FILES.runtimes)["build-1"]!, VERIFY);
      const context = { "steps.base.outputs.bases": '["turing"]' };
      const ok = await runStep(step, { env: { BASE_REFS: JSON.stringify({ turing: base.ref }), ...tls }, context });
      assert.equal(ok.code, 0, ok.out);
      assert.ok(tsa.requests.includes("GET /api/v1/timestamp/certchain"));
      // The timestamp is checked: against another authority's chain it fails.
      const otherTsa = await startTimestampAuthority(await mkdtemp(join(dir, "tsa-")));
      try {
        const foreignChain = { ...step, run: step.run!.replaceAll(tsa.url, otherTsa.url) };
        assert.notEqual(foreignChain.run, step.run);
        const foreign = await runStep(foreignChain, { env: { BASE_REFS: JSON.stringify({ turing: base.ref }), SSL_CERT_FILE: otherTsa.tlsCaFile, CURL_CA_BUNDLE: otherTsa.tlsCaFile }, context });
        assert.equal(foreign.code, 1, foreign.out);
        assert.match(foreign.out, /unable to verify RFC3161 timestamp/);
      } finally {
        await otherTsa.close();
      }
      // The same checks still hold: another signer fails, timestamp or not.
      const other = await pushImage("strata/bases", "turing-777777777777");
      await runStep(stepNamed(jobs(priv, WORKFLOW_FILES.bases)["build-1"]!, SIGN), { id: ID.pullRequest, env: { STRATA_BASE: "turing", ...tls }, stackOutputs: { "prod-base-turing.baseRefs": { turing: other.ref } } });
      const wrong = await runStep(step, { env: { BASE_REFS: JSON.stringify({ turing: other.ref }), ...tls }, context });
      assert.equal(wrong.code, 1, wrong.out);
      assert.match(wrong.out, /none of the expected identities matched/);
      // A verifier expecting the public log (the default) refuses it: consumers add the flags the README names.
      const strict = await verifyBase(base.ref);
      assert.equal(strict.code, 1, strict.out);
    } finally {
      await tsa.close();
    }
  });
});
