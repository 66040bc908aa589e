#!/usr/bin/env node
// The strata CLI runs from one JavaScript bundle of cli/main.ts (the Pulumi program included; the Pulumi SDKs stay
// packages) that esbuild writes to .cache/strata/ and rebuilds whenever a source it was built from changes:
// loading the TypeScript sources through tsx's loader costs more than `strata check` takes in all.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cacheDir = join(root, ".cache", "strata");
const bundlePath = join(cacheDir, "cli.mjs");
const inputsPath = join(cacheDir, "cli.inputs.json");

function isFresh() {
  if (!existsSync(bundlePath) || !existsSync(inputsPath)) return false;
  const built = statSync(bundlePath).mtimeMs;
  const inputs = JSON.parse(readFileSync(inputsPath, "utf8"));
  return [...inputs, "package-lock.json", "bin/strata.mjs"].every((f) => {
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
        // Modules find files beside them through import.meta.url (the scaler's entry points, the user-data
        // template): give each bundled source its own URL, not the bundle's.
        name: "module-urls",
        setup(b) {
          b.onLoad({ filter: /\.ts$/ }, (args) => {
            if (args.path.includes("node_modules")) return undefined;
            const source = readFileSync(args.path, "utf8");
            if (!source.includes("import.meta")) return undefined;
            const url = JSON.stringify(pathToFileURL(args.path).href);
            const dir = JSON.stringify(dirname(args.path));
            return { loader: "ts", contents: outsideStrings(outsideStrings(source, "import.meta.url", url), "import.meta.dirname", dir) };
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
