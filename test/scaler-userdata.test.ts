import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { renderUserData, userDataTemplate, type UserDataVars } from "../scaler/userdata.ts";

const vars: UserDataVars = { REGION: "us-east-1", PARAM_PREFIX: "/strata/dev/jit/", MAX_RUNTIME_MINUTES: 180, RUNNER_VERSION: "2.330.0", RUNNER_USER: "runner" };
const hasShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

describe("renderUserData", () => {
  it("fills every placeholder and leaves none behind", () => {
    const s = renderUserData(vars);
    assert.doesNotMatch(s, /\{\{|\}\}/);
    assert.match(s, /^#!\/bin\/bash\n/);
    assert.ok(s.includes('REGION="us-east-1"'));
    assert.ok(s.includes('PARAM_PREFIX="/strata/dev/jit/"'));
    assert.ok(s.includes('MAX_RUNTIME_MINUTES="180"'));
    assert.ok(s.includes('RUNNER_VERSION="2.330.0"'));
    assert.ok(s.includes('RUNNER_USER="runner"'));
  });

  it("throws on a missing, unknown or unsafe variable", () => {
    const { RUNNER_USER: _omit, ...missing } = vars;
    assert.throws(() => renderUserData(missing as UserDataVars), /missing variable RUNNER_USER/);
    assert.throws(() => renderUserData({ ...vars, EXTRA: "x" } as UserDataVars), /unknown variable EXTRA/);
    assert.throws(() => renderUserData({ ...vars, REGION: 'us-east-1"; rm -rf /; "' }), /REGION must be/);
    assert.throws(() => renderUserData({ ...vars, PARAM_PREFIX: "/no/trailing" }), /PARAM_PREFIX/);
    assert.throws(() => renderUserData({ ...vars, MAX_RUNTIME_MINUTES: 0 }), /MAX_RUNTIME_MINUTES/);
    assert.throws(() => renderUserData({ ...vars, RUNNER_VERSION: "latest" }), /RUNNER_VERSION/);
  });

  it("throws on a template placeholder nobody defines, or a variable the template lacks", () => {
    assert.throws(() => renderUserData(vars, userDataTemplate() + "\necho {{TOKEN}}\n"), /unknown placeholder \{\{TOKEN\}\}/);
    assert.throws(() => renderUserData(vars, userDataTemplate().replace("{{RUNNER_USER}}", "runner")), /does not use \{\{RUNNER_USER\}\}/);
  });

  it("does the boot sequence in the safe order and carries no token", () => {
    const s = renderUserData(vars);
    const at = (needle: string) => {
      const i = s.indexOf(needle);
      assert.ok(i >= 0, `script contains ${needle}`);
      return i;
    };
    const watchdog = at('shutdown -h "+${MAX_RUNTIME_MINUTES}"');
    const imdsToken = at('-X PUT "${IMDS}/api/token"');
    const nvme = at("nvme-Amazon_EC2_NVMe_Instance_Storage_");
    const get = at("aws ssm get-parameter");
    const del = at("aws ssm delete-parameter");
    const run = at('./run.sh --jitconfig "${JIT_CONFIG}"');
    assert.ok(watchdog < imdsToken && imdsToken < nvme && nvme < get && get < del && del < run, "watchdog, IMDSv2, NVMe, read, delete, run");
    assert.ok(s.includes("--with-decryption"));
    assert.ok(s.includes("mount --bind \"${DATA_MOUNT}/docker\" /var/lib/docker"));
    assert.match(s, /runuser -u "\$\{RUNNER_USER\}" -- \.\/run\.sh/);
    assert.match(s, /trap terminate EXIT/);
    assert.doesNotMatch(s, /ghs_|ghp_|github_pat_|registration-token|--token/);
    assert.doesNotMatch(s, /169\.254\.169\.254\/latest\/meta-data\/instance-id"?\s*$/m, "no IMDSv1 call without token header");
  });

  it("passes bash -n", () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-ud-"));
    try {
      const f = join(dir, "user-data.sh");
      writeFileSync(f, renderUserData(vars));
      const r = spawnSync("bash", ["-n", f], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("passes shellcheck", { skip: hasShellcheck ? false : "shellcheck binary not found (apt-get install -y shellcheck); CI installs it" }, () => {
    const r = spawnSync("shellcheck", ["--shell=bash", "--severity=style", "-"], { input: renderUserData(vars), encoding: "utf8" });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    // and it does fail on a broken script, so a pass above means something
    const bad = spawnSync("shellcheck", ["--shell=bash", "-"], { input: renderUserData(vars).replace('"${NVME_DEVICES[@]}"', "${NVME_DEVICES[@]}"), encoding: "utf8" });
    assert.notEqual(bad.status, 0);
  });
});
