/**
 * Every IAM policy and trust policy the program declares, simulated with @cloud-copilot/iam-simulate: the calls
 * strata's own parts make are allowed, strangers' calls are denied. One row per call; add a row with one line.
 * The table is printed into docs/security.md (STRATA_WRITE_DOCS=1 rewrites it; otherwise a difference fails).
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { cleanup, REPO, simpleProject } from "./helpers.ts";
import { ACCOUNT, AMI, declareProgram, judge, REGION, type Call, type Declared, type Verdict } from "./iam/harness.ts";

const STACK = "sim";
const POOL = "gpu-base-builder";
const REPOSITORY = "acme/models";
const dir = simpleProject();
let d: Declared;
before(async () => {
  d = await declareProgram(STACK, {
    "strata:matrix": join(dir, "strata.yaml"),
    "strata:registry": { kind: "ecr" },
    "strata:release": { version: "v1.2.3" },
    "strata:fleet": { enabled: true, runnerOwner: "acme" },
    "strata:githubAppId": "123",
    "strata:githubAppInstallationId": "456",
    "strata:githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    "strata:github": { repositories: [REPOSITORY] },
  }, ["strata:githubAppPrivateKey"]);
});
after(() => cleanup(dir));

interface Row extends Call {
  expect: Verdict;
  reason: string;
}

// ARNs of the things calls name.
const ec2 = (r: string) => `arn:aws:ec2:${REGION}:${ACCOUNT}:${r}`;
const SELF = "i-0aaaaaaaaaaaaaaa1";
const OTHER = "i-0bbbbbbbbbbbbbbb2";
const instance = (id: string) => ec2(`instance/${id}`);
const jit = (id: string) => `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/jit/${id}`;
const repo = (name: "bases" | "runtimes" | "cache") => `arn:aws:ecr:${REGION}:${ACCOUNT}:repository/strata/${name}`;
const logStream = (group: string, stream: string) => `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/strata/${STACK}/fleet/${group}:log-stream:${stream}`;
const secret = (name: string) => `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:fleet-${name}-AbCdEf`;
const role = (name: string) => `arn:aws:iam::${ACCOUNT}:role/${name}`;
const AMI_PARAMETER = `arn:aws:ssm:${REGION}::parameter/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id`;

/** The instance's own request context: IAM sets ec2:SourceInstanceARN for instance-profile credentials. */
const fromInstance = (extra: Record<string, string | string[]> = {}) => ({ "ec2:SourceInstanceARN": instance(SELF), ...extra });
const taggedFor = (owner: string) => fromInstance({ "ssm:resourceTag/strata:instance-arn": instance(owner) });
const pool = (extra: Record<string, string | string[]> = {}) => ({ "aws:ResourceTag/strata:pool": POOL, ...extra });

/** The `sub` GitHub puts in a job's token once strata customised the repository's subject claims. */
const sub = (context: string, file: string, ref: string, repository = REPOSITORY, workflowRepository = repository) =>
  `repo:${repository}:${context}:job_workflow_ref:${workflowRepository}/.github/workflows/${file}@${ref}`;
const token = (s: string, aud = "sts.amazonaws.com") => ({ "token.actions.githubusercontent.com:sub": s, "token.actions.githubusercontent.com:aud": aud });
const BASES = "strata-build-bases.yml";
const RUNTIMES = "strata-build-runtimes.yml";
const MAIN = "refs/heads/main";

function rows(d: Declared): Row[] {
  const template = ec2(`launch-template/${d.idOf("aws:ec2/launchTemplate:LaunchTemplate")}`);
  // IAM sets ec2:Region on every EC2 request.
  const launch = { "ec2:LaunchTemplate": template, "ec2:Region": REGION };
  const subnet = d.idOf("aws:ec2/subnet:Subnet", /runners-/);
  const sg = d.idOf("aws:ec2/securityGroup:SecurityGroup");
  const allow = (principal: string, action: string, resource: string, reason: string, context?: Row["context"]): Row => ({ principal, action, resource, context, expect: "allowed", reason });
  const deny = (principal: string, action: string, resource: string, reason: string, context?: Row["context"]): Row => ({ principal, action, resource, context, expect: "denied", reason });
  const assume = (principal: string, expect: Verdict, s: string, reason: string, aud?: string): Row => ({ principal, action: "sts:AssumeRoleWithWebIdentity", resource: role(principal), context: token(s, aud), expect, reason });
  return [
    // Runner instance (scaler/userdata.sh, the SSM agent, a log shipper).
    allow("fleet-instance", "ssm:GetParameter", jit(SELF), "reads its own JIT config (the parameter is tagged with its ARN)", taggedFor(SELF)),
    allow("fleet-instance", "ssm:DeleteParameter", jit(SELF), "deletes (claims) its own JIT config", taggedFor(SELF)),
    allow("fleet-instance", "logs:CreateLogStream", logStream("runners", SELF), "writes the fleet's runner logs", fromInstance()),
    allow("fleet-instance", "logs:PutLogEvents", logStream("runners", SELF), "writes the fleet's runner logs", fromInstance()),
    allow("fleet-instance", "ssm:UpdateInstanceInformation", "*", "Session Manager agent", fromInstance()),
    allow("fleet-instance", "ssmmessages:OpenDataChannel", "*", "Session Manager session", fromInstance()),
    deny("fleet-instance", "ssm:GetParameter", jit(OTHER), "reading another instance's JIT config", taggedFor(OTHER)),
    deny("fleet-instance", "ssm:DeleteParameter", jit(OTHER), "deleting another instance's JIT config", taggedFor(OTHER)),
    deny("fleet-instance", "ec2:TerminateInstances", instance(OTHER), "terminating another instance of its pool", fromInstance(pool())),
    deny("fleet-instance", "ec2:TerminateInstances", instance(SELF), "it ends by shutting down, which needs no permission", fromInstance(pool())),
    deny("fleet-instance", "ecr:PutImage", repo("bases"), "a job on the instance pushing a base", fromInstance()),
    deny("fleet-instance", "ecr:PutImage", repo("runtimes"), "a job on the instance pushing a runtime", fromInstance()),
    deny("fleet-instance", "ecr:PutImage", repo("cache"), "a job on the instance writing the build cache", fromInstance()),
    deny("fleet-instance", "ecr:GetAuthorizationToken", "*", "a registry login with the instance's credentials", fromInstance()),
    deny("fleet-instance", "secretsmanager:GetSecretValue", secret("github-app"), "reading the GitHub App key", fromInstance()),

    // Webhook scaler (scaler/aws.ts): launch from the fleet's template, hand out JIT configs, release lost races.
    allow("fleet-webhook", "ec2:RunInstances", ec2("instance/*"), "launches an instance from the pool's template", launch),
    allow("fleet-webhook", "ec2:RunInstances", template, "uses the pool's launch template", launch),
    allow("fleet-webhook", "ec2:RunInstances", `arn:aws:ec2:${REGION}::image/${AMI}`, "the pool's AMI", launch),
    allow("fleet-webhook", "ec2:RunInstances", ec2(`subnet/${subnet}`), "a fleet subnet", launch),
    allow("fleet-webhook", "ec2:RunInstances", ec2(`security-group/${sg}`), "the fleet's security group", launch),
    allow("fleet-webhook", "ec2:RunInstances", ec2("volume/*"), "the root volume it creates", launch),
    allow("fleet-webhook", "ec2:RunInstances", ec2("network-interface/*"), "the network interface it creates", launch),
    allow("fleet-webhook", "ec2:RunInstances", ec2("spot-instances-request/*"), "a spot request (spot pools; ec2:LaunchTemplate does not apply to it)", { "ec2:Region": REGION }),
    allow("fleet-webhook", "ec2:CreateTags", ec2("instance/*"), "tags the instance at launch", { "ec2:CreateAction": "RunInstances" }),
    allow("fleet-webhook", "iam:PassRole", role("fleet-instance"), "gives the instance its role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    allow("fleet-webhook", "ec2:DescribeInstances", "*", "counts the pool's instances"),
    allow("fleet-webhook", "ec2:TerminateInstances", instance(OTHER), "terminates a pool instance it launched in excess", pool()),
    allow("fleet-webhook", "ec2:DeleteTags", instance(OTHER), "releases the job tags of a pool instance", pool({ "aws:TagKeys": ["strata:job-id", "strata:delivery"] })),
    allow("fleet-webhook", "ssm:PutParameter", jit(SELF), "stores an instance's JIT config"),
    allow("fleet-webhook", "ssm:AddTagsToResource", jit(SELF), "tags the JIT config with the instance ARN"),
    allow("fleet-webhook", "ssm:DeleteParameter", jit(SELF), "withdraws a JIT config of a cancelled job"),
    allow("fleet-webhook", "secretsmanager:GetSecretValue", secret("webhook-secret"), "verifies deliveries"),
    allow("fleet-webhook", "secretsmanager:GetSecretValue", secret("github-app"), "mints JIT configs as the GitHub App"),
    allow("fleet-webhook", "logs:PutLogEvents", logStream("webhook", "x"), "its own logs"),
    deny("fleet-webhook", "ec2:RunInstances", ec2("instance/*"), "launching from another launch template", { "ec2:LaunchTemplate": ec2("launch-template/lt-0123456789abcdef0"), "ec2:Region": REGION }),
    deny("fleet-webhook", "ec2:RunInstances", ec2("instance/*"), "launching without a launch template", { "ec2:Region": REGION }),
    deny("fleet-webhook", "ec2:RunInstances", `arn:aws:ec2:${REGION}::image/ami-0fffffffffffffff0`, "launching another AMI", launch),
    deny("fleet-webhook", "ec2:RunInstances", ec2("subnet/subnet-0fffffffffffffff0"), "launching into another subnet", launch),
    deny("fleet-webhook", "ec2:RunInstances", ec2("security-group/sg-0fffffffffffffff0"), "launching with another security group", launch),
    deny("fleet-webhook", "iam:PassRole", role("admin"), "passing another role (another instance profile)", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-webhook", "iam:PassRole", role("fleet-instance"), "passing the instance role to another service", { "iam:PassedToService": "lambda.amazonaws.com" }),
    deny("fleet-webhook", "ec2:TerminateInstances", instance(OTHER), "terminating an instance outside the fleet's pools", { "aws:ResourceTag/strata:pool": "someone-else" }),
    deny("fleet-webhook", "ec2:DeleteTags", instance(OTHER), "removing the pool tag", pool({ "aws:TagKeys": ["strata:pool"] })),
    deny("fleet-webhook", "ec2:CreateTags", instance(OTHER), "re-tagging an existing instance"),
    deny("fleet-webhook", "ssm:PutParameter", `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/other`, "writing a parameter outside the JIT prefix"),

    // Housekeeping (scaler/housekeeping.ts over scaler/aws.ts): reap overdue instances and stale JIT configs.
    allow("fleet-housekeeping", "ec2:DescribeInstances", "*", "lists the pools' instances"),
    allow("fleet-housekeeping", "ec2:TerminateInstances", instance(OTHER), "reaps an overdue pool instance", pool()),
    allow("fleet-housekeeping", "ssm:GetParametersByPath", `arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/strata/${STACK}/jit`, "lists JIT configs"),
    allow("fleet-housekeeping", "ssm:DeleteParameter", jit(OTHER), "deletes a stale JIT config"),
    allow("fleet-housekeeping", "secretsmanager:GetSecretValue", secret("github-app"), "removes offline runners as the GitHub App"),
    allow("fleet-housekeeping", "logs:PutLogEvents", logStream("housekeeping", "x"), "its own logs"),
    deny("fleet-housekeeping", "ec2:RunInstances", ec2("instance/*"), "launching anything", launch),
    deny("fleet-housekeeping", "iam:PassRole", role("fleet-instance"), "passing a role", { "iam:PassedToService": "ec2.amazonaws.com" }),
    deny("fleet-housekeeping", "secretsmanager:GetSecretValue", secret("webhook-secret"), "reading the webhook secret"),
    deny("fleet-housekeeping", "ec2:TerminateInstances", instance(OTHER), "terminating an instance outside the pools", { "aws:ResourceTag/strata:pool": "someone-else" }),
    deny("fleet-housekeeping", "ssm:PutParameter", jit(OTHER), "writing a JIT config"),

    // Generated workflows, after configure-aws-credentials (strata-build-bases: build and publish jobs).
    allow("github-push-bases", "ecr:GetAuthorizationToken", "*", "amazon-ecr-login"),
    allow("github-push-bases", "ecr:InitiateLayerUpload", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:UploadLayerPart", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:CompleteLayerUpload", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:PutImage", repo("bases"), "pushes a base"),
    allow("github-push-bases", "ecr:PutImage", repo("cache"), "exports the build cache"),
    allow("github-push-bases", "ecr:BatchGetImage", repo("cache"), "imports the build cache"),
    allow("github-push-bases", "ssm:GetParameter", AMI_PARAMETER, "the root program reads the public GPU AMI parameter"),
    allow("github-push-bases", "ec2:DescribeImages", "*", "the root program reads the AMI's root device"),
    allow("github-push-bases", "ec2:DescribeAvailabilityZones", "*", "the root program picks the fleet's zones"),
    allow("github-push-bases", "ec2:DescribeInstanceTypeOfferings", "*", "the root program picks the fleet's zones"),
    deny("github-push-bases", "ecr:PutImage", repo("runtimes"), "the base role pushing a runtime"),
    deny("github-push-bases", "ssm:GetParameter", jit(SELF), "the base role reading a JIT config"),
    deny("github-push-bases", "ec2:RunInstances", ec2("instance/*"), "the base role launching an instance", launch),
    // strata-build-runtimes.
    allow("github-push-runtimes", "ecr:GetAuthorizationToken", "*", "amazon-ecr-login"),
    allow("github-push-runtimes", "ecr:PutImage", repo("runtimes"), "pushes a runtime"),
    allow("github-push-runtimes", "ecr:PutImage", repo("cache"), "exports the build cache"),
    allow("github-push-runtimes", "ecr:BatchGetImage", repo("bases"), "pulls the base it builds FROM"),
    allow("github-push-runtimes", "ecr:GetDownloadUrlForLayer", repo("bases"), "pulls the base it builds FROM"),
    deny("github-push-runtimes", "ecr:PutImage", repo("bases"), "the runtime role overwriting a base"),
    // Read-only (pull requests).
    allow("github-read-only", "ecr:BatchGetImage", repo("bases"), "pulls a base"),
    allow("github-read-only", "ecr:BatchGetImage", repo("runtimes"), "pulls a runtime"),
    deny("github-read-only", "ecr:PutImage", repo("bases"), "the read-only role pushing a base"),
    deny("github-read-only", "ecr:PutImage", repo("runtimes"), "the read-only role pushing a runtime"),
    deny("github-read-only", "ecr:InitiateLayerUpload", repo("cache"), "the read-only role writing the cache"),

    // Who may assume the GitHub roles (the token's sub in the customised format, aud sts.amazonaws.com).
    assume("github-push-bases", "allowed", sub(`ref:${MAIN}`, BASES, MAIN), "the base-build workflow on the default branch"),
    assume("github-push-bases", "denied", sub("pull_request", BASES, "refs/pull/7/merge"), "a pull request, even running the base workflow"),
    assume("github-push-bases", "denied", sub("ref:refs/heads/feature", BASES, "refs/heads/feature"), "another branch"),
    assume("github-push-bases", "denied", sub("ref:refs/heads/main-evil", BASES, "refs/heads/main-evil"), "a branch whose name starts with the default branch's"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, "evil.yml", MAIN), "another workflow file on the default branch"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, RUNTIMES, MAIN), "the runtime workflow"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, "acme/other"), "another repository of the organisation"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, "mallory/models"), "a fork (its own repository)"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN, REPOSITORY, "mallory/tools"), "a reusable workflow of another repository"),
    assume("github-push-bases", "denied", `repo:${REPOSITORY}:ref:${MAIN}`, "a token in the default subject format (customisation removed)"),
    assume("github-push-bases", "denied", sub(`ref:${MAIN}`, BASES, MAIN), "another audience", "https://github.com/acme"),
    assume("github-push-runtimes", "allowed", sub("ref:refs/tags/v1.2.3", RUNTIMES, "refs/tags/v1.2.3"), "the runtime workflow on a protected release tag"),
    assume("github-push-runtimes", "allowed", sub(`ref:${MAIN}`, RUNTIMES, MAIN), "the runtime workflow on the default branch (branch tags)"),
    assume("github-push-runtimes", "denied", sub("ref:refs/tags/release-1", RUNTIMES, "refs/tags/release-1"), "an unprotected tag"),
    assume("github-push-runtimes", "denied", sub("ref:refs/heads/feature", RUNTIMES, "refs/heads/feature"), "another branch"),
    assume("github-push-runtimes", "denied", sub("ref:refs/tags/v1.2.3", BASES, "refs/tags/v1.2.3"), "another workflow on a release tag"),
    assume("github-push-runtimes", "denied", sub("pull_request", RUNTIMES, "refs/pull/7/merge"), "a pull request"),
    assume("github-read-only", "allowed", sub("pull_request", "strata-pr-check.yml", "refs/pull/7/merge"), "a pull request's workflow (also from a fork)"),
    assume("github-read-only", "denied", sub("pull_request", "a.yml", "refs/heads/main", REPOSITORY, "mallory/tools"), "a pull request running another repository's workflow"),
    assume("github-read-only", "denied", sub("pull_request", "a.yml", "refs/pull/7/merge", "acme/other"), "another repository's pull request"),
  ];
}

describe("IAM simulation of every declared policy", () => {
  const verdicts: { row: Row; got: Verdict }[] = [];

  test("every row gets its expected answer", async () => {
    const failures: string[] = [];
    for (const row of rows(d)) {
      const got = await judge(d, row);
      verdicts.push({ row, got });
      if (got !== row.expect) failures.push(`${row.principal} ${row.action} ${row.resource}: expected ${row.expect}, got ${got} (${row.reason})`);
    }
    assert.deepEqual(failures, []);
    assert.ok(verdicts.some((v) => v.got === "allowed") && verdicts.some((v) => v.got === "denied"));
  });

  test("every AWS SDK command of the scaler's adapter has an allowed row for a scaler role", () => {
    const source = readFileSync(join(REPO, "scaler/aws.ts"), "utf8");
    const service = new Map<string, string>();
    for (const m of source.matchAll(/import\s*\{([^}]*)\}\s*from\s*"@aws-sdk\/client-([a-z0-9-]+)"/g)) {
      for (const name of m[1]!.split(",").map((s) => s.trim()).filter(Boolean)) service.set(name, m[2]!.replace(/-/g, ""));
    }
    const sent = [...source.matchAll(/new (\w+)Command\(/g)].map((m) => [`${m[1]}Command`, m[1]!] as const);
    const paged = [...source.matchAll(/paginate(\w+)\(/g)].map((m) => [`paginate${m[1]}`, m[1]!] as const);
    const actions = [...sent, ...paged].map(([name, op]) => `${service.get(name)}:${op}`);
    assert.ok(actions.length >= 6 && !actions.some((a) => a.startsWith("undefined")), actions.join(", "));
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && /^fleet-(webhook|housekeeping)$/.test(r.principal)).map((r) => r.action));
    assert.deepEqual(actions.filter((a) => !allowed.has(a)), [], "add an allowed row for each new call");
  });

  test("every AWS CLI call of the instance's user data has an allowed row for the instance role", () => {
    const script = readFileSync(join(REPO, "scaler/userdata.sh"), "utf8");
    const pascal = (op: string) => op.split("-").map((w) => w[0]!.toUpperCase() + w.slice(1)).join("");
    const actions = [...script.matchAll(/\baws ([a-z0-9]+) ([a-z-]+)/g)].map((m) => `${m[1]}:${pascal(m[2]!)}`);
    assert.ok(actions.length >= 2, actions.join(", "));
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && r.principal === "fleet-instance").map((r) => r.action));
    assert.deepEqual([...new Set(actions)].filter((a) => !allowed.has(a)), []);
  });

  test("every lookup the root program makes (the publish job re-runs it) is allowed for the base push role", () => {
    // Invoke token → the IAM action it needs; null: no permission needed (local, or sts:GetCallerIdentity).
    const needs: Record<string, string | null> = {
      "aws:index/getPartition:getPartition": null,
      "aws:index/getRegion:getRegion": null,
      "aws:index/getCallerIdentity:getCallerIdentity": null,
      "aws:ecr/getAuthorizationToken:getAuthorizationToken": "ecr:GetAuthorizationToken",
      "aws:ssm/getParameter:getParameter": "ssm:GetParameter",
      "aws:ec2/getAmi:getAmi": "ec2:DescribeImages",
      "aws:index/getAvailabilityZones:getAvailabilityZones": "ec2:DescribeAvailabilityZones",
      "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": "ec2:DescribeInstanceTypeOfferings",
      "aws:ec2/getVpc:getVpc": "ec2:DescribeVpcs",
    };
    const tokens = [...new Set(d.calls.map((c) => c.token))];
    assert.deepEqual(tokens.filter((t) => !(t in needs)), [], "map each new invoke to the IAM action it needs");
    const allowed = new Set(rows(d).filter((r) => r.expect === "allowed" && r.principal === "github-push-bases").map((r) => r.action));
    assert.deepEqual(tokens.map((t) => needs[t]).filter((a): a is string => a !== null && !allowed.has(a)), []);
  });

  test("every generated workflow that assumes a role has an allowed OIDC row for that role and workflow file", async () => {
    const { generateWorkflows } = await import("../workflows/generate.ts");
    const { loadMatrix } = await import("../matrix/load.ts");
    const { VARIABLES } = await import("../components/github.ts");
    const files = generateWorkflows(loadMatrix(join(dir, "strata.yaml")), { stack: STACK });
    const roleOf: Record<string, string> = { [VARIABLES.pushBases]: "github-push-bases", [VARIABLES.pushRuntimes]: "github-push-runtimes", [VARIABLES.readOnly]: "github-read-only" };
    const uses: [string, string][] = [];
    for (const [path, text] of Object.entries(files)) {
      const doc = parse(text) as { jobs: Record<string, { steps?: { with?: Record<string, unknown> }[] }> };
      for (const job of Object.values(doc.jobs)) {
        for (const step of job.steps ?? []) {
          const m = /vars\.(\w+)/.exec(String(step.with?.["role-to-assume"] ?? ""));
          if (m) uses.push([path.split("/").pop()!, roleOf[m[1]!]!]);
        }
      }
    }
    assert.ok(uses.length >= 2);
    const oidc = rows(d).filter((r) => r.action === "sts:AssumeRoleWithWebIdentity" && r.expect === "allowed");
    for (const [file, principal] of uses) {
      assert.ok(
        oidc.some((r) => r.principal === principal && String(r.context?.["token.actions.githubusercontent.com:sub"]).includes(`/.github/workflows/${file}@`)),
        `${file} assumes ${principal}: add an allowed row with its sub`,
      );
    }
  });

  test("docs/security.md prints the table (STRATA_WRITE_DOCS=1 rewrites it)", () => {
    assert.ok(verdicts.length > 0, "the simulation ran");
    const path = join(REPO, "docs/security.md");
    const current = readFileSync(path, "utf8");
    const start = "<!-- simulation table: generated by test/iam-simulation.test.ts -->";
    const end = "<!-- end of simulation table -->";
    const short = (s: string) => s.replace(`:${REGION}:${ACCOUNT}:`, "::").replace(/^arn:aws:/, "");
    const cell = (s: string) => s.replace(/\|/g, "\\|");
    const lines = [
      "| principal | call | on | context | result | why |",
      "| --- | --- | --- | --- | --- | --- |",
      ...verdicts.map(({ row, got }) => {
        const on = row.action === "sts:AssumeRoleWithWebIdentity" ? `sub \`${row.context!["token.actions.githubusercontent.com:sub"]}\`` : `\`${short(row.resource)}\``;
        const context = Object.entries(row.context ?? {})
          .filter(([k]) => k !== "token.actions.githubusercontent.com:sub" && !(k === "token.actions.githubusercontent.com:aud" && row.context![k] === "sts.amazonaws.com"))
          .map(([k, v]) => `\`${k}=${[v].flat().map((x) => short(String(x))).join(",")}\``)
          .join(" ");
        return `| ${row.principal} | \`${row.action}\` | ${cell(on)} | ${cell(context)} | ${got === "allowed" ? "allowed" : "**denied**"} | ${cell(row.reason)} |`;
      }),
    ];
    const i = current.indexOf(start);
    const j = current.indexOf(end);
    assert.ok(i >= 0 && j > i, `docs/security.md needs the markers ${start} and ${end}`);
    const wanted = `${current.slice(0, i + start.length)}\n${lines.join("\n")}\n${current.slice(j)}`;
    if (process.env.STRATA_WRITE_DOCS === "1") writeFileSync(path, wanted);
    else assert.equal(current, wanted, "docs/security.md is out of date: run STRATA_WRITE_DOCS=1 node --import tsx --test test/iam-simulation.test.ts");
  });
});
