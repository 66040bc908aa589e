import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { KNOWN_RUNNER_SHA256, renderUserData, userDataTemplate, type UserDataVars } from "../scaler/userdata.ts";
import { parseFleetConfig } from "../components/fleet/config.ts";

const SHA = "ab".repeat(32);
const vars: UserDataVars = { REGION: "us-east-1", PARAM_PREFIX: "/strata/dev/jit/", MAX_RUNTIME_MINUTES: 180, RUNNER_VERSION: "2.330.0", RUNNER_SHA256: SHA, RUNNER_USER: "runner" };

/** One shell function of the rendered script, by name, to run on its own. */
function shellFunction(script: string, name: string): string {
  const m = new RegExp(`^${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}\\n`, "m").exec(script);
  assert.ok(m, `the script defines ${name}()`);
  return m[0];
}
const LOG = 'log() { echo "strata: $*"; }\n';
const hasShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

describe("job-started hook", () => {
  for (const market of ["spot", "on-demand"]) {
    it(`opens the job log saying the runner is ${market}${market === "spot" ? " and what an interruption means" : ""}`, () => {
      const dir = mkdtempSync(join(tmpdir(), "strata-hook-"));
      try {
        const hook = join(dir, "hook.sh");
        const fn = shellFunction(renderUserData(vars), "write_job_started_hook");
        const w = spawnSync("bash", ["-c", `INSTANCE_ID=i-0abc; ${fn}write_job_started_hook "$1" "$2"`, "bash", hook, market], { encoding: "utf8" });
        assert.equal(w.status, 0, w.stderr);
        const r = spawnSync(hook, { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`runs on i-0abc, a ${market} instance`));
        assert.equal(/re-runs it once on an on-demand instance/.test(r.stdout), market === "spot");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
  it("is handed to the runner", () => {
    assert.match(renderUserData(vars), /ACTIONS_RUNNER_HOOK_JOB_STARTED="\$\{RUNNER_DIR\}\/strata-job-started\.sh" .*\.\/run\.sh/);
  });
});

describe("renderUserData", () => {
  it("fills every placeholder and leaves none behind", () => {
    const s = renderUserData(vars);
    assert.doesNotMatch(s, /\{\{|\}\}/);
    assert.match(s, /^#!\/bin\/bash\n/);
    assert.ok(s.includes('REGION="us-east-1"'));
    assert.ok(s.includes('PARAM_PREFIX="/strata/dev/jit/"'));
    assert.ok(s.includes('MAX_RUNTIME_MINUTES="180"'));
    assert.ok(s.includes('RUNNER_VERSION="2.330.0"'));
    assert.ok(s.includes(`RUNNER_SHA256="${SHA}"`));
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
    assert.throws(() => renderUserData({ ...vars, RUNNER_SHA256: "abc" }), /RUNNER_SHA256 must be a SHA-256/);
  });

  it("the runner checksum: the known one of the default version, else required", () => {
    const { RUNNER_SHA256: _none, ...unpinned } = vars;
    assert.throws(() => renderUserData(unpinned), /no sha256 is known for actions\/runner 2\.330\.0: set strata:fleet\.runnerSha256/);
    assert.ok(renderUserData({ ...unpinned, RUNNER_VERSION: "2.329.0" }).includes(`RUNNER_SHA256="${KNOWN_RUNNER_SHA256["2.329.0"]}"`));
    assert.throws(
      () => parseFleetConfig({ enabled: true, runnerOwner: "acme", runnerVersion: "2.330.0" }, "strata:fleet"),
      /strata:fleet\.runnerSha256: is required for runnerVersion 2\.330\.0/,
    );
    assert.doesNotThrow(() => parseFleetConfig({ enabled: true, runnerOwner: "acme", runnerVersion: "2.330.0", runnerSha256: SHA }, "strata:fleet"));
    assert.doesNotThrow(() => parseFleetConfig({ enabled: true, runnerOwner: "acme" }, "strata:fleet"), "the default version's checksum is known");
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
    const imdsToken = at('IMDS_TOKEN="$(curl');
    const nvme = at("nvme-Amazon_EC2_NVMe_Instance_Storage_");
    const get = at("aws ssm get-parameter");
    const del = at("aws ssm delete-parameter");
    const sum = at('verify_sha256 "${TARBALL}" "${RUNNER_SHA256}"');
    const extract = at('tar -xzf "${TARBALL}"');
    const run = at('ACTIONS_RUNNER_INPUT_JITCONFIG="${JIT_CONFIG}" runuser -u "${RUNNER_USER}" -- ./run.sh');
    assert.ok(watchdog < imdsToken && imdsToken < nvme && nvme < get && get < del && del < sum && sum < extract && extract < run, "watchdog, IMDSv2, NVMe, read, delete, verify, extract, run");
    assert.ok(s.indexOf("watch_spot_interruption &") > imdsToken && s.indexOf("watch_spot_interruption &") < run, "the spot watcher runs while the job does");
    // The JIT config never reaches a command line: only shell assignments and the runner's environment carry it.
    assert.doesNotMatch(s, /--jitconfig/);
    for (const use of s.matchAll(/\$\{JIT_CONFIG\}/g)) {
      const line = s.slice(s.lastIndexOf("\n", use.index) + 1, s.indexOf("\n", use.index));
      assert.match(line, /JIT_CONFIG="\$\(aws ssm get-parameter|ACTIONS_RUNNER_INPUT_JITCONFIG="\$\{JIT_CONFIG\}" runuser|-n "\$\{JIT_CONFIG\}"|-z "\$\{JIT_CONFIG\}"|"\$\{JIT_CONFIG\}" != "None"/, line);
    }
    assert.ok(s.includes("--with-decryption"));
    assert.ok(s.includes("mount --bind \"${DATA_MOUNT}/docker\" /var/lib/docker"));
    assert.match(s, /runuser -u "\$\{RUNNER_USER\}" -- \.\/run\.sh/);
    assert.match(s, /trap terminate EXIT/);
    assert.doesNotMatch(s, /ghs_|ghp_|github_pat_|registration-token|--token/);
    assert.doesNotMatch(s, /169\.254\.169\.254\/latest\/meta-data\/instance-id"?\s*$/m, "no IMDSv1 call without token header");
  });

  it("verify_sha256 accepts the pinned package and refuses any other", () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-ud-"));
    try {
      const file = join(dir, "actions-runner.tar.gz");
      writeFileSync(file, "runner package bytes");
      const good = createHash("sha256").update("runner package bytes").digest("hex");
      const fn = LOG + shellFunction(renderUserData(vars), "verify_sha256");
      const ok = spawnSync("bash", ["-c", `${fn}verify_sha256 "$1" "$2"`, "bash", file, good], { encoding: "utf8" });
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      const bad = spawnSync("bash", ["-c", `${fn}verify_sha256 "$1" "$2"`, "bash", file, "0".repeat(64)], { encoding: "utf8" });
      assert.equal(bad.status, 1);
      assert.match(bad.stdout, new RegExp(`sha256 of .* is ${good}, expected 0{64}: refusing to use it`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the spot watcher reports an interruption notice from IMDS (IMDS faked on loopback)", async () => {
    let polls = 0;
    const server = createServer((req, res) => {
      if (req.method === "PUT" && req.url === "/latest/api/token") return void res.end("imds-token");
      if (req.url === "/latest/meta-data/spot/instance-action" && req.headers["x-aws-ec2-metadata-token"] === "imds-token") {
        polls++;
        if (polls < 3) return void res.writeHead(404).end();
        return void res.end('{"action":"terminate","time":"2026-12-06T21:00:00Z"}');
      }
      res.writeHead(400).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const port = (server.address() as { port: number }).port;
      const fn = LOG + shellFunction(renderUserData(vars), "watch_spot_interruption");
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn("bash", ["-c", `IMDS=http://127.0.0.1:${port}/latest SPOT_POLL_SECONDS=0.1 INSTANCE_ID=i-0abc; ${fn}watch_spot_interruption`], { stdio: ["ignore", "pipe", "inherit"] });
        let text = "";
        const timer = setTimeout(() => { child.kill(); reject(new Error(`watcher did not report: ${text}`)); }, 10_000);
        child.stdout.on("data", (d) => (text += d));
        child.on("exit", (code) => { clearTimeout(timer); code === 0 ? resolve(text) : reject(new Error(`exit ${code}: ${text}`)); });
      });
      assert.equal(polls, 3);
      assert.match(out, /SPOT INTERRUPTION: instance i-0abc is being interrupted by EC2 \(\{"action":"terminate","time":"2026-12-06T21:00:00Z"\}\)/);
    } finally {
      server.close();
    }
  });

  const asRoot = process.getuid?.() === 0 && spawnSync("runuser", ["--version"]).status === 0;
  it("hands the JIT config to the runner in its environment, never on a command line", { skip: asRoot ? false : "needs root and runuser" }, () => {
    const dir = mkdtempSync(join(tmpdir(), "strata-ud-"));
    try {
      chmodSync(dir, 0o755);
      writeFileSync(join(dir, "run.sh"), '#!/bin/bash\necho "env=${ACTIONS_RUNNER_INPUT_JITCONFIG}"\necho "args=$*"\ntr "\\0" " " < /proc/$$/cmdline\n', { mode: 0o755 });
      const script = renderUserData(vars);
      const line = script.split("\n").find((l) => l.includes("runuser -u"))!;
      const r = spawnSync("bash", ["-c", `JIT_CONFIG=c2VjcmV0LWppdA==; RUNNER_USER=nobody; cd "$1"; ${line}`, "bash", dir], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^env=c2VjcmV0LWppdA==$/m, "the runner gets the config from ACTIONS_RUNNER_INPUT_JITCONFIG");
      assert.equal(r.stdout.split("\n").filter((l) => l.includes("c2VjcmV0LWppdA==")).length, 1, "and nowhere else: not in its arguments or command line");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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
