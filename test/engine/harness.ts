// Real Docker engine for integration tests: containerd 1.7 + dockerd 26 (containerd image
// store) + buildx 0.13 from Debian trixie packages unpacked by .ci/engine-deps.sh into
// .cache/engine/root, and a distribution v2 registry (bookworm's docker-registry) on
// 127.0.0.1 (also alone: startRegistry), and trixie's cosign (COSIGN_BIN). Everything lives in
// a fresh temp dir; nothing listens on TCP except the registry.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, openSync, closeSync, readFileSync, realpathSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ENGINE_CACHE = process.env.STRATA_ENGINE_CACHE ?? join(REPO_ROOT, ".cache/engine");
const ROOT = join(ENGINE_CACHE, "root");
const BIN = {
  dockerd: join(ROOT, "usr/sbin/dockerd"),
  docker: join(ROOT, "usr/bin/docker"),
  containerd: join(ROOT, "usr/bin/containerd"),
  shim: join(ROOT, "usr/bin/containerd-shim-runc-v2"),
  buildx: join(ROOT, "usr/libexec/docker/cli-plugins/docker-buildx"),
  runc: "/usr/sbin/runc",
  registry: "/usr/bin/docker-registry",
  busybox: "/bin/busybox",
};

/** Name of the tiny OS image (static busybox) that every engine has loaded. */
export const TINY_IMAGE = "strata-test/tiny:1";

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Engine {
  /** "127.0.0.1:PORT" of the registry (plain HTTP). */
  registry: string;
  /** Environment for the engine's docker CLI / buildx (DOCKER_HOST, DOCKER_CONFIG, PATH, ...). */
  env: NodeJS.ProcessEnv;
  /** Name of the tiny local OS image (always present, also after wipeLocal()). */
  tinyImage: string;
  /** Versions of what is running, e.g. { dockerd: "26.1.5+dfsg1", containerd: ..., buildx: ..., registry: ... }. */
  versions: Record<string, string>;
  /** Milliseconds from startEngine() call until everything was ready (incl. tiny image). */
  startMs: number;
  /** The temp dir holding sockets, data roots and logs. */
  dir: string;
  /** Runs the engine's docker CLI. Never throws on a non-zero exit; see `code`. */
  docker(args: string[], opts?: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult>;
  /** Removes all local images and all build cache, then re-loads the tiny OS image (the stand-in for
   *  an OS image that any fresh CI runner could pull) from a `docker save` tarball, so its digest is unchanged. */
  wipeLocal(): Promise<void>;
  /** Last lines of the daemon logs, for error messages. */
  logs(lines?: number): string;
  /** Stops registry, dockerd and containerd (process-group kill), unmounts and removes the temp dir. */
  stop(): Promise<void>;
}

/** Says whether a real engine can be started here, and if not precisely why. */
export function engineAvailable(): { ok: boolean; why: string } {
  if (process.platform !== "linux") return { ok: false, why: `Docker engine harness needs Linux, this is ${process.platform}` };
  if (typeof process.getuid !== "function" || process.getuid() !== 0)
    return { ok: false, why: "Docker engine harness must run as root (dockerd/containerd need it)" };
  const missing: string[] = [];
  for (const [name, path] of Object.entries(BIN)) {
    try {
      accessSync(path, constants.X_OK);
    } catch {
      missing.push(`${name} (${path})`);
    }
  }
  if (missing.length) return { ok: false, why: `engine packages not installed: missing ${missing.join(", ")}; run .ci/engine-deps.sh` };
  let filesystems = "";
  try {
    filesystems = readFileSync("/proc/filesystems", "utf8");
  } catch {
    /* reported below */
  }
  if (!/\toverlay$/m.test(filesystems))
    return { ok: false, why: "kernel has no overlay filesystem (needed by containerd's overlayfs snapshotter); try `modprobe overlay`" };
  if (!existsSync("/sys/fs/cgroup")) return { ok: false, why: "no cgroup filesystem at /sys/fs/cgroup (runc needs cgroups)" };
  return { ok: true, why: `engine binaries found in ${ROOT}` };
}

// ---------------------------------------------------------------------------------------------

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
/** Last-resort cleanup if the test process exits without calling stop(). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const killAll = () => {
    for (const p of live) killGroup(p, "SIGKILL");
  };
  process.on("exit", killAll);
  // Daemons run in their own process groups, so a signal to the test's group does not reach them.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

function killGroup(p: ChildProcess, sig: NodeJS.Signals): void {
  if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  try {
    process.kill(-p.pid, sig);
  } catch {
    /* already gone */
  }
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

async function stopProcess(p: ChildProcess, graceMs: number): Promise<void> {
  if (exited(p)) return;
  const done = new Promise<void>((res) => p.once("exit", () => res()));
  killGroup(p, "SIGTERM");
  const timer = new Promise<"timeout">((res) => setTimeout(() => res("timeout"), graceMs).unref());
  if ((await Promise.race([done, timer])) === "timeout") {
    killGroup(p, "SIGKILL");
    await done;
  }
  live.delete(p);
}

/** Starts a daemon in its own process group with output to a log file. */
function daemon(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv): ChildProcess {
  const fd = openSync(logFile, "a");
  const p = spawn(cmd, args, { detached: true, stdio: ["ignore", fd, fd], env });
  closeSync(fd);
  live.add(p);
  p.on("exit", () => live.delete(p));
  return p;
}

function tail(file: string, lines: number): string {
  try {
    const all = readFileSync(file, "utf8").trimEnd().split("\n");
    return all.slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    live.add(p);
    let stdout = "";
    let stderr = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[harness] ${cmd} ${args.join(" ")} timed out after ${opts.timeoutMs} ms; killed`;
      killGroup(p, "SIGKILL");
    }, opts.timeoutMs ?? 300_000);
    p.on("error", (e) => {
      clearTimeout(timer);
      live.delete(p);
      rej(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      live.delete(p);
      res({ stdout, stderr, code: code ?? (signal ? 128 : 1) });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

function httpStatus(opts: { socketPath?: string; host?: string; port?: number; path: string }): Promise<number> {
  return new Promise((res) => {
    const req = request({ ...opts, method: "GET", timeout: 1000 }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    });
    req.on("error", () => res(0));
    req.on("timeout", () => {
      req.destroy();
      res(0);
    });
    req.end();
  });
}

async function waitFor(what: string, deadlineMs: number, proc: ChildProcess, log: string, ok: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (exited(proc)) throw new Error(`${what} exited (code ${proc.exitCode}, signal ${proc.signalCode}) during start-up:\n${tail(log, 30)}`);
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not ready after ${deadlineMs} ms:\n${tail(log, 30)}`);
}

function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const mp = line.split(" ")[4];
    if (mp && (mp === dir || mp.startsWith(dir + "/"))) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length); // deepest first
}

async function buildTinyRootfs(dir: string): Promise<void> {
  const bin = join(dir, "rootfs/bin");
  await mkdir(bin, { recursive: true });
  await mkdir(join(dir, "rootfs/tmp"), { recursive: true });
  await writeFile(join(bin, "busybox"), readFileSync(BIN.busybox), { mode: 0o755 });
  const list = await run(BIN.busybox, ["--list"]);
  if (list.code !== 0) throw new Error(`busybox --list failed: ${list.stderr}`);
  for (const applet of list.stdout.split("\n").map((s) => s.trim())) {
    if (applet && applet !== "busybox") await symlink("busybox", join(bin, applet));
  }
  await writeFile(join(dir, "Dockerfile"), 'FROM scratch\nCOPY rootfs/ /\nCMD ["/bin/sh"]\n');
}

/** Standard-library parts a small script (the GPU gate's smoke test) does not need; left out of the Python image. */
const PYTHON_SKIP = /^(test|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data|config-[^/]*|__pycache__|unittest|distutils|asyncio|email|xml|sqlite3|venv)(\/|$)/;

/**
 * Builds `tag`: the tiny image plus this machine's Debian python3 (interpreter, the shared libraries it links and
 * its standard library), and `extra` directories copied in (image path → host path). No PyPI or Docker Hub here:
 * this is how a test gets a Python interpreter into a container. Throws when /usr/bin/python3 is missing.
 */
export async function buildPythonImage(engine: Engine, tag: string, extra: Record<string, string> = {}): Promise<void> {
  if (!existsSync("/usr/bin/python3")) throw new Error("no /usr/bin/python3 on this machine (apt-get install python3-minimal)");
  const exe = realpathSync("/usr/bin/python3");
  const version = /python(3\.\d+)$/.exec(exe)?.[1];
  if (!version) throw new Error(`cannot tell the Python version of ${exe}`);
  const dir = await mkdtemp(join(engine.dir, "python-image-"));
  const root = join(dir, "rootfs");
  const copy = async (src: string) => {
    await mkdir(dirname(join(root, src)), { recursive: true });
    await cp(src, join(root, src), { dereference: true });
  };
  await copy(exe);
  await symlink(exe.split("/").pop()!, join(root, "usr/bin/python3"));
  const ldd = await run("ldd", [exe]);
  for (const m of ldd.stdout.matchAll(/(\/\S+\.so[.\d]*)/g)) await copy(m[1]);
  const stdlib = `/usr/lib/python${version}`;
  await cp(stdlib, join(root, stdlib), { recursive: true, filter: (src) => !PYTHON_SKIP.test(src.slice(stdlib.length + 1)) });
  for (const [dest, src] of Object.entries(extra)) await cp(src, join(root, dest), { recursive: true });
  await writeFile(join(dir, "Dockerfile"), `FROM ${TINY_IMAGE}\nCOPY rootfs/ /\n`);
  const r = await engine.docker(["buildx", "build", "--progress=plain", "--load", "-t", tag, dir], { timeoutMs: 240_000 });
  if (r.code !== 0) throw new Error(`building the Python image failed (exit ${r.code}):\n${r.stderr.slice(-3000)}`);
  await rm(dir, { recursive: true, force: true });
}

/** A distribution registry on 127.0.0.1 (free port, retried on a port race), storing under `dir/registry`. */
async function registryDaemon(dir: string, logFile: string, env: NodeJS.ProcessEnv): Promise<{ address: string; proc: ChildProcess }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const cfg = join(dir, `registry-${port}.yml`);
    await writeFile(
      cfg,
      [
        "version: 0.1",
        "log: { level: info, accesslog: { disabled: true } }",
        `storage: { filesystem: { rootdirectory: "${dir}/registry" }, delete: { enabled: true } }`,
        `http: { addr: "127.0.0.1:${port}", secret: "strata-test" }`,
        "",
      ].join("\n"),
    );
    const reg = daemon(BIN.registry, ["serve", cfg], logFile, env);
    try {
      await waitFor("docker-registry", 10_000, reg, logFile, async () => (await httpStatus({ host: "127.0.0.1", port, path: "/v2/" })) === 200);
      return { address: `127.0.0.1:${port}`, proc: reg };
    } catch (e) {
      await stopProcess(reg, 2000);
      if (attempt >= 3) throw e; // port race with another process: retry with a new port
    }
  }
}

/** cosign 2.5 from Debian trixie, unpacked by .ci/engine-deps.sh (the signing tests run it). */
export const COSIGN_BIN = join(ROOT, "usr/bin/cosign");

/** A loopback registry alone (no engine, no root needed): for tests that push through the registry API. */
export interface LoopbackRegistry {
  /** "127.0.0.1:PORT" (plain HTTP). */
  address: string;
  /** Last lines of the registry log. */
  logs(lines?: number): string;
  /** Stops the registry and removes its storage. */
  stop(): Promise<void>;
}

/** Says whether the registry and cosign binaries are here, and if not why (run .ci/engine-deps.sh). */
export function signingToolsAvailable(): { ok: boolean; why: string } {
  const missing = [BIN.registry, COSIGN_BIN, "/usr/bin/jq", "/usr/bin/bash"].filter((p) => {
    try {
      accessSync(p, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  return missing.length ? { ok: false, why: `missing ${missing.join(", ")}; run .ci/engine-deps.sh (as root)` } : { ok: true, why: "registry, cosign, jq and bash found" };
}

/** Starts a distribution registry on 127.0.0.1 in a fresh temp dir. */
export async function startRegistry(): Promise<LoopbackRegistry> {
  installExitHook();
  const dir = await mkdtemp(join(tmpdir(), "strata-registry-"));
  const log = join(dir, "registry.log");
  try {
    const reg = await registryDaemon(dir, log, process.env);
    return {
      address: reg.address,
      logs: (n = 40) => tail(log, n),
      stop: async () => {
        await stopProcess(reg.proc, 5000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Starts containerd + dockerd + registry in a fresh temp dir and loads the tiny OS image. */
/**
 * An engine for test `t`, stopped after it, and a work directory (removed after it unless STRATA_ENGINE_KEEP=1);
 * undefined, with `t` skipped saying why, only where no engine can start (CI runs .ci/engine-deps.sh first) or
 * `missing` names something else the test needs.
 */
export async function engineFor(t: TestContext, workPrefix: string, missing?: string): Promise<{ engine: Engine; work: string } | undefined> {
  const avail = engineAvailable();
  if (!avail.ok || missing) {
    // Skipped only where the engine packages (or `missing`) are not installed; CI installs them, so it runs there.
    t.skip(!avail.ok ? avail.why : missing);
    return undefined;
  }
  const engine = await startEngine();
  t.after(() => engine.stop());
  const work = await mkdtemp(join(tmpdir(), workPrefix));
  t.after(() => (process.env.STRATA_ENGINE_KEEP === "1" ? t.diagnostic(`kept ${work}`) : rm(work, { recursive: true, force: true })));
  return { engine, work };
}

export async function startEngine(): Promise<Engine> {
  const avail = engineAvailable();
  if (!avail.ok) throw new Error(`cannot start Docker engine: ${avail.why}`);
  installExitHook();
  const t0 = Date.now();
  const dir = await mkdtemp(join(tmpdir(), "strata-engine-"));
  const procs: ChildProcess[] = [];
  const logFiles = { containerd: join(dir, "containerd.log"), dockerd: join(dir, "dockerd.log"), registry: join(dir, "registry.log") };
  const logs = (n = 40) =>
    Object.entries(logFiles)
      .map(([k, f]) => `--- ${k} (${f}) ---\n${tail(f, n)}`)
      .join("\n");

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // reverse order: registry, dockerd, containerd
    for (const p of [...procs].reverse()) await stopProcess(p, 15_000);
    for (const mp of mountsUnder(dir)) await run("umount", ["-l", mp]);
    if (process.env.STRATA_ENGINE_KEEP === "1") {
      process.stderr.write(`[harness] STRATA_ENGINE_KEEP=1: leaving ${dir}\n`);
      return;
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };

  try {
    const daemonEnv: NodeJS.ProcessEnv = {
      ...process.env,
      // trixie binaries first; runc from bookworm's /usr/sbin
      PATH: `${join(ROOT, "usr/bin")}:${join(ROOT, "usr/sbin")}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin`,
    };

    // --- containerd ---
    const ctrSock = join(dir, "containerd.sock");
    await writeFile(
      join(dir, "containerd.toml"),
      [
        "version = 2",
        `root = "${dir}/containerd/root"`,
        `state = "${dir}/containerd/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        `  address = "${ctrSock}"`,
        "[ttrpc]",
        `  address = "${ctrSock}.ttrpc"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${dir}/containerd/opt"`,
        "",
      ].join("\n"),
    );
    const containerd = daemon(BIN.containerd, ["--config", join(dir, "containerd.toml")], logFiles.containerd, daemonEnv);
    procs.push(containerd);
    await waitFor("containerd", 20_000, containerd, logFiles.containerd, async () => existsSync(ctrSock));

    // --- dockerd ---
    const dockerSock = join(dir, "docker.sock");
    const daemonJson = {
      "data-root": join(dir, "docker"),
      "exec-root": join(dir, "exec"),
      pidfile: join(dir, "docker.pid"),
      hosts: [`unix://${dockerSock}`],
      containerd: ctrSock,
      features: { "containerd-snapshotter": true },
      // No firewall changes on the host. BuildKit's RUN steps need the default bridge to exist;
      // it gets a non-routed benchmarking range (RFC 2544) and no NAT, so builds have no network.
      iptables: false,
      ip6tables: false,
      "ip-masq": false,
      bip: "198.18.0.1/24",
      "default-address-pools": [{ base: "198.18.0.0/16", size: 24 }],
      "log-level": "info",
    };
    await writeFile(join(dir, "daemon.json"), JSON.stringify(daemonJson, null, 2));
    const dockerd = daemon(BIN.dockerd, ["--config-file", join(dir, "daemon.json")], logFiles.dockerd, daemonEnv);
    procs.push(dockerd);
    await waitFor("dockerd", 30_000, dockerd, logFiles.dockerd, async () => (await httpStatus({ socketPath: dockerSock, path: "/_ping" })) === 200);

    // --- registry ---
    const reg = await registryDaemon(dir, logFiles.registry, daemonEnv);
    procs.push(reg.proc);
    const registry = reg.address;

    // --- client environment ---
    const dockerConfig = join(dir, "docker-config");
    await mkdir(join(dockerConfig, "cli-plugins"), { recursive: true });
    await symlink(BIN.buildx, join(dockerConfig, "cli-plugins/docker-buildx"));
    await writeFile(join(dockerConfig, "config.json"), "{}\n");
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${join(ROOT, "usr/bin")}:${join(ROOT, "usr/sbin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      DOCKER_HOST: `unix://${dockerSock}`,
      DOCKER_CONFIG: dockerConfig,
      DOCKER_CONTEXT: "default",
      DOCKER_BUILDKIT: "1",
      BUILDX_BUILDER: "default",
      BUILDX_NO_DEFAULT_ATTESTATIONS: "1",
      DOCKER_CLI_HINTS: "false",
    };
    delete env.DOCKER_TLS_VERIFY;
    delete env.DOCKER_CERT_PATH;

    // BuildKit 0.13 race: when one bake pushes two targets that share a blob into one repository, one push may
    // PUT its manifest before the other's upload of the shared blob is committed, and the registry answers 400
    // "manifest blob unknown". Pushing again is what a user would do (the push is idempotent), so a build that
    // failed that way, and only that way, runs once more; a generated workflow pushes one target per job.
    const PUSH_RACE = /unexpected status from PUT request to \S+\/manifests\/\S+: 400 Bad Request/;
    const docker = async (args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) => {
      const go = () => run(BIN.docker, args, { cwd: opts.cwd, env: { ...env, ...opts.env }, timeoutMs: opts.timeoutMs });
      const r = await go();
      const raced = r.code !== 0 && args[0] === "buildx" && PUSH_RACE.test(r.stderr) && /manifest blob unknown/.test(tail(logFiles.registry, 400));
      if (!raced) return r;
      process.stderr.write(`[harness] docker ${args.slice(0, 2).join(" ")}: a concurrent push of a shared blob lost the race (registry: manifest blob unknown); pushing once more\n`);
      return go();
    };
    const must = async (args: string[], opts: { cwd?: string } = {}) => {
      const r = await docker(args, opts);
      if (r.code !== 0) throw new Error(`docker ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}\n${logs(15)}`);
      return r;
    };

    // --- tiny OS image: static busybox, FROM scratch; saved so wipeLocal() can restore the same digest ---
    const tinyDir = join(dir, "tiny");
    await buildTinyRootfs(tinyDir);
    await must(["buildx", "build", "--progress=plain", "--load", "-t", TINY_IMAGE, tinyDir]);
    const tinyTar = join(dir, "tiny.tar");
    await must(["image", "save", "-o", tinyTar, TINY_IMAGE]);

    const ver = await must(["version", "--format", "{{json .}}"]);
    const v = JSON.parse(ver.stdout) as { Server?: { Version?: string; Components?: { Name: string; Version: string }[] } };
    const versions: Record<string, string> = { dockerd: v.Server?.Version ?? "?" };
    for (const c of v.Server?.Components ?? []) if (c.Name === "containerd" || c.Name === "runc") versions[c.Name] = c.Version;
    versions.buildx = (await must(["buildx", "version"])).stdout.trim().split(/\s+/)[1] ?? "?";
    versions.registry = (await run(BIN.registry, ["--version"])).stdout.trim().split(/\s+/).pop() ?? "?";

    const wipeLocal = async () => {
      await must(["image", "prune", "-af"]);
      await must(["buildx", "prune", "-af"]);
      const left = (await must(["image", "ls", "-aq"])).stdout.trim();
      if (left) throw new Error(`wipeLocal: images left after prune: ${left}`);
      await must(["image", "load", "-i", tinyTar]);
    };

    return {
      registry,
      env,
      tinyImage: TINY_IMAGE,
      versions,
      startMs: Date.now() - t0,
      dir,
      docker,
      wipeLocal,
      logs,
      stop,
    };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    await stop().catch(() => undefined);
    throw new Error(`startEngine failed: ${msg}`);
  }
}
