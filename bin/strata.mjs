#!/usr/bin/env node
// The strata CLI runs from a JavaScript build of cli/main.ts (the Pulumi program included; the Pulumi SDKs stay
// packages) that esbuild writes to .cache/strata/ and rebuilds whenever a source it was built from changes:
// loading the TypeScript sources through tsx's loader costs more than `strata check` takes in all. The build is
// split at dynamic imports, so commands that only read the matrix never load the Pulumi SDK.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cacheDir = join(root, ".cache", "strata");
/** Names the current build directory; replaced atomically, so concurrent CLIs never see a half-written build. */
const currentFile = join(cacheDir, "current");

/** The current build's directory if it is newer than every source it was built from (and this file). */
function freshBuild() {
  if (!existsSync(currentFile)) return undefined;
  const dir = join(cacheDir, readFileSync(currentFile, "utf8").trim());
  const inputsFile = join(dir, "inputs.json");
  if (!existsSync(inputsFile)) return undefined;
  const built = statSync(inputsFile).mtimeMs;
  const inputs = JSON.parse(readFileSync(inputsFile, "utf8"));
  const fresh = [...inputs, "package-lock.json", "bin/strata.mjs"].every((f) => {
    const p = join(root, f);
    return existsSync(p) && statSync(p).mtimeMs <= built;
  });
  return fresh ? dir : undefined;
}

async function build() {
  const { build } = await import("esbuild");
  const name = `build-${Date.now()}-${process.pid}`;
  const dir = join(cacheDir, name);
  const result = await build({
    absWorkingDir: root,
    entryPoints: { main: "cli/main.ts" },
    bundle: true,
    splitting: true,
    platform: "node",
    target: "node20",
    format: "esm",
    outdir: dir,
    outExtension: { ".js": ".mjs" },
    metafile: true,
    logLevel: "error",
    external: ["@pulumi/*", "esbuild"],
    banner: { js: "import { createRequire as __strataRequire } from 'node:module'; const require = __strataRequire(import.meta.url);" },
    plugins: [
      {
        // Modules find files beside them through import.meta.url (the scaler's entry points, the user-data
        // template): give each bundled source its own URL, not the build's.
        name: "module-urls",
        setup(b) {
          b.onLoad({ filter: /\.ts$/ }, (args) => {
            if (args.path.includes("node_modules")) return undefined;
            const source = readFileSync(args.path, "utf8");
            if (!source.includes("import.meta")) return undefined;
            const url = JSON.stringify(pathToFileURL(args.path).href);
            const dirname_ = JSON.stringify(dirname(args.path));
            return { loader: "ts", contents: outsideStrings(outsideStrings(source, "import.meta.url", url), "import.meta.dirname", dirname_) };
          });
        },
      },
    ],
  });
  const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.includes("node_modules/"));
  writeFileSync(join(dir, "inputs.json"), JSON.stringify(inputs));
  writeFileSync(`${currentFile}.${process.pid}`, name);
  renameSync(`${currentFile}.${process.pid}`, currentFile);
  // Older builds may still be in use by a CLI started a moment ago: remove only those over a minute old.
  for (const old of readdirSync(cacheDir)) {
    const p = join(cacheDir, old);
    if (old.startsWith("build-") && old !== name && Date.now() - statSync(p).mtimeMs > 60_000) rmSync(p, { recursive: true, force: true });
  }
  return dir;
}

/** Replaces `token` with `value` where it is code, not inside a string on its line (as in a bundle banner). */
function outsideStrings(source, token, value) {
  return source
    .split("\n")
    .map((line) =>
      line.split(token).reduce((acc, part, i) => {
        if (i === 0) return part;
        const quotes = (acc.match(/['"`]/g) ?? []).length;
        return acc + (quotes % 2 === 0 ? value : token) + part;
      }, ""),
    )
    .join("\n");
}

mkdirSync(cacheDir, { recursive: true });
const dir = freshBuild() ?? (await build());
const { main } = await import(pathToFileURL(join(dir, "main.mjs")).href);

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
