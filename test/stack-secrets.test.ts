import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { runProgram } from "../cli/program.ts";
import { plaintextSecretProblems, readStackFile } from "../cli/stack.ts";
import { MatrixError } from "../matrix/errors.ts";
import { SourceFile } from "../matrix/source.ts";
import { cleanup, REPO, simpleProject } from "./helpers.ts";

// A secret setting in plain text in Pulumi.<stack>.yaml is refused at its line, by the offline CLI and the program.
const BIN = join(REPO, "bin", "strata.mjs");
const dirs: string[] = [];
after(() => dirs.forEach(cleanup));
const project = (stackFile: string) => {
  const dir = simpleProject(undefined, { "Pulumi.prod.yaml": stackFile });
  dirs.push(dir);
  return dir;
};
const strata = (args: string[], cwd: string) => spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: "utf8", env: { ...process.env, STRATA_DEBUG: "" } });

const EXTERNAL = "config:\n  strata:registry:\n    kind: external\n    address: ghcr.io\n    username: bot\n";

describe("secrets in stack files", () => {
  test("a plaintext secret setting is a problem at its line, telling to use --secret", () => {
    const src = SourceFile.parse("Pulumi.prod.yaml", `${EXTERNAL}  strata:registryPassword: hunter2\n  githubAppPrivateKey: |\n    -----BEGIN RSA PRIVATE KEY-----\n`);
    const problems = plaintextSecretProblems(src);
    assert.deepEqual(problems.map((p) => [p.file, p.line]), [["Pulumi.prod.yaml", 6], ["Pulumi.prod.yaml", 7]]);
    assert.match(problems[0]!.message, /strata:registryPassword is a secret but is stored in plain text in Pulumi\.prod\.yaml/);
    assert.match(problems[0]!.fix, /pulumi config set --secret strata:registryPassword VALUE/);
    assert.match(problems[1]!.fix, /pulumi config set --secret strata:githubAppPrivateKey < app\.pem/);
    assert.deepEqual(plaintextSecretProblems(SourceFile.parse("Pulumi.prod.yaml", `${EXTERNAL}  strata:registryPassword:\n    secure: AAABAHZ\n`)), []);
  });

  test("readStackFile refuses it before anything runs; a secure: value still reads offline", () => {
    const bad = project(`${EXTERNAL}  strata:registryPassword: hunter2\n`);
    assert.throws(() => readStackFile("prod", bad), (e: Error) => e instanceof MatrixError && /registryPassword is a secret/.test(e.message));
    const good = project(`${EXTERNAL}  strata:registryPassword:\n    secure: AAABAHZ\n`);
    assert.deepEqual(readStackFile("prod", good).secretKeys, ["strata:registryPassword"]);
  });

  test("strata plan: exit 1 with file:line and the fix, no stack trace; secure: plans", () => {
    const r = strata(["plan", "--stack", "prod"], project(`${EXTERNAL}  strata:registryPassword: hunter2\n`));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Pulumi\.prod\.yaml:6:28: error: strata:registryPassword is a secret but is stored in plain text/);
    assert.match(r.stderr, /fix: encrypt it: pulumi config set --secret strata:registryPassword VALUE/);
    assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m);
    assert.equal(r.stdout, "");
    const ok = strata(["plan", "--stack", "prod", "--json"], project(`${EXTERNAL}  strata:registryPassword:\n    secure: AAABAHZ\n`));
    assert.equal(ok.status, 0, ok.stderr);
  });

  test("the program (pulumi up) applies the same rule to the stack file", async () => {
    const dir = project(`${EXTERNAL}  strata:registryPassword: hunter2\n`);
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      await assert.rejects(
        runProgram({ stack: "prod", config: { "strata:registry": { kind: "external", address: "ghcr.io", username: "bot" }, "strata:registryPassword": "hunter2" } }),
        (e: Error) => /Pulumi\.prod\.yaml:6:28: error: strata:registryPassword is a secret/.test(e.message) && /pulumi config set --secret strata:registryPassword/.test(e.message),
      );
    } finally {
      process.chdir(cwd);
    }
  });
});
