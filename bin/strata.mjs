#!/usr/bin/env node
// The strata CLI. The commands that only read the matrix run from one JavaScript bundle of cli/main.ts that
// esbuild writes to .cache/strata/ and rebuilds whenever a source it was built from changes: loading TypeScript
// through tsx's loader costs more than such a command takes. `plan` runs the Pulumi program itself, which is
// loaded from its TypeScript sources through tsx, as `pulumi up` loads it.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cacheDir = join(root, ".cache", "strata");
const bundlePath = join(cacheDir, "cli.mjs");
const inputsPath = join(cacheDir, "cli.inputs.json");
/** Modules that are the Pulumi program or load it: never bundled, imported from source through tsx. */
const PROGRAM_MODULES = new Set(["program.ts"]);

function isFresh() {
  if (!existsSync(bundlePath) || !existsSync(inputsPath)) return false;
  const built = statSync(bundlePath).mtimeMs;
  const inputs = JSON.parse(readFileSync(inputsPath, "utf8"));
  return [...inputs, "package-lock.json"].every((f) => {
    const p = join(root, f);
    return existsSync(p) && statSync(p).mtimeMs <= built;
  });
}

async function buildBundle() {
  const { build } = await import("esbuild");
  const result = await build({
    absWorkingDir: root,
    entryPoints: ["cli/main.ts"],
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    write: false,
    outfile: bundlePath,
    metafile: true,
    logLevel: "error",
    external: ["@pulumi/*", "esbuild"],
    banner: { js: "import { createRequire as __strataRequire } from 'node:module'; const require = __strataRequire(import.meta.url);" },
    plugins: [
      {
        name: "program-from-source",
        setup(b) {
          b.onResolve({ filter: /\.ts$/ }, (args) => {
            const file = args.path.split("/").pop();
            if (!PROGRAM_MODULES.has(file)) return undefined;
            return { path: pathToFileURL(join(args.resolveDir, args.path)).href, external: true };
          });
        },
      },
    ],
  });
  mkdirSync(cacheDir, { recursive: true });
  // Write then rename, so that CLIs started at the same time never load a half-written bundle.
  const tmp = `${bundlePath}.${process.pid}.tmp`;
  writeFileSync(tmp, result.outputFiles[0].contents);
  writeFileSync(`${inputsPath}.${process.pid}.tmp`, JSON.stringify(Object.keys(result.metafile.inputs).filter((f) => !f.includes("node_modules/"))));
  renameSync(`${inputsPath}.${process.pid}.tmp`, inputsPath);
  renameSync(tmp, bundlePath);
}

if (process.argv[2] === "plan") {
  const { register } = await import("tsx/esm/api");
  register();
}
if (!isFresh()) await buildBundle();
const { main } = await import(pathToFileURL(bundlePath).href);

let code;
try {
  code = await main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`strata: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
  if (process.env.STRATA_DEBUG) process.stderr.write(`${err?.stack ?? ""}\n`);
  else process.stderr.write("(set STRATA_DEBUG=1 for the stack trace, and please report it)\n");
  code = 3;
}
// The Pulumi runtime may hold the event loop open after an offline plan; flush and leave.
process.stdout.write("", () => process.exit(code));
