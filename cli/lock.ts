import { renameSync, rmSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { formatProblem, MatrixError } from "../matrix/errors.ts";
import { loadMatrix } from "../matrix/load.ts";
import { formatLock, lockStatus, parseImageRef, readLock, requiredImages, type LockFile } from "../matrix/lock.ts";
import { parseFlags } from "./args.ts";
import { credentialsFor, RegistryClient, RegistryError, resolveTag, type Credentials } from "./registry.ts";
import { readStackFile } from "./stack.ts";

export const LOCK_USAGE = `Usage:
  strata lock [--matrix PATH] [--stack NAME] [--check]

Resolves every upstream image the bases and runtimes start FROM (or COPY --from), and the Dockerfile frontend a
\`# syntax=\` line names, after build-arg substitution and per platform, to the digest its tag points to through
the registry API, and writes the lock beside the matrix (strata.yaml → strata.lock.json). Commit it: builds then
use the locked digests (named build contexts; BUILDKIT_SYNTAX for the frontend), and each base's identity covers
them, so an upstream re-publish is an ordinary, previewed base rebuild.

  --check       offline: exit 1 when the lock is missing or stale for the matrix (it lacks a ref or platform the
                matrix needs, or holds one no longer used); writes nothing
  --matrix PATH default: the stack's strata:matrix, else strata.yaml
  --stack NAME  stack whose Pulumi.<stack>.yaml names the matrix and the registry (default dev)

Registries are asked anonymously (a Bearer token from the registry's challenge, as Docker Hub and nvcr.io give),
or with the credentials \`docker login\` stored for that registry (auths, credHelpers, credsStore);
STRATA_REGISTRY_USERNAME/PASSWORD are sent only to the stack's own registry (strata:registry.address).

Exit status:
  0  the lock was written (or is unchanged); --check: the lock is current
  1  --check: the lock is missing or stale; a registry error (naming the image and the registry); an invalid
     matrix or lock file, or a FROM that gives no image reference
  2  usage error`;

/** Requests to registries in flight at once. */
const CONCURRENCY = 4;

/** `strata lock`: resolves and writes the lock, or with --check compares it with the matrix offline. */
export async function lockCommand(args: string[]): Promise<number> {
  const flags = parseFlags("lock", LOCK_USAGE, args, { matrix: { type: "string" }, stack: { type: "string" }, check: { type: "boolean" } });
  if (flags.exit !== undefined) return flags.exit;
  const v = flags.values;
  const { config } = readStackFile(v.stack ?? "dev");
  const matrix = v.matrix ?? (config["strata:matrix"] as string | undefined) ?? "strata.yaml";
  const stackRegistry = (config["strata:registry"] as { address?: string } | undefined)?.address;
  try {
    const plan = loadMatrix(matrix, { lock: false });
    const state = plan.lock!;
    if (state.problems.length > 0) {
      for (const p of state.problems) process.stderr.write(formatProblem(p) + "\n");
      process.stderr.write(`strata lock: ${state.problems.length} FROM line(s) give no image reference; nothing was ${v.check ? "checked" : "written"}\n`);
      return 1;
    }
    const required = requiredImages(plan);
    const fix = `run \`strata lock\` and commit ${state.file}`;
    if (v.check) {
      const lock = readLock(state.file);
      if (!lock) {
        if (required.size === 0) {
          process.stdout.write(`strata lock --check: ${matrix} uses no upstream image to lock\n`);
          return 0;
        }
        process.stderr.write(`strata lock --check: there is no lock file ${state.file} for ${matrix}; its ${required.size} upstream image(s) would be built by tag:\n`);
        for (const ref of required.keys()) process.stderr.write(`  not locked: ${ref}\n`);
        process.stderr.write(`  fix: ${fix}\n`);
        return 1;
      }
      const { missing, extra } = lockStatus(lock, required);
      if (missing.length + extra.length > 0) {
        process.stderr.write(`strata lock --check: ${state.file} is stale for ${matrix}:\n`);
        for (const m of missing) process.stderr.write(`  not locked: ${m}\n`);
        for (const e of extra) process.stderr.write(`  no longer used: ${e}\n`);
        process.stderr.write(`  fix: ${fix}\n`);
        return 1;
      }
      process.stdout.write(`strata lock --check: ${state.file} is current (${required.size} upstream image(s))\n`);
      return 0;
    }

    if (required.size === 0 && !existsSync(state.file)) {
      process.stdout.write(`strata lock: ${matrix} uses no upstream image to lock; nothing was written\n`);
      return 0;
    }
    const old = previousLock(state.file);
    const clients = new Map<string, RegistryClient>();
    const clientFor = (host: string) => {
      let c = clients.get(host);
      if (!c) clients.set(host, (c = new RegistryClient(host, upstreamCredentials(host, stackRegistry))));
      return c;
    };
    const refs = [...required.keys()];
    const images: LockFile["images"] = {};
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < refs.length) {
        const ref = refs[next++];
        const parsed = parseImageRef(ref)!;
        try {
          images[ref] = await resolveTag(clientFor(parsed.apiHost), parsed.repository, parsed.tag ?? "latest", required.get(ref)!, old?.images[ref]);
        } catch (err) {
          if (!(err instanceof RegistryError)) throw err;
          failures.push(`${ref}: ${err.message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, refs.length) }, worker));
    if (failures.length > 0) {
      for (const f of failures.sort()) process.stderr.write(`strata lock: ${f}\n`);
      process.stderr.write(`strata lock: ${failures.length} of ${refs.length} image(s) could not be resolved; ${state.file} was not written\n`);
      return 1;
    }
    const lock: LockFile = { version: 1, images };
    const text = formatLock(lock);
    const before = existsSync(state.file) ? readFileSync(state.file, "utf8") : undefined;
    if (before === text) {
      process.stdout.write(`strata lock: ${state.file} is unchanged (${refs.length} upstream image(s))\n`);
      return 0;
    }
    const tmp = `${state.file}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, text);
      renameSync(tmp, state.file);
    } finally {
      rmSync(tmp, { force: true });
    }
    process.stdout.write(`strata lock: wrote ${state.file} (${refs.length} upstream image(s))\n`);
    for (const line of changes(old, lock)) process.stdout.write(`  ${line}\n`);
    return 0;
  } catch (err) {
    if (err instanceof MatrixError) {
      process.stderr.write(err.message + "\n");
      process.stderr.write(`strata lock: ${err.problems.length} error(s); nothing was written\n`);
      return 1;
    }
    throw err;
  }
}

/** The lock as it is before `strata lock` rewrites it: a base for HEAD-only refreshes; ignored when unreadable. */
function previousLock(file: string): LockFile | undefined {
  try {
    return readLock(file);
  } catch (err) {
    if (err instanceof MatrixError) return undefined;
    throw err;
  }
}

/**
 * Credentials for an upstream registry: what `docker login` stored for it (Docker Hub's under its index address);
 * the stack's STRATA_REGISTRY_USERNAME/PASSWORD only for the stack's own registry, never sent anywhere else.
 */
function upstreamCredentials(host: string, stackRegistry: string | undefined): Credentials | undefined {
  const env = { ...process.env };
  if (host !== stackRegistry?.split("/")[0]) {
    delete env.STRATA_REGISTRY_USERNAME;
    delete env.STRATA_REGISTRY_PASSWORD;
  }
  return credentialsFor(host, env) ?? (host === "registry-1.docker.io" ? credentialsFor("index.docker.io/v1/", env) : undefined);
}

/** What changed from the previous lock, for the summary. */
function changes(old: LockFile | undefined, lock: LockFile): string[] {
  const short = (d: string) => d.slice(0, 7 + 12);
  const out: string[] = [];
  for (const [ref, entry] of Object.entries(lock.images).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const was = old?.images[ref];
    if (!was) out.push(`locked ${ref} at ${short(entry.digest)}`);
    else if (was.digest !== entry.digest) out.push(`re-published: ${ref}: ${short(was.digest)} → ${short(entry.digest)}`);
    else if (JSON.stringify(Object.keys(was.platforms).sort()) !== JSON.stringify(Object.keys(entry.platforms).sort())) out.push(`platforms of ${ref}: ${Object.keys(entry.platforms).sort().join(", ")}`);
  }
  for (const ref of Object.keys(old?.images ?? {}).sort()) if (!lock.images[ref]) out.push(`dropped ${ref} (no longer used)`);
  return out;
}
