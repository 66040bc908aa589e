import { Document, isPair, isScalar, visit } from "yaml";
import { DEFAULT_LABELS, DEFAULT_POOL_NAME, labelSetKey, parseFleetConfig } from "../components/fleet/config.ts";
import { baseSignerIdentity, baseSignerPattern, DEFAULT_TIMESTAMP_URL, GITHUB_OIDC_URL, SECRETS, VARIABLES } from "../components/github-trust.ts";
import { DEFAULT_RUNTIME_SHARD_SIZE, RUNTIME_SHARD_INFIX, runtimeShards, SHARD_INFIX, shardsRuntimes } from "../components/shard-stacks.ts";
import { lockFileFor } from "../matrix/lock.ts";
import type { BuildPlan } from "../matrix/plan.ts";

/**
 * `strata workflows`: GitHub Actions workflows generated from the build plan and the stack config. Pure: the same
 * plan and options give the same bytes (keys sorted, no timestamps), so `--check` can compare.
 */

/** GitHub refuses a job matrix of more than 256 jobs. */
export const MAX_MATRIX_JOBS = 256;

/**
 * Every third-party action the generated workflows use, pinned to the full commit SHA its version tag pointed to
 * (a tag can be moved; a commit cannot). The YAML carries the version as a comment after the SHA. Each SHA was read
 * from the action's own repository (`git rev-parse <tag>^{commit}`) and cross-checked against public workflows that
 * pin the same version. Bump deliberately: change `version` and `sha` together.
 */
export const ACTION_PINS = {
  checkout: { repo: "actions/checkout", version: "v4.2.2", sha: "11bd71901bbe5b1630ceea73d27597364c9af683" },
  setupNode: { repo: "actions/setup-node", version: "v4.4.0", sha: "49933ea5288caeca8642d1e84afbd3f7d6820020" },
  awsCredentials: { repo: "aws-actions/configure-aws-credentials", version: "v4.2.1", sha: "b47578312673ae6fa5b5096b330d9fbac3d116df" },
  ecrLogin: { repo: "aws-actions/amazon-ecr-login", version: "v2.0.1", sha: "062b18b96a7aff071d4dc91bc00c4c1a7945b076" },
  dockerLogin: { repo: "docker/login-action", version: "v3.4.0", sha: "74a5d142397b4f367a81961eba4e8cd7edddf772" },
  setupBuildx: { repo: "docker/setup-buildx-action", version: "v3.10.0", sha: "b5ca514318bd6ebac0fb2aedd5d36ec1b5c232a2" },
  pulumi: { repo: "pulumi/actions", version: "v6.6.1", sha: "8582a9e8cc630786854029b4e09281acd6794b58" },
  cosignInstaller: { repo: "sigstore/cosign-installer", version: "v3.10.1", sha: "7e8b541eb2e61bf99390e1afd4be13a184e9ebc5" },
} as const;

/** `uses:` values, `owner/repo@<sha>`, from {@link ACTION_PINS}. */
export const ACTIONS = Object.fromEntries(Object.entries(ACTION_PINS).map(([k, p]) => [k, `${p.repo}@${p.sha}`])) as {
  readonly [K in keyof typeof ACTION_PINS]: string;
};

/** The version comment written after each pinned `uses:`. */
const PIN_VERSIONS = new Map<string, string>(Object.values(ACTION_PINS).map((p) => [`${p.repo}@${p.sha}`, p.version]));

/** The generated files, relative to the repository root. */
export const WORKFLOW_FILES = {
  bases: ".github/workflows/strata-build-bases.yml",
  runtimes: ".github/workflows/strata-build-runtimes.yml",
  prCheck: ".github/workflows/strata-pr-check.yml",
  gc: ".github/workflows/strata-gc.yml",
  lockRefresh: ".github/workflows/strata-lock-refresh.yml",
} as const;

/** When the upstream lock is refreshed (UTC): Mondays 05:23, and on demand. */
export const LOCK_REFRESH_SCHEDULE = "23 5 * * 1";
/** The branch the lock refresh pushes to and opens its pull request from. */
export const LOCK_REFRESH_BRANCH = "strata/lock-refresh";
/** Optional secret: a token whose pull requests start the pull_request workflows (GITHUB_TOKEN's do not). */
export const LOCK_PR_TOKEN_SECRET = "STRATA_LOCK_PR_TOKEN";

/** A runner pool of the fleet: its name and the labels its runners carry. */
export interface RunnerPool {
  name: string;
  labels: readonly string[];
}

/** The fleet's default pool (components/fleet). */
export const DEFAULT_POOLS: readonly RunnerPool[] = [{ name: DEFAULT_POOL_NAME, labels: DEFAULT_LABELS }];

export interface WorkflowOptions {
  /** The root stack: base shards are `<stack>-base-<name>` (see components/shards.ts). */
  stack: string;
  /** The matrix file as the strata CLI takes it, relative to the repository root. Default `strata.yaml`. */
  matrix?: string;
  /** `ecr` (OIDC roles) or `external` (user name variable and password secret). Default `ecr`. */
  registryKind?: "ecr" | "local" | "external";
  /** The branch builds run for. Default `main`. */
  defaultBranch?: string;
  /** Protected environment of the jobs that push bases (must match strata:github.baseEnvironment). Default none. */
  baseEnvironment?: string;
  /** Labels of the base-build jobs; some pool must carry all of them. Default the default pool's labels. */
  runnerLabels?: readonly string[];
  /** The fleet's pools (strata:fleet pools). Default the fleet's default pool. */
  pools?: readonly RunnerPool[];
  /** Largest job matrix per shard job, 1-256. Default 256. */
  shardSize?: number;
  /** Split matrices over several jobs of at most `shardSize` entries. Default true. */
  sharding?: boolean;
  /** Docker data directory size (GiB) above which the disk guard prunes and warns. Default 120. */
  diskWarnGiB?: number;
  /** Docker data directory size (GiB) above which the disk guard fails the job (after pruning). Default 160. */
  diskMaxGiB?: number;
  /** BuildKit garbage collection: storage the builder keeps (buildkitd `gckeepstorage`). Default `100GB`. */
  buildkitKeepStorage?: string;
  /** Minutes a base build may take (the fleet's maxRuntimeMinutes bounds it). Default 360. */
  baseTimeoutMinutes?: number;
  /** Node.js major version for the strata CLI. Default `22`. */
  nodeVersion?: string;
  /** Base GC (strata-gc.yml): runtime releases whose bases are kept. Default 3. */
  gcKeepReleases?: number;
  /** Base GC: only bases older than this many days are deleted. Default 30. */
  gcMinAgeDays?: number;
  /** Base GC: cron schedule (UTC). Default `17 4 * * 0` (Sundays 04:17). */
  gcSchedule?: string;
  /**
   * Repositories whose base workflow (on the default branch) may sign the bases a runtime builds FROM: with more
   * than one, strata:github.repositories (those the push-bases role trusts). Default: the repository the workflow
   * runs in.
   */
  baseSigners?: readonly string[];
  /**
   * The stack's strata:runtimeShardSize: with more runtimes than this, the runtimes workflow runs one `pulumi up` per
   * runtime shard stack `<stack>-runtimes-<k>` instead of one bake job per runtime. Default 500.
   */
  runtimeShardSize?: number;
  /** strata:github.signing: public transparency log or a timestamp authority. Default `{ transparencyLog: true }`. */
  signing?: Partial<SigningOptions>;
}

/** How pushed images are signed (strata:github.signing). */
export interface SigningOptions {
  /** Upload each signature to sigstore's public Rekor log. Default true. */
  transparencyLog: boolean;
  /** RFC 3161 timestamp authority that dates signatures when `transparencyLog` is false. Default sigstore's public TSA. */
  timestampUrl: string;
}

/** A generator input problem: what is wrong and what to do. */
export class WorkflowError extends Error {}

/**
 * How many jobs a matrix of `count` entries needs at `shardSize` entries each. Without sharding, or with a shard
 * size GitHub would refuse, a matrix over 256 entries is an error.
 */
export function shardCount(count: number, what: string, opts: Pick<WorkflowOptions, "shardSize" | "sharding"> = {}): number {
  const size = opts.shardSize ?? MAX_MATRIX_JOBS;
  if (!Number.isInteger(size) || size < 1 || size > MAX_MATRIX_JOBS) {
    throw new WorkflowError(`shard size ${size} is not allowed: GitHub runs at most ${MAX_MATRIX_JOBS} jobs per matrix; use a shard size from 1 to ${MAX_MATRIX_JOBS}`);
  }
  if (opts.sharding === false) {
    if (count > MAX_MATRIX_JOBS) {
      throw new WorkflowError(
        `the matrix has ${count} ${what}, but one job matrix holds at most ${MAX_MATRIX_JOBS} jobs (GitHub's limit) and sharding is off: turn sharding on (drop --no-shard) so they are split over ${Math.ceil(count / MAX_MATRIX_JOBS)} jobs`,
      );
    }
    return 1;
  }
  return Math.max(1, Math.ceil(count / size));
}

/** Splits names into `shards` slices of at most `size`, in order (what the workflows' jq slices do). */
export function shardSlices<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Throws unless some pool's runners carry every label in `labels` (GitHub matches labels case-insensitively). */
export function checkRunnerLabels(labels: readonly string[], pools: readonly RunnerPool[]): RunnerPool {
  if (labels.length === 0) throw new WorkflowError("runner labels are empty: base builds need the labels of a self-hosted GPU pool, e.g. " + JSON.stringify(DEFAULT_LABELS));
  const want = labelSetKey(labels).split(",");
  const pool = pools.find((p) => {
    const have = new Set(labelSetKey(p.labels).split(","));
    return want.every((l) => have.has(l));
  });
  if (!pool) {
    const served = pools.map((p) => `${p.name} [${p.labels.join(", ")}]`).join("; ");
    const missing = want.filter((l) => !pools.some((p) => p.labels.some((pl) => pl.toLowerCase() === l)));
    throw new WorkflowError(
      `no runner pool serves the labels [${labels.join(", ")}]${missing.length ? ` (no pool has ${missing.map((l) => `'${l}'`).join(", ")})` : ""}: jobs would queue forever. ` +
        `Pools: ${served}. Use a subset of one pool's labels in strata:github.runnerLabels, or add a pool with them to strata:fleet.pools`,
    );
  }
  return pool;
}

interface Resolved extends Required<Omit<WorkflowOptions, "baseEnvironment" | "signing">> {
  baseEnvironment?: string;
  signing: SigningOptions;
}

function resolve(opts: WorkflowOptions): Resolved {
  const r: Resolved = {
    matrix: "strata.yaml",
    registryKind: "ecr",
    defaultBranch: "main",
    runnerLabels: DEFAULT_LABELS,
    pools: DEFAULT_POOLS,
    shardSize: MAX_MATRIX_JOBS,
    sharding: true,
    diskWarnGiB: 120,
    diskMaxGiB: 160,
    buildkitKeepStorage: "100GB",
    baseTimeoutMinutes: 360,
    nodeVersion: "22",
    gcKeepReleases: 3,
    gcMinAgeDays: 30,
    gcSchedule: "17 4 * * 0",
    baseSigners: [] as readonly string[],
    runtimeShardSize: DEFAULT_RUNTIME_SHARD_SIZE,
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
  } as Resolved;
  r.signing = { transparencyLog: opts.signing?.transparencyLog ?? true, timestampUrl: opts.signing?.timestampUrl ?? DEFAULT_TIMESTAMP_URL };
  if (!/^https:\/\/[^\s'"$`\\]+$/.test(r.signing.timestampUrl)) throw new WorkflowError(`signing timestamp authority '${r.signing.timestampUrl}' must be an https:// URL (strata:github.signing.timestampUrl)`);
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(r.stack)) throw new WorkflowError(`stack '${r.stack}' is not a Pulumi stack name (letters, digits, '-', '_', '.')`);
  if (r.registryKind === "local") {
    throw new WorkflowError(`stack '${r.stack}' pushes to a local registry, which GitHub-hosted and fleet runners cannot reach: generate workflows for a stack with strata:registry.kind ecr or external (--stack NAME)`);
  }
  if (!(r.diskWarnGiB > 0 && r.diskMaxGiB >= r.diskWarnGiB)) throw new WorkflowError(`disk guard thresholds: need 0 < warn (${r.diskWarnGiB} GiB) <= max (${r.diskMaxGiB} GiB)`);
  if (!/^[^\s*?]+$/.test(r.defaultBranch)) throw new WorkflowError(`default branch '${r.defaultBranch}' must be one branch name, without wildcards`);
  if (!/^\d+(\.\d+)?(GB|MB|%)$/.test(r.buildkitKeepStorage)) throw new WorkflowError(`buildkitKeepStorage '${r.buildkitKeepStorage}' must look like 100GB, 50000MB or 40%`);
  checkRunnerLabels(r.runnerLabels, r.pools);
  if (!(Number.isInteger(r.gcKeepReleases) && r.gcKeepReleases >= 1) || !(Number.isInteger(r.gcMinAgeDays) && r.gcMinAgeDays >= 1)) throw new WorkflowError(`base GC: keep at least 1 release and delete nothing younger than 1 day (got ${r.gcKeepReleases} releases, ${r.gcMinAgeDays} days)`);
  if (!/^(\S+\s+){4}\S+$/.test(r.gcSchedule)) throw new WorkflowError(`base GC schedule '${r.gcSchedule}' is not a 5-field cron expression`);
  return r;
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json | undefined };

/**
 * Key order: these keys first, in this order (GitHub's conventional reading order), every other key sorted. Fixed
 * either way, so the same object always gives the same bytes.
 */
export const KEY_ORDER = ["name", "id", "on", "needs", "if", "runs-on", "environment", "timeout-minutes", "permissions", "concurrency", "strategy", "outputs", "uses", "with", "env", "run", "jobs", "steps"];

function compareKeys(a: string, b: string): number {
  const ia = KEY_ORDER.indexOf(a);
  const ib = KEY_ORDER.indexOf(b);
  if (ia !== -1 || ib !== -1) return (ia === -1 ? KEY_ORDER.length : ia) - (ib === -1 ? KEY_ORDER.length : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** YAML with ordered keys, block scalars for scripts and no line folding: the same object gives the same bytes. */
export function toYaml(header: string, doc: Json): string {
  const yaml = new Document(doc, {
    sortMapEntries: (a, b) => compareKeys(String((a.key as { value?: unknown })?.value ?? a.key), String((b.key as { value?: unknown })?.value ?? b.key)),
    aliasDuplicateObjects: false,
  });
  visit(yaml, {
    Pair(_, pair) {
      if (!isPair(pair) || !isScalar(pair.key) || pair.key.value !== "uses" || !isScalar(pair.value)) return;
      const version = PIN_VERSIONS.get(String(pair.value.value));
      if (version === undefined) throw new WorkflowError(`uses: ${String(pair.value.value)} is not in ACTION_PINS: every action must be pinned by commit SHA there`);
      pair.value.comment = ` ${version}`;
    },
  });
  return `${header}${yaml.toString({ lineWidth: 0, minContentWidth: 0 })}`;
}

function header(opts: Resolved, what: string): string {
  return [
    `# ${what}`,
    `# Generated by \`strata workflows --matrix ${opts.matrix} --stack ${opts.stack}\` from the build plan: do not edit by hand.`,
    "# Regenerate after changing the matrix or strata:github; the pull-request check fails while this file is out of date.",
    "",
  ].join("\n");
}

const sh = (lines: string[]) => lines.join("\n") + "\n";

function setupSteps(opts: Resolved, fetchDepth?: number, ref?: string): Json[] {
  return [
    { name: "Check out", uses: ACTIONS.checkout, with: { ...(fetchDepth !== undefined ? { "fetch-depth": fetchDepth } : {}), ...(ref ? { ref } : {}), "persist-credentials": false } },
    { name: "Set up Node.js", uses: ACTIONS.setupNode, with: { "node-version": opts.nodeVersion, cache: "npm" } },
    { name: "Install strata", run: "npm ci\n" },
  ];
}

function awsSteps(opts: Resolved, roleVar: string, sessionSeconds?: number): Json[] {
  if (opts.registryKind !== "ecr") return [];
  return [
    {
      name: "AWS credentials (OIDC, no keys)",
      uses: ACTIONS.awsCredentials,
      with: {
        "role-to-assume": `\${{ vars.${roleVar} }}`,
        "aws-region": `\${{ vars.${VARIABLES.region} }}`,
        "role-session-name": "strata-${{ github.run_id }}-${{ github.run_attempt }}",
        ...(sessionSeconds ? { "role-duration-seconds": sessionSeconds } : {}),
      },
    },
  ];
}

function registryLogin(opts: Resolved): Json[] {
  return opts.registryKind === "ecr"
    ? [{ name: "Log in to ECR", uses: ACTIONS.ecrLogin }]
    : [{ name: "Log in to the registry", uses: ACTIONS.dockerLogin, with: { registry: `\${{ vars.${VARIABLES.registry} }}`, username: `\${{ vars.${VARIABLES.registryUsername} }}`, password: `\${{ secrets.${SECRETS.registryPassword} }}` } }];
}

/** Finds the commit of this workflow's last successful run (or the push's `before`) and writes `since=`. */
function sinceStep(workflowFile: string): Json {
  return {
    id: "since",
    name: "Commit of the last successful build",
    env: { GH_TOKEN: "${{ github.token }}", INPUT_SINCE: "${{ inputs.since }}", BEFORE: "${{ github.event.before }}", BRANCH: "${{ github.event.repository.default_branch }}" },
    run: sh([
      "set -euo pipefail",
      'since="${INPUT_SINCE:-}"',
      'if [ -z "$since" ]; then',
      `  since="$(gh run list --workflow ${workflowFile} --branch "$BRANCH" --status success --limit 1 --json headSha --jq '.[0].headSha // empty' || true)"`,
      "fi",
      'if [ -z "$since" ]; then since="${BEFORE:-}"; fi',
      'if [ "$since" = 0000000000000000000000000000000000000000 ]; then since=""; fi',
      'if [ -n "$since" ] && [ "$since" != all ] && ! git cat-file -e "${since}^{commit}" 2>/dev/null; then',
      '  echo "::warning::commit $since is not in the history (force push?): building everything"',
      '  since=""',
      "fi",
      'echo "since=${since:-all}" >> "$GITHUB_OUTPUT"',
    ]),
  };
}

/**
 * Writes the selected names (sorted JSON array in `$file`) as outputs `<prefix>_1..n`, jq slices of `size`, and
 * `count`/`any`; fails when the matrix outgrew the generated shard jobs.
 */
function shardOutputs(file: string, prefix: string, shards: number, size: number, what: string): string[] {
  return [
    `total="$(jq length ${file})"`,
    `if [ "$total" -gt ${shards * size} ]; then`,
    `  echo "::error::$total ${what} to build, but this workflow has ${shards} job(s) of at most ${size}: regenerate it (npx strata workflows)"`,
    "  exit 1",
    "fi",
    '{',
    '  echo "count=$total"',
    '  if [ "$total" -gt 0 ]; then echo "any=true"; else echo "any=false"; fi',
    ...Array.from({ length: shards }, (_, i) => `  echo "${prefix}_${i + 1}=$(jq -c '.[${i * size}:${(i + 1) * size}]' ${file})"`),
    '} >> "$GITHUB_OUTPUT"',
  ];
}

function diskGuard(opts: Resolved, mode: "enforce" | "report"): Json {
  return {
    name: mode === "enforce" ? "Disk guard (Docker data directory)" : "Disk usage after the build",
    ...(mode === "report" ? { if: "always()" } : {}),
    env: { WARN_GIB: String(opts.diskWarnGiB), MAX_GIB: String(opts.diskMaxGiB), KEEP_STORAGE: opts.buildkitKeepStorage, MODE: mode },
    run: sh([
      "set -euo pipefail",
      "root=\"$(docker info --format '{{.DockerRootDir}}')\"",
      "measure() {",
      '  used_kib="$(sudo -n du -sk "$root" 2>/dev/null | cut -f1 || true)"',
      '  [ -n "$used_kib" ] || used_kib="$(du -sk "$root" 2>/dev/null | cut -f1 || echo 0)"',
      "  free_kib=\"$(df -Pk \"$root\" | awk 'NR==2 {print $4}')\"",
      "  used_gib=$((used_kib / 1048576)); free_gib=$((free_kib / 1048576))",
      '  echo "Docker data directory $root: ${used_gib} GiB used, ${free_gib} GiB free"',
      "}",
      "docker system df || true",
      "measure",
      'if [ "$used_gib" -ge "$WARN_GIB" ]; then',
      '  echo "::warning title=strata disk guard::Docker data directory uses ${used_gib} GiB (warning at ${WARN_GIB} GiB): pruning build cache down to ${KEEP_STORAGE}"',
      '  docker buildx prune --force --keep-storage "$KEEP_STORAGE" || true',
      "  docker image prune --force || true",
      "  measure",
      "fi",
      'if [ "$MODE" = enforce ] && [ "$used_gib" -ge "$MAX_GIB" ]; then',
      '  echo "::error title=strata disk guard::Docker data directory $root still uses ${used_gib} GiB after pruning (limit ${MAX_GIB} GiB): a base build could fill the disk; give the pool a larger rootVolumeGiB (strata:fleet) or prune the runner"',
      "  exit 1",
      "fi",
      'echo "Docker data directory: ${used_gib} GiB used, ${free_gib} GiB free (${MODE})" >> "$GITHUB_STEP_SUMMARY"',
    ]),
  };
}

const PULUMI_ENV = {
  PULUMI_ACCESS_TOKEN: "${{ secrets.PULUMI_ACCESS_TOKEN }}",
  PULUMI_BACKEND_URL: "${{ vars.PULUMI_BACKEND_URL }}",
  PULUMI_CONFIG_PASSPHRASE: "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
};

/** Local tag of the image the GPU gate tests (never pushed). */
const GATE_IMAGE = "strata-gate/${STRATA_BASE}:candidate";

/**
 * The GPU gate: build the base into the runner's local image store (same bake target, args and registry cache as
 * the program; nothing pushed), run the smoke test generated for it (`strata smoke`) on the runner's GPU, and only
 * then let `pulumi up` push it from the warm cache. A failing check fails the job before the push: the base is not
 * published, STRATA_BASE_REFS keeps the previous refs, and the runtimes workflow (which needs a successful base
 * run) does not start.
 */
function gateSteps(): Json[] {
  return [
    {
      id: "build",
      name: "Build the base for the GPU gate (local image, not pushed)",
      env: { REGISTRY: `\${{ vars.${VARIABLES.registry} }}` },
      run: sh([
        "set -euo pipefail",
        'echo "started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$GITHUB_OUTPUT"',
        'npx strata bake --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --registry "$REGISTRY" --out bake.json',
        "# The runner's own platform only: a multi-platform image cannot be loaded into the local store.",
        'docker buildx bake -f bake.json "base-$STRATA_BASE" --progress=plain \\',
        '  --set "base-$STRATA_BASE.platform=linux/amd64" \\',
        '  --set "base-$STRATA_BASE.output=type=docker" \\',
        `  --set "base-$STRATA_BASE.tags=${GATE_IMAGE}" 2>&1 | tee build.log`,
      ]),
    },
    {
      id: "gate",
      name: "GPU gate: smoke test inside the new image on this runner's GPU",
      run: sh([
        "set -euo pipefail",
        'npx strata smoke --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --base "$STRATA_BASE" --out smoke.py',
        "mkdir -p gate",
        "status=0",
        'docker run --rm --gpus all --network none -v "$PWD/smoke.py:/strata-smoke.py:ro" -v "$PWD/gate:/gate" \\',
        `  --entrypoint sh "${GATE_IMAGE}" -c 'exec "$(command -v python3 || command -v python)" /strata-smoke.py --report /gate/report.json' || status=$?`,
        "{",
        '  echo "### GPU gate: base \\`$STRATA_BASE\\`"',
        "  echo '| check | result | detail |'",
        "  echo '| --- | --- | --- |'",
        "  jq -r '.checks[] | \"| `\\(.id)` | \\(.state) | \\(.detail | gsub(\"[|]\"; \"/\")) |\"' gate/report.json 2>/dev/null || echo '| (no report) | failed | the smoke test did not run; see the log |'",
        '} >> "$GITHUB_STEP_SUMMARY"',
        'if [ "$status" -ne 0 ]; then',
        "  failed=\"$(jq -r '.failed | join(\", \")' gate/report.json 2>/dev/null || echo 'the smoke test itself')\"",
        `  echo "::error title=strata GPU gate::base $STRATA_BASE failed: $failed. It is not pushed or published; ${VARIABLES.baseRefs} keeps the previous base"`,
        "  exit 1",
        "fi",
      ]),
    },
  ];
}

/** Appends this build's cost (wall time, instance type, spot or on-demand, cached steps) to the base's ledger. */
function recordStep(): Json {
  return {
    name: "Record what the build cost (for rebuild forecasts)",
    if: "${{ always() && steps.build.outcome == 'success' }}",
    "continue-on-error": true,
    env: { REGISTRY: `\${{ vars.${VARIABLES.registry} }}`, STARTED_AT: "${{ steps.build.outputs.started_at }}", GATE: "${{ steps.gate.outcome }}" },
    run: sh([
      "set -euo pipefail",
      "imds() { curl -sf -m 2 -H \"X-aws-ec2-metadata-token: $token\" \"http://169.254.169.254/latest/meta-data/$1\" || true; }",
      "token=\"$(curl -sf -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token || true)\"",
      'if [ "$GATE" = success ]; then outcome=passed; else outcome=gate-failed; fi',
      'npx strata record --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --base "$STRATA_BASE" --registry "$REGISTRY" \\',
      '  --started-at "$STARTED_AT" --build-log build.log --outcome "$outcome" \\',
      '  --instance-type "$(imds instance-type)" --lifecycle "$(imds instance-life-cycle)"',
    ]),
  };
}

/** The cosign release the workflows install (cosign-installer's `cosign-release`); Debian trixie's, which the tests run. */
export const COSIGN_VERSION = "v2.5.0";

/**
 * Where a job's attestation step lists the attestation artifacts it pushed (`repo@sha256:…`, one a line); the sign
 * step signs them too.
 */
export const ATTESTATIONS_FILE = "$RUNNER_TEMP/strata-attestations.txt";

/** Shell lines that split `$ref` (`repo[:tag]@sha256:…`) into `$name@$digest`, refusing anything not pinned by digest. */
function digestRefLines(what: string): string[] {
  return [
    '  digest="${ref##*@}"',
    '  if [ "$digest" = "$ref" ] || ! [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then',
    `    echo "::error title=strata signing::${what} '$ref' is not pinned by a sha256 digest: strata signs and verifies digests only, never tags"`,
    "    exit 1",
    "  fi",
    '  name="${ref%@*}"',
    '  last="${name##*/}"',
    '  if [[ "$last" == *:* ]]; then name="${name%:*}"; fi',
  ];
}

const requireCosign = (why: string) => `command -v cosign >/dev/null || { echo "::error title=strata signing::cosign is not installed: ${why}"; exit 1; }`;

/**
 * The sign step: `collect` (shell lines) appends the `repo:tag@sha256:…` refs the job just pushed to sign-refs.txt;
 * the attestation artifacts in {@link ATTESTATIONS_FILE} join them; each is signed by digest, keyless, with the
 * job's OIDC identity (Fulcio certificate for `https://github.com/<job_workflow_ref>`). `--recursive`: a base is a
 * multi-platform index, and signing its platform manifests too lets a consumer that resolved the index to its own
 * platform's digest (a kubelet's image ID, `crane digest --platform`) verify that digest as well.
 */
export function signScript(signing: SigningOptions, collect: string[]): string {
  const tlog = signing.transparencyLog ? ["--tlog-upload=true"] : ["--tlog-upload=false", `--timestamp-server-url '${signing.timestampUrl}'`];
  return sh([
    "set -euo pipefail",
    requireCosign("the digests just pushed would stay unsigned, and runtime builds refuse unsigned bases"),
    ": > sign-refs.txt",
    ...collect,
    `attestations="${ATTESTATIONS_FILE}"`,
    'if [ -f "$attestations" ]; then cat "$attestations" >> sign-refs.txt; fi',
    "# Every ref as repo@sha256:… (a tag is dropped, so one digest named twice is signed once).",
    ": > sign-digests.txt",
    "while IFS= read -r ref; do",
    '  [ -n "$ref" ] || continue',
    ...digestRefLines("pushed image"),
    '  echo "$name@$digest" >> sign-digests.txt',
    "done < sign-refs.txt",
    "signed=0",
    "while IFS= read -r image; do",
    `  cosign sign --yes --recursive ${tlog.join(" ")} "$image" < /dev/null`,
    '  echo "- \\`$image\\`" >> signed.md',
    "  signed=$((signed + 1))",
    "done < <(sort -u sign-digests.txt)",
    'if [ "$signed" -eq 0 ]; then echo "::error title=strata signing::nothing to sign: the update pushed no digest this job can name"; exit 1; fi',
    `{ echo "### Signed ($signed, keyless, ${signing.transparencyLog ? "Rekor" : "timestamp authority, no transparency log"})"; cat signed.md; } >> "$GITHUB_STEP_SUMMARY"`,
  ]);
}

/**
 * The verify step of a runtime build: each base in `$BASES` (JSON array of names), at its ref in `$BASE_REFS`
 * (JSON object name → `repo:tag@sha256:…`, the STRATA_BASE_REFS format), must carry a signature whose certificate
 * is `$BASE_SIGNER` (the base workflow on the default branch, {@link baseSignerIdentity}), or matches
 * `$BASE_SIGNER_REGEXP` ({@link baseSignerPattern}, several repositories), issued by GitHub's OIDC
 * issuer. Fails closed: a missing ref, a tag without digest, no signature, another signer, a verify error or no cosign
 * all end the job before anything is built. `prelude` (shell lines) may set BASES and BASE_REFS first.
 */
export function verifyBasesScript(signing: SigningOptions, prelude: string[] = []): string {
  const tlog = signing.transparencyLog ? [] : ["--insecure-ignore-tlog=true", "--use-signed-timestamps", "--timestamp-certificate-chain tsa-chain.pem"];
  return sh([
    "set -euo pipefail",
    requireCosign("base signatures cannot be checked, so nothing is built"),
    ...prelude,
    "# One signer (the base workflow of this repository), or with several repositories an anchored pattern of theirs.",
    'if [ -n "${BASE_SIGNER_REGEXP:-}" ]; then identity=(--certificate-identity-regexp "$BASE_SIGNER_REGEXP"); signer="$BASE_SIGNER_REGEXP"',
    'else : "${BASE_SIGNER:?the base signer identity is not set}"; identity=(--certificate-identity "$BASE_SIGNER"); signer="$BASE_SIGNER"; fi',
    ...(signing.transparencyLog ? [] : [`curl -fsS --proto =https '${signing.timestampUrl}/certchain' -o tsa-chain.pem`]),
    "bases=\"$(printf '%s' \"$BASES\" | jq -r '.[]')\"",
    "verified=0",
    "while IFS= read -r base; do",
    '  [ -n "$base" ] || continue',
    "  ref=\"$(printf '%s' \"$BASE_REFS\" | jq -r --arg b \"$base\" '.[$b] // empty')\"",
    `  if [ -z "$ref" ]; then echo "::error title=strata base signature::base '$base' has no published ref; nothing is built FROM it"; exit 1; fi`,
    ...digestRefLines("base"),
    `  if ! cosign verify "\${identity[@]}" --certificate-oidc-issuer ${GITHUB_OIDC_URL} ${[...tlog, ""].join(" ")}"$name@$digest" > "verified-$base.json" < /dev/null; then`,
    `    echo "::error title=strata base signature::base '$base' ($name@$digest) has no valid signature by $signer (unsigned, signed by another workflow, branch or repository, or altered): refusing to build FROM it"`,
    "    exit 1",
    "  fi",
    '  echo "Base \\`$base\\` ($name@$digest): signature by $signer verified"',
    `  echo "$base $digest" >> "${VERIFIED_BASES_FILE}"`,
    "  verified=$((verified + 1))",
    'done <<< "$bases"',
    'if [ "$verified" -eq 0 ]; then echo "::error title=strata base signature::no base to verify (BASES is empty)"; exit 1; fi',
  ]);
}

/** Where the verify step lists each base it verified (`<name> sha256:…`, one a line), for {@link builtFromVerifiedScript}. */
export const VERIFIED_BASES_FILE = "$RUNNER_TEMP/strata-verified-bases.txt";

/**
 * After a runtime shard's `pulumi up`: the base refs its program read (the shard stack's `baseRefs` output, read
 * from the root stack while it ran) must be the digests the verify step verified. A publish of the root stack
 * between the two would otherwise have the runtimes built FROM a base nobody verified; the job then fails before
 * attesting or signing anything. `stack` is a shell expression naming the shard stack.
 */
export function builtFromVerifiedScript(stack: string): string {
  return sh([
    "set -euo pipefail",
    `[ -s "${VERIFIED_BASES_FILE}" ] || { echo "::error title=strata base signature::no verified bases are listed: the verify step did not run"; exit 1; }`,
    `used="$(pulumi stack output --stack "${stack}" baseRefs --json)"`,
    "while read -r base digest; do",
    "  ref=\"$(printf '%s' \"$used\" | jq -r --arg b \"$base\" '.[$b] // empty')\"",
    '  if [ "${ref##*@}" != "$digest" ]; then',
    `    echo "::error title=strata base signature::base '$base' changed while this job ran: verified $digest, the shard built FROM \${ref:-nothing}; nothing is attested or signed: re-run the job"`,
    "    exit 1",
    "  fi",
    `done < "${VERIFIED_BASES_FILE}"`,
  ]);
}

/** cosign, pinned, as the sign and verify steps run it. */
function installCosign(): Json {
  return { name: "Install cosign", uses: ACTIONS.cosignInstaller, with: { "cosign-release": COSIGN_VERSION } };
}

/** After a push: install cosign (unless the job already did), then sign what `collect` names (see {@link signScript}). */
function signSteps(o: Resolved, collect: string[], install = true): Json[] {
  return [...(install ? [installCosign()] : []), { name: "Sign the pushed digests (cosign keyless, this job's OIDC identity)", run: signScript(o.signing, collect) }];
}

/** Before a build: install cosign, then verify the bases it builds FROM (see {@link verifyBasesScript}). */
function verifySteps(o: Resolved, env: Record<string, string>, prelude: string[] = []): Json[] {
  return [
    installCosign(),
    {
      name: "Verify the bases' signatures (base workflow on the default branch)",
      env: {
        ...(o.baseSigners.length > 1
          ? { BASE_SIGNER_REGEXP: baseSignerPattern(o.baseSigners, o.defaultBranch) }
          : { BASE_SIGNER: baseSignerIdentity(o.baseSigners[0] ?? "${{ github.repository }}", o.defaultBranch) }),
        ...env,
      },
      run: verifyBasesScript(o.signing, prelude),
    },
  ];
}

/**
 * Attests the images the step before pushed, by digest (`strata attest`): an SBOM and a SLSA provenance per image,
 * attached as OCI referrers and tagged so no lifecycle rule expires them. `stack` is a shell expression naming the
 * stack whose outputs (`pulumi stack output --json`) name the images; `bakeMetadata` a `--metadata-file` of bake
 * instead (its BASE_REFS env gives the runtime's base). `only` narrows the outputs to bases or runtimes.
 */
function attestStep(source: { stack: string; only: "bases" | "runtimes" } | { bakeMetadata: string }): Json {
  const files =
    "stack" in source
      ? [`pulumi stack output --stack "${source.stack}" --json > "$RUNNER_TEMP/strata-outputs.json"`]
      : ['jq -n --argjson refs "$BASE_REFS" \'{baseRefs: $refs}\' > "$RUNNER_TEMP/strata-outputs.json"'];
  const from = "stack" in source ? `--only ${source.only}` : `--bake-metadata "${source.bakeMetadata}" --only runtimes`;
  return {
    name: `Attest the pushed ${"stack" in source ? source.only : "runtimes"} (SBOM, provenance)`,
    run: sh([
      "set -euo pipefail",
      ...files,
      `npx strata attest --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --outputs "$RUNNER_TEMP/strata-outputs.json" ${from} \\`,
      `  --pushed "${ATTESTATIONS_FILE}" | tee -a "$GITHUB_STEP_SUMMARY"`,
    ]),
  };
}

function basesWorkflow(plan: Pick<BuildPlan, "bases">, o: Resolved): string {
  const shards = shardCount(plan.bases.length, "bases", o);
  const size = o.sharding ? o.shardSize : MAX_MATRIX_JOBS;
  const environment = o.baseEnvironment ? { environment: o.baseEnvironment } : {};
  const buildJobs: Record<string, Json> = {};
  for (let i = 1; i <= shards; i++) {
    buildJobs[`build-${i}`] = {
      name: "Base ${{ matrix.base }}",
      needs: "select",
      if: `needs.select.outputs.bases_${i} != '[]'`,
      "runs-on": [...o.runnerLabels],
      ...environment,
      "timeout-minutes": o.baseTimeoutMinutes,
      permissions: { contents: "read", "id-token": "write" },
      // One build of a base at a time (its shard stack's lock would refuse a second update anyway).
      concurrency: { group: `strata-base-${o.stack}-\${{ matrix.base }}`, "cancel-in-progress": false },
      strategy: { "fail-fast": false, matrix: { base: `\${{ fromJSON(needs.select.outputs.bases_${i}) }}` } },
      env: { STRATA_BASE: "${{ matrix.base }}", ...PULUMI_ENV },
      steps: [
        ...setupSteps(o),
        diskGuard(o, "enforce"),
        {
          name: "BuildKit builder with garbage collection",
          uses: ACTIONS.setupBuildx,
          with: { "buildkitd-config-inline": sh(["[worker.oci]", "  gc = true", `  gckeepstorage = "${o.buildkitKeepStorage}"`]) },
        },
        ...awsSteps(o, VARIABLES.pushBases, Math.min(43200, Math.max(3600, o.baseTimeoutMinutes * 60))),
        ...registryLogin(o),
        ...gateSteps(),
        { name: "Install Pulumi", uses: ACTIONS.pulumi },
        {
          name: "pulumi up (shard stack of this base)",
          run: sh([
            "set -euo pipefail",
            `shard="\${STRATA_STACK}${SHARD_INFIX}\${STRATA_BASE}"`,
            'pulumi stack select --create "$shard" --non-interactive',
            "# The shard gets the root's config (registry, release, providers, secrets) and builds only its base.",
            'pulumi config cp --stack "$STRATA_STACK" --dest "$shard"',
            'pulumi config rm --stack "$shard" strata:bases >/dev/null 2>&1 || true',
            'pulumi config rm --stack "$shard" strata:baseShards >/dev/null 2>&1 || true',
            "pulumi config set --stack \"$shard\" --path 'strata:bases[0]' \"$STRATA_BASE\"",
            'pulumi config set --stack "$shard" strata:runtimes false',
            'pulumi config set --stack "$shard" strata:shardOf "$STRATA_STACK"',
            'pulumi up --stack "$shard" --yes --skip-preview --non-interactive',
            "ref=\"$(pulumi stack output --stack \"$shard\" baseRefs --json | jq -r --arg b \"$STRATA_BASE\" '.[$b]')\"",
            'echo "Base \\`$STRATA_BASE\\` → \\`$ref\\` (stack $shard)" >> "$GITHUB_STEP_SUMMARY"',
          ]),
        },
        attestStep({ stack: `\${STRATA_STACK}${SHARD_INFIX}\${STRATA_BASE}`, only: "bases" }),
        ...signSteps(o, [`shard="\${STRATA_STACK}${SHARD_INFIX}\${STRATA_BASE}"`, "pulumi stack output --stack \"$shard\" baseRefs --json | jq -r '.[]' >> sign-refs.txt"]),
        recordStep(),
        diskGuard(o, "report"),
      ],
    };
  }
  const doc: Json = {
    name: "strata build bases",
    on: {
      push: { branches: [o.defaultBranch] },
      workflow_dispatch: {
        inputs: { since: { description: "Commit to compare against (default: the last successful run); 'all' builds every base", required: false, type: "string", default: "" } },
      },
    },
    permissions: {},
    env: { STRATA_STACK: o.stack, STRATA_MATRIX: o.matrix },
    jobs: {
      select: {
        name: "Bases whose identity changed",
        "runs-on": "ubuntu-latest",
        permissions: { contents: "read", actions: "read" },
        outputs: Object.fromEntries([
          ["any", "${{ steps.select.outputs.any }}"],
          ["count", "${{ steps.select.outputs.count }}"],
          ...Array.from({ length: shards }, (_, i) => [`bases_${i + 1}`, `\${{ steps.select.outputs.bases_${i + 1} }}`]),
        ]),
        steps: [
          ...setupSteps(o, 0),
          sinceStep("strata-build-bases.yml"),
          {
            id: "select",
            name: "strata impact: bases to build",
            env: { SINCE: "${{ steps.since.outputs.since }}" },
            run: sh([
              "set -euo pipefail",
              'if [ "$SINCE" = all ]; then',
              "  npx strata check --matrix \"$STRATA_MATRIX\" --json | jq -c '[.bases[].name] | sort' > bases.json",
              "else",
              '  npx strata impact --json --matrix "$STRATA_MATRIX" --base "$SINCE" > impact.json',
              "  jq -c '.rebuild.bases | sort' impact.json > bases.json",
              "fi",
              ...shardOutputs("bases.json", "bases", shards, size, "bases"),
              "{",
              '  echo "### Bases to build since ${SINCE}: $total"',
              "  jq -r '.[] | \"- `\\(.)`\"' bases.json",
              '} >> "$GITHUB_STEP_SUMMARY"',
            ]),
          },
        ],
      },
      ...buildJobs,
      publish: {
        name: `Publish base refs (${VARIABLES.baseRefs})`,
        needs: ["select", ...Object.keys(buildJobs)],
        if: "${{ !failure() && !cancelled() && needs.select.outputs.any == 'true' }}",
        "runs-on": "ubuntu-latest",
        ...environment,
        permissions: { contents: "read", "id-token": "write" },
        concurrency: { group: `strata-publish-${o.stack}`, "cancel-in-progress": false },
        env: { ...PULUMI_ENV, GITHUB_TOKEN: "${{ secrets.STRATA_GITHUB_TOKEN }}" },
        steps: [
          ...setupSteps(o),
          ...awsSteps(o, VARIABLES.pushBases),
          { name: "Install Pulumi", uses: ACTIONS.pulumi },
          {
            name: `Update ${VARIABLES.baseRefs} from the shard stacks`,
            run: sh([
              "set -euo pipefail",
              "# A targeted update of the root stack: re-read the shards' baseRefs and rewrite the variable, nothing else.",
              'pulumi up --stack "$STRATA_STACK" --yes --skip-preview --non-interactive \\',
              "  --target '**pulumi:pulumi:StackReference::shard-*' \\",
              `  --target '**${VARIABLES.baseRefs}'`,
            ]),
          },
        ],
      },
    },
  };
  return toYaml(header(o, "Builds the CUDA/PyTorch bases whose identity changed, one job per base on the GPU runner fleet."), doc);
}

/** What the two runtimes workflows (per runtime, per runtime shard) differ in, outside their build jobs. */
interface RuntimesSelect {
  /** What one build job entry is, in the dispatch input's description: "runtime" or "runtime shard". */
  unit: string;
  /** Name of the `select` job. */
  jobName: string;
  /** Prefix of the select job's per-matrix outputs, `<output>_<i>`. */
  output: string;
  /** How many build job matrices (one output each). */
  groups: number;
  /** Name of the select step. */
  stepName: string;
  /** Environment of the select step. */
  env: Record<string, string>;
  /** Shell lines after the version line that write the selection and its outputs (`total` among them). */
  select: string[];
  /** The last shell line: the step summary. */
  summary: string;
}

/**
 * The runtimes workflow around its build jobs: triggers (release tags, a completed base build on the default
 * branch, dispatch with `since`), no default permissions, one run per ref, and the `select` job that picks what
 * to build and hands it to `jobs` as `<output>_<i>` outputs beside sha, version and count.
 */
function runtimesDoc(o: Resolved, sel: RuntimesSelect, jobs: Record<string, Json>): Json {
  return {
    name: "strata build runtimes",
    on: {
      push: { tags: ["v*"] },
      workflow_run: { workflows: ["strata build bases"], types: ["completed"], branches: [o.defaultBranch] },
      workflow_dispatch: { inputs: { since: { description: `Commit to compare against (default: the last successful run); 'all' builds every ${sel.unit}`, required: false, type: "string", default: "" } } },
    },
    permissions: {},
    concurrency: { group: "strata-runtimes-${{ github.ref }}", "cancel-in-progress": false },
    env: { STRATA_STACK: o.stack, STRATA_MATRIX: o.matrix },
    jobs: {
      select: {
        name: sel.jobName,
        if: "${{ github.event_name != 'workflow_run' || github.event.workflow_run.conclusion == 'success' }}",
        "runs-on": "ubuntu-latest",
        permissions: { contents: "read", actions: "read" },
        outputs: Object.fromEntries([
          ["sha", "${{ steps.select.outputs.sha }}"],
          ["version", "${{ steps.select.outputs.version }}"],
          ["count", "${{ steps.select.outputs.count }}"],
          ...Array.from({ length: sel.groups }, (_, i) => [`${sel.output}_${i + 1}`, `\${{ steps.select.outputs.${sel.output}_${i + 1} }}`]),
        ]),
        steps: [
          ...setupSteps(o, 0, "${{ github.event.workflow_run.head_sha || github.sha }}"),
          sinceStep("strata-build-runtimes.yml"),
          {
            id: "select",
            name: sel.stepName,
            env: sel.env,
            run: sh([
              "set -euo pipefail",
              `if [ "$REF_TYPE" = tag ]; then version="$REF_NAME"; else version="${o.defaultBranch}"; fi`,
              ...sel.select,
              '{ echo "sha=$(git rev-parse HEAD)"; echo "version=$version"; } >> "$GITHUB_OUTPUT"',
              sel.summary,
            ]),
          },
        ],
      },
      ...jobs,
    },
  };
}

function runtimesWorkflow(plan: Pick<BuildPlan, "bases" | "runtimes">, o: Resolved): string {
  if (shardsRuntimes(plan, o.runtimeShardSize)) return shardedRuntimesWorkflow(plan, o);
  const shards = shardCount(plan.runtimes.length, "runtimes", o);
  const size = o.sharding ? o.shardSize : MAX_MATRIX_JOBS;
  const jobs: Record<string, Json> = {};
  for (let i = 1; i <= shards; i++) {
    jobs[`build-${i}`] = {
      name: "Runtime ${{ matrix.runtime }}",
      needs: "select",
      if: `needs.select.outputs.runtimes_${i} != '[]'`,
      "runs-on": "ubuntu-latest",
      "timeout-minutes": 120,
      permissions: { contents: "read", "id-token": "write" },
      strategy: { "fail-fast": false, matrix: { runtime: `\${{ fromJSON(needs.select.outputs.runtimes_${i}) }}` } },
      env: { STRATA_RUNTIME: "${{ matrix.runtime }}", VERSION: "${{ needs.select.outputs.version }}", BASE_REFS: `\${{ vars.${VARIABLES.baseRefs} }}`, REGISTRY: `\${{ vars.${VARIABLES.registry} }}` },
      steps: [
        ...setupSteps(o, undefined, "${{ needs.select.outputs.sha }}"),
        { name: "Free disk space for CUDA layers", run: "sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /opt/hostedtoolcache/CodeQL\ndf -h /\n" },
        ...awsSteps(o, VARIABLES.pushRuntimes),
        ...registryLogin(o),
        { name: "Set up Docker Buildx", uses: ACTIONS.setupBuildx },
        {
          id: "base",
          name: "The published base of this runtime",
          run: sh([
            "set -euo pipefail",
            "npx strata check --matrix \"$STRATA_MATRIX\" --json > plan.json",
            "base=\"$(jq -r --arg r \"$STRATA_RUNTIME\" '.runtimes[] | select(.name == $r) | .base' plan.json)\"",
            "tag=\"$(jq -r --arg b \"$base\" '.bases[] | select(.name == $b) | .tag' plan.json)\"",
            "ref=\"$(printf '%s' \"${BASE_REFS:-}\" | jq -r --arg b \"$base\" '.[$b] // empty')\"",
            'case "$ref" in',
            '  *":${tag}@sha256:"*) ;;',
            `  *) echo "::error::base '$base' of runtime '$STRATA_RUNTIME': ${VARIABLES.baseRefs} has '\${ref:-nothing}', the matrix wants tag '$tag'; the base build (strata-build-bases) has not published it yet"; exit 1 ;;`,
            "esac",
            'echo "base=$base" >> "$GITHUB_OUTPUT"',
            "jq -cn --arg b \"$base\" '[$b]' | sed 's/^/bases=/' >> \"$GITHUB_OUTPUT\"",
          ]),
        },
        ...verifySteps(o, { BASES: "${{ steps.base.outputs.bases }}" }),
        {
          name: "Build FROM the published base",
          env: { BASE: "${{ steps.base.outputs.base }}" },
          run: sh([
            "set -euo pipefail",
            "ref=\"$(printf '%s' \"$BASE_REFS\" | jq -r --arg b \"$BASE\" '.[$b]')\"",
            "# Pin the base by the digest the base build published (bake metadata format), then build this runtime only.",
            "jq -n --arg t \"base-$BASE\" --arg d \"${ref##*@}\" '{($t): {\"containerimage.digest\": $d}}' > pins.json",
            'npx strata bake --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --registry "$REGISTRY" --version "$VERSION" --pin pins.json --out bake.json',
            'docker buildx bake -f bake.json "runtime-$STRATA_RUNTIME" --metadata-file "$RUNNER_TEMP/strata-bake-metadata.json"',
            'echo "Runtime \\`$STRATA_RUNTIME\\` ($VERSION) FROM \\`$ref\\`" >> "$GITHUB_STEP_SUMMARY"',
          ]),
        },
        attestStep({ bakeMetadata: "$RUNNER_TEMP/strata-bake-metadata.json" }),
        ...signSteps(o, ["jq -r 'to_entries[] | (.value[\"image.name\"] | split(\",\")[0]) + \"@\" + .value[\"containerimage.digest\"]' \"$RUNNER_TEMP/strata-bake-metadata.json\" >> sign-refs.txt"], false),
      ],
    };
  }
  const doc = runtimesDoc(o, {
    unit: "runtime",
    jobName: "Runtimes to build",
    output: "runtimes",
    groups: shards,
    stepName: "Release tags build every runtime; the default branch builds what changed",
    env: { SINCE: "${{ steps.since.outputs.since }}", EVENT: "${{ github.event_name }}", REF_TYPE: "${{ github.ref_type }}", REF_NAME: "${{ github.ref_name }}" },
    select: [
      'if [ "$REF_TYPE" = tag ] || [ "$SINCE" = all ]; then',
      "  npx strata check --matrix \"$STRATA_MATRIX\" --json | jq -c '[.runtimes[].name] | sort' > runtimes.json",
      "else",
      '  npx strata impact --json --matrix "$STRATA_MATRIX" --base "$SINCE" > impact.json',
      "  jq -c '.rebuild.runtimes | sort' impact.json > runtimes.json",
      "fi",
      ...shardOutputs("runtimes.json", "runtimes", shards, size, "runtimes"),
    ],
    summary: 'echo "### Runtimes to build ($version): $total" >> "$GITHUB_STEP_SUMMARY"',
  }, jobs);
  return toYaml(header(o, `Builds runtime images FROM the published bases (${VARIABLES.baseRefs}) on hosted runners, ${shards} job matrix(es) of at most ${size}.`), doc);
}

/**
 * Above strata:runtimeShardSize runtimes: one job per runtime shard stack a change touches (`strata impact` names
 * them; a release tag or `since: all` runs every shard), each a `pulumi up` of `<stack>-runtimes-<k>` that builds
 * its runtimes FROM the bases the root stack publishes. The shard jobs run in parallel, in job matrices of at most
 * 256 (the shard list is fixed here, so a matrix that changes the shards must regenerate this file).
 */
function shardedRuntimesWorkflow(plan: Pick<BuildPlan, "bases" | "runtimes">, o: Resolved): string {
  const shardList = runtimeShards(plan, o.stack, o.runtimeShardSize);
  const all = shardList.map((s) => s.name);
  const groups = shardCount(all.length, "runtime shards", o);
  const size = o.sharding ? o.shardSize : MAX_MATRIX_JOBS;
  const jobs: Record<string, Json> = {};
  for (let i = 1; i <= groups; i++) {
    jobs[`build-${i}`] = {
      name: "Runtime shard ${{ matrix.shard }}",
      needs: "select",
      if: `needs.select.outputs.shards_${i} != '[]'`,
      "runs-on": "ubuntu-latest",
      "timeout-minutes": 360,
      permissions: { contents: "read", "id-token": "write" },
      // One update of a shard stack at a time (its lock would refuse a second one anyway).
      concurrency: { group: `strata-runtimes-${o.stack}-\${{ matrix.shard }}`, "cancel-in-progress": false },
      strategy: { "fail-fast": false, matrix: { shard: `\${{ fromJSON(needs.select.outputs.shards_${i}) }}` } },
      env: { STRATA_SHARD: "${{ matrix.shard }}", VERSION: "${{ needs.select.outputs.version }}", SHA: "${{ needs.select.outputs.sha }}", ...PULUMI_ENV },
      steps: [
        ...setupSteps(o, undefined, "${{ needs.select.outputs.sha }}"),
        { name: "Free disk space for CUDA layers", run: "sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /opt/hostedtoolcache/CodeQL\ndf -h /\n" },
        ...awsSteps(o, VARIABLES.pushRuntimes, 6 * 3600),
        ...registryLogin(o),
        { name: "Set up Docker Buildx", uses: ACTIONS.setupBuildx },
        { name: "Install Pulumi", uses: ACTIONS.pulumi },
        ...verifySteps(o, { SHARD_BASES: JSON.stringify(Object.fromEntries(shardList.map((sh) => [sh.name, sh.bases]))) }, [
          "# The bases this shard's runtimes build FROM, at the refs the root stack publishes (what the shard's program reads).",
          "BASES=\"$(printf '%s' \"$SHARD_BASES\" | jq -c --arg s \"$STRATA_SHARD\" '.[$s] // []')\"",
          'BASE_REFS="$(pulumi stack output --stack "$STRATA_STACK" baseRefs --json)"',
        ]),
        {
          name: "pulumi up (runtime shard stack)",
          run: sh([
            "set -euo pipefail",
            `shard="\${STRATA_STACK}${RUNTIME_SHARD_INFIX}\${STRATA_SHARD#runtimes-}"`,
            'pulumi stack select --create "$shard" --non-interactive',
            "# The shard gets the root's config (registry, release, strata:runtimeShardSize) and declares only its runtimes,",
            "# FROM the base refs the root stack publishes (its output baseRefs).",
            'pulumi config cp --stack "$STRATA_STACK" --dest "$shard"',
            'pulumi config rm --stack "$shard" strata:bases >/dev/null 2>&1 || true',
            'pulumi config rm --stack "$shard" strata:baseShards >/dev/null 2>&1 || true',
            'pulumi config rm --stack "$shard" strata:runtimes >/dev/null 2>&1 || true',
            'pulumi config set --stack "$shard" strata:shardOf "$STRATA_STACK"',
            'pulumi config set --stack "$shard" strata:runtimeShard "$STRATA_SHARD"',
            'pulumi config set --stack "$shard" --path strata:release.version "$VERSION"',
            'pulumi config set --stack "$shard" --path strata:release.sha "$SHA"',
            'pulumi up --stack "$shard" --yes --skip-preview --non-interactive',
            "count=\"$(pulumi stack output --stack \"$shard\" runtimes --json | jq length)\"",
            'echo "Runtime shard \\`$STRATA_SHARD\\` ($VERSION): $count runtime(s), stack $shard" >> "$GITHUB_STEP_SUMMARY"',
          ]),
        },
        { name: "The runtimes were built FROM the verified bases", run: builtFromVerifiedScript(`\${STRATA_STACK}${RUNTIME_SHARD_INFIX}\${STRATA_SHARD#runtimes-}`) },
        attestStep({ stack: `\${STRATA_STACK}${RUNTIME_SHARD_INFIX}\${STRATA_SHARD#runtimes-}`, only: "runtimes" }),
        ...signSteps(o, [`shard="\${STRATA_STACK}${RUNTIME_SHARD_INFIX}\${STRATA_SHARD#runtimes-}"`, "pulumi stack output --stack \"$shard\" runtimes --json | jq -r '.[].ref' >> sign-refs.txt"], false),
      ],
    };
  }
  const doc = runtimesDoc(o, {
    unit: "runtime shard",
    jobName: "Runtime shards to update",
    output: "shards",
    groups,
    stepName: "Release tags update every runtime shard; the default branch those a change touches",
    env: { SINCE: "${{ steps.since.outputs.since }}", REF_TYPE: "${{ github.ref_type }}", REF_NAME: "${{ github.ref_name }}", ALL_SHARDS: JSON.stringify(all) },
    select: [
      'if [ "$REF_TYPE" = tag ] || [ "$SINCE" = all ]; then',
      "  printf '%s' \"$ALL_SHARDS\" | jq -c 'sort_by(ltrimstr(\"runtimes-\") | tonumber)' > shards.json",
      "else",
      '  npx strata impact --json --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --base "$SINCE" > impact.json',
      "  jq -c '.shards.runtimes' impact.json > shards.json",
      "fi",
      ...shardOutputs("shards.json", "shards", groups, size, "runtime shards"),
    ],
    summary: `echo "### Runtime shards to update ($version): $total of ${all.length}" >> "$GITHUB_STEP_SUMMARY"`,
  }, jobs);
  return toYaml(
    header(o, `Builds runtime images in ${all.length} runtime shard stacks (${o.stack}${RUNTIME_SHARD_INFIX}<k>, at most ${o.runtimeShardSize} runtimes each) FROM the bases the root stack publishes, ${groups} job matrix(es) of at most ${size} shards.`),
    doc,
  );
}

function prCheckWorkflow(o: Resolved): string {
  const doc: Json = {
    name: "strata pull-request check",
    on: { pull_request: { branches: [o.defaultBranch] } },
    permissions: { contents: "read" },
    concurrency: { group: "strata-pr-${{ github.event.pull_request.number }}", "cancel-in-progress": true },
    env: { STRATA_STACK: o.stack, STRATA_MATRIX: o.matrix },
    jobs: {
      check: {
        name: "Matrix, workflows and impact",
        "runs-on": "ubuntu-latest",
        permissions: { contents: "read", ...(o.registryKind === "ecr" ? { "id-token": "write" } : {}) },
        steps: [
          ...setupSteps(o, 0),
          ...historyAccess(o),
          { name: "strata check", run: 'npx strata check --matrix "$STRATA_MATRIX"\n' },
          { name: "Upstream lock is current", run: 'npx strata lock --check --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX"\n' },
          { name: "Generated workflows are up to date", run: 'npx strata workflows --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --check\n' },
          {
            name: "strata impact: what this pull request rebuilds",
            env: { BASE_SHA: "${{ github.event.pull_request.base.sha }}", REGISTRY: `\${{ vars.${VARIABLES.registry} }}`, HISTORY: "${{ steps.history.outcome }}" },
            run: sh([
              "set -euo pipefail",
              "# The forecast reads the bases' build records from the registry; without access (a fork), it says so.",
              'if [ "$HISTORY" = success ] && npx strata impact --json --matrix "$STRATA_MATRIX" --base "$BASE_SHA" --stack "$STRATA_STACK" --history-registry "$REGISTRY" > impact.json; then :; else',
              '  npx strata impact --json --matrix "$STRATA_MATRIX" --base "$BASE_SHA" --stack "$STRATA_STACK" > impact.json',
              "fi",
              "{",
              "  echo '## strata: what this pull request rebuilds'",
              "  jq -r '\"**\\(.rebuild.bases | length) base(s)** and **\\(.rebuild.runtimes | length) runtime(s)**\"' impact.json",
              "  echo",
              "  jq -r '\"Forecast: \\(.forecast.headline)\"' impact.json",
              "  echo",
              "  jq -r 'if (.forecast.bases | length) > 0 then \"| base | forecast | basis | price |\\n| --- | --- | --- | --- |\" else empty end' impact.json",
              "  jq -r '.forecast.bases[] | \"| `\\(.name)` | \\(.duration // \"-\") | \\(.basis) | \\(.priceBasis) |\"' impact.json",
              "  echo",
              "  echo '| base | change | old tag | new tag | why |'",
              "  echo '| --- | --- | --- | --- | --- |'",
              "  jq -r '.bases[] | select(.change != \"unchanged\") | \"| `\\(.name)` | \\(.change) | \\(.oldTag // \"\") | \\(.newTag // \"\") | \\([.reasons[]? | .detail] | join(\"; \")) |\"' impact.json",
              "  echo",
              "  jq -r '\"Runtimes added: \\(.runtimes.added | length), removed: \\(.runtimes.removed | length), rebuilt: \\(.runtimes.rebuilt | length)\"' impact.json",
              "  echo",
              "  echo '<details><summary>Runtimes to rebuild</summary>'",
              "  echo",
              "  jq -r '.rebuild.runtimes[] | \"- `\\(.)`\"' impact.json",
              "  echo '</details>'",
              '} >> "$GITHUB_STEP_SUMMARY"',
            ]),
          },
        ],
      },
    },
  };
  return toYaml(header(o, "Shows which bases and runtimes a pull request would rebuild (job summary); no registry access."), doc);
}

/** Registry read access for the PR check's forecast: the read-only role (ECR) or the registry login (external). */
function historyAccess(o: Resolved): Json[] {
  if (o.registryKind === "ecr") {
    return [
      { ...(awsSteps(o, VARIABLES.readOnly)[0] as Record<string, Json>), id: "aws", "continue-on-error": true },
      { id: "history", name: "Log in to ECR (build history for the forecast)", if: "${{ steps.aws.outcome == 'success' }}", "continue-on-error": true, uses: ACTIONS.ecrLogin },
    ];
  }
  return [{ ...(registryLogin(o)[0] as Record<string, Json>), id: "history", "continue-on-error": true }];
}

/**
 * Base GC on a schedule: the bases open pull requests' matrices derive are listed first (from each open pull
 * request's head, offline from the registry's point of view), then `strata gc` deletes what nothing uses.
 */
function gcWorkflow(o: Resolved): string {
  const doc: Json = {
    name: "strata base gc",
    on: {
      schedule: [{ cron: o.gcSchedule }],
      workflow_dispatch: { inputs: { apply: { description: "Delete (otherwise a dry run)", required: false, type: "boolean", default: false } } },
    },
    permissions: {},
    concurrency: { group: `strata-gc-${o.stack}`, "cancel-in-progress": false },
    env: { STRATA_STACK: o.stack, STRATA_MATRIX: o.matrix },
    jobs: {
      gc: {
        name: "Delete base tags nothing uses",
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 60,
        permissions: { contents: "read", "pull-requests": "read", "id-token": "write" },
        steps: [
          ...setupSteps(o, 0),
          // ECR: the gc role, the only one that may delete images (and only bases and cache); external: the login.
          ...awsSteps(o, VARIABLES.gc),
          ...registryLogin(o),
          {
            name: "Bases of open pull requests",
            env: { GH_TOKEN: "${{ github.token }}" },
            run: sh([
              "set -euo pipefail",
              ": > in-use.txt",
              "for pr in $(gh pr list --state open --limit 500 --json number --jq '.[].number'); do",
              '  git fetch --quiet origin "pull/$pr/head:refs/strata-gc/pr-$pr"',
              '  git worktree add --quiet --detach "../pr-$pr" "refs/strata-gc/pr-$pr"',
              '  if [ -f "../pr-$pr/$STRATA_MATRIX" ] && npx strata check --matrix "../pr-$pr/$STRATA_MATRIX" --json > "pr-$pr.json"; then',
              `    jq -r '.bases[].tag' "pr-$pr.json" >> in-use.txt`,
              "  else",
              '    echo "::warning::pull request #$pr: its matrix does not load; its bases are not known (kept only by age)"',
              "  fi",
              '  git worktree remove --force "../pr-$pr"',
              "done",
              'echo "$(sort -u in-use.txt | wc -l) base tag(s) in use by open pull requests"',
            ]),
          },
          {
            name: "strata gc",
            env: { REGISTRY: `\${{ vars.${VARIABLES.registry} }}`, APPLY: "${{ github.event_name == 'schedule' || inputs.apply }}" },
            run: sh([
              "set -euo pipefail",
              `args=(--stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" --registry "$REGISTRY" --in-use in-use.txt --keep-releases ${o.gcKeepReleases} --min-age-days ${o.gcMinAgeDays})`,
              'if [ "$APPLY" = true ]; then args+=(--apply); fi',
              'npx strata gc "${args[@]}" | tee gc.txt',
              "{ echo '### strata base gc'; echo '```'; cat gc.txt; echo '```'; } >> \"$GITHUB_STEP_SUMMARY\"",
            ]),
          },
        ],
      },
    },
  };
  return toYaml(header(o, `Deletes base tags no current base, none of the last ${o.gcKeepReleases} releases and no open pull request uses, older than ${o.gcMinAgeDays} days.`), doc);
}

/**
 * The upstream lock refresh: `strata lock` on a schedule; when an upstream tag moved (a security re-publish), the
 * new lock goes to a branch and a pull request, whose PR check shows the bases it rebuilds. It only reads public
 * registries and writes to its own branch: contents and pull-requests write, nothing else.
 */
function lockRefreshWorkflow(o: Resolved): string {
  const lockFile = lockFileFor(o.matrix);
  const doc: Json = {
    name: "strata upstream lock refresh",
    on: { schedule: [{ cron: LOCK_REFRESH_SCHEDULE }], workflow_dispatch: {} },
    permissions: {},
    concurrency: { group: "strata-lock-refresh", "cancel-in-progress": false },
    env: { STRATA_STACK: o.stack, STRATA_MATRIX: o.matrix, STRATA_LOCK: lockFile },
    jobs: {
      refresh: {
        name: "Re-resolve the upstream images",
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 15,
        permissions: { contents: "write", "pull-requests": "write" },
        steps: [
          ...setupSteps(o),
          { name: "strata lock", run: sh(["set -euo pipefail", 'npx strata lock --stack "$STRATA_STACK" --matrix "$STRATA_MATRIX" | tee lock.txt']) },
          {
            name: "Open or update the pull request",
            env: { GH_TOKEN: `\${{ secrets.${LOCK_PR_TOKEN_SECRET} || github.token }}`, BRANCH: LOCK_REFRESH_BRANCH, BASE: o.defaultBranch },
            run: sh([
              "set -euo pipefail",
              'if git ls-files --error-unmatch -- "$STRATA_LOCK" > /dev/null 2>&1 && git diff --quiet -- "$STRATA_LOCK"; then',
              '  echo "$STRATA_LOCK is unchanged: no pull request"',
              "  exit 0",
              "fi",
              "gh auth setup-git",
              'git config user.name "github-actions[bot]"',
              'git config user.email "41898282+github-actions[bot]@users.noreply.github.com"',
              'git checkout -B "$BRANCH"',
              'git add -- "$STRATA_LOCK"',
              'git commit -q -m "strata lock: refresh upstream image digests"',
              'git push --force origin "HEAD:refs/heads/$BRANCH"',
              "{",
              "  echo 'Upstream images moved since the lock was last written (a re-published tag is often a security fix).'",
              "  echo 'Merging rebuilds the bases that start FROM them; the strata pull-request check lists which, and why.'",
              "  echo",
              "  echo '```'",
              "  cat lock.txt",
              "  echo '```'",
              "  echo",
              `  echo 'Opened by strata-lock-refresh.yml. Pull requests opened with the GITHUB_TOKEN start no pull_request workflows: set the secret ${LOCK_PR_TOKEN_SECRET} (a token with contents and pull-requests write) so this one runs the checks, or close and reopen it.'`,
              "} > body.md",
              'pr=$(gh pr list --head "$BRANCH" --base "$BASE" --state open --json number --jq \'.[0].number // empty\')',
              'if [ -n "$pr" ]; then',
              '  gh pr edit "$pr" --body-file body.md',
              "else",
              '  gh pr create --head "$BRANCH" --base "$BASE" --title "strata: refresh the upstream image lock" --body-file body.md',
              "fi",
            ]),
          },
        ],
      },
    },
  };
  return toYaml(header(o, `Re-resolves the upstream images of the matrix weekly (${LOCK_REFRESH_SCHEDULE} UTC) and opens a pull request when ${lockFile} changes.`), doc);
}

/** The workflow files (path → content) for a plan. Bad options are a WorkflowError saying what to change. */
export function generateWorkflows(plan: Pick<BuildPlan, "bases" | "runtimes">, opts: WorkflowOptions): Record<string, string> {
  const o = resolve(opts);
  return {
    [WORKFLOW_FILES.bases]: basesWorkflow(plan, o),
    [WORKFLOW_FILES.gc]: gcWorkflow(o),
    [WORKFLOW_FILES.lockRefresh]: lockRefreshWorkflow(o),
    [WORKFLOW_FILES.prCheck]: prCheckWorkflow(o),
    [WORKFLOW_FILES.runtimes]: runtimesWorkflow(plan, o),
  };
}

/** The pools of an enabled fleet; the default pool when the fleet is off or not configured. */
export function fleetPools(raw: unknown, where: string): readonly RunnerPool[] {
  if (raw === undefined) return DEFAULT_POOLS;
  const fleet = parseFleetConfig(raw, where);
  return fleet.enabled ? fleet.pools.map((p) => ({ name: p.name, labels: p.labels })) : DEFAULT_POOLS;
}
