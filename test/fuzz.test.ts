/**
 * Property-based fuzzing of strata's inputs with fast-check: the shipped matrices, derive sources and stack files,
 * mutated (deleted, duplicated, retyped, reordered values; truncated text; injected YAML features), must each end
 * in exit 0, or exit 1 with a located message (file:line:col) -- never exit 3, a stack trace or a hang.
 * Most cases run the CLI in this process (cli/main.ts `main`) for speed; a watchdog thread kills the process with
 * the case's description if one case runs longer than CASE_TIMEOUT_MS. A few cases run as whole processes
 * with a heap limit, for the memory bound and the offline plan (the Pulumi runtime allows one program run per
 * process). Deterministic: seed STRATA_FUZZ_SEED (default below); fast-check prints the seed and the shrunk
 * counterexample on failure. STRATA_FUZZ_RUNS sets the number of in-process cases.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import fc from "fast-check";
import { parse, stringify } from "yaml";
import { main } from "../cli/main.ts";
import { cleanup, REPO } from "./helpers.ts";

const SEED = Number(process.env.STRATA_FUZZ_SEED ?? 20261206);
const RUNS = Number(process.env.STRATA_FUZZ_RUNS ?? 300);
const CASE_TIMEOUT_MS = 20_000;
const BIN = join(REPO, "bin", "strata.mjs");

/** A copy of the shipped inputs in a directory of its own, marked as a git work tree. */
const WORK = mkdtempSync(join(tmpdir(), "strata-fuzz-"));
after(() => cleanup(WORK));
const STACKS = readdirSync(REPO).filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f));
for (const f of ["strata.yaml", "Pulumi.yaml", ...STACKS]) cpSync(join(REPO, f), join(WORK, f));
for (const d of ["docker", "app", "examples/localai"]) cpSync(join(REPO, d), join(WORK, d), { recursive: true });
mkdirSync(join(WORK, ".git"));

/** The files mutated, and the command that reads each. */
const MATRICES = ["strata.yaml", "examples/localai/strata-master.yaml", "examples/localai/strata-pr9672.yaml"];
const SOURCES: Record<string, string> = {
  "examples/localai/backend-matrix-master-linux.json": "examples/localai/strata-master.yaml",
  "examples/localai/backend-matrix-pr9672-linux.json": "examples/localai/strata-pr9672.yaml",
};
const TARGETS = [...MATRICES, ...Object.keys(SOURCES), ...STACKS];
const ORIGINAL = Object.fromEntries(TARGETS.map((f) => [f, readFileSync(join(WORK, f), "utf8")]));

function commandFor(file: string): string[][] {
  if (MATRICES.includes(file)) return [["check", "--matrix", file]];
  if (file in SOURCES) return [["check", "--matrix", SOURCES[file]]];
  const stack = file.slice("Pulumi.".length, -".yaml".length);
  return [["check", "--stack", stack], ["bake", "--stack", stack, "--registry", "localhost:5000"]];
}

// ---- mutations ----

type Op =
  | { kind: "delete" | "duplicate" | "reorder"; at: number }
  | { kind: "retype"; at: number; value: unknown }
  | { kind: "truncate"; frac: number }
  | { kind: "inject"; at: number; feature: string }
  | { kind: "line"; at: number; how: "delete" | "duplicate" | "swap" | "indent" };

/** Values a field may be replaced with: other types, edge numbers, huge and hostile strings. */
const value: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 1e21, Infinity, -Infinity, NaN, 8.0, 12.6, "", " ", "8.0"),
  fc.constantFrom("../..", "../../etc/passwd", "/dev/zero", "/etc", ".", "..", "{name}", "{nope}", "-x", ".x", "a/b/c/d", "linux/amd64", "__proto__", "toString", "([a-z", "(a+)+$"),
  fc.string({ maxLength: 20 }),
  fc.constantFrom(5000, 200, 129).map((n) => "x".repeat(n)),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
  fc.constant(Array.from({ length: 40 }, (_, i) => `linux/a${i}`)),
);

/** YAML features injected as text at a line: anchors and aliases, tags, merge keys, documents, huge scalars. */
const FEATURES = [
  "x: &anchor { a: 1, b: [1, 2] }\ny: *anchor\n",
  "<<: *nowhere\n",
  "merged: { <<: { a: 1 } }\n",
  "---\nsecond: document\n",
  "%YAML 1.1\n---\n",
  "t: !!binary aGVsbG8=\n",
  "s: !!set { a, b }\n",
  "d: !!timestamp 2001-12-14\n",
  "c: !custom value\n",
  "n: !!int not-a-number\n",
  `big: "${"y".repeat(300_000)}"\n`,
  `huge: ${"z".repeat(1_200_000)}\n`,
  `deep: ${"[".repeat(3000)}${"]".repeat(3000)}\n`,
  ["a: &a [x, x, x, x, x, x, x, x, x]", ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(", ")}]`)].join("\n") + "\n",
  "\t tab: indented\n",
  "\uFEFFbom: true\n",
  "nul: \u0000\n",
  "key: value\r\n",
  "? [complex, key]\n: value\n",
  "dup: 1\ndup: 2\n",
  "num: 1e400\n",
  "long: 123456789012345678901234567890\n",
  "'quoted': \"unterminated\n",
  "  strata:matrix: 42\n",
  "  strata:matrix: examples/localai/strata-pr9672.yaml\n",
  "  strata:release: { sha: 1234567, version: [v1] }\n",
  "  strata:registry: { kind: external, address: 5 }\n",
  "  registry: ~\n",
  "  strata:registry:\n    secure: AAAA\n",
];

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constantFrom("delete" as const, "duplicate" as const, "reorder" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("retype" as const), at: fc.nat(), value }),
  fc.record({ kind: fc.constant("truncate" as const), frac: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant("inject" as const), at: fc.nat(), feature: fc.constantFrom(...FEATURES) }),
  fc.record({ kind: fc.constant("line" as const), at: fc.nat(), how: fc.constantFrom("delete" as const, "duplicate" as const, "swap" as const, "indent" as const) }),
);

interface Case {
  file: string;
  ops: Op[];
}
const caseArb: fc.Arbitrary<Case> = fc.record({ file: fc.constantFrom(...TARGETS), ops: fc.array(op, { minLength: 1, maxLength: 4 }) });

type Tree = unknown;
/** Every container in `tree` with each of its keys, in document order. */
function slots(tree: Tree): [Record<string, unknown> | unknown[], string | number][] {
  const out: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (node: unknown, depth: number) => {
    if (depth > 40 || node === null || typeof node !== "object") return;
    const entries = Array.isArray(node) ? node.map((v, i) => [i, v] as const) : Object.entries(node as object);
    for (const [k, v] of entries) {
      out.push([node as Record<string, unknown>, k]);
      walk(v, depth + 1);
    }
  };
  walk(tree, 0);
  return out;
}

function applyTreeOp(tree: Tree, o: Op): void {
  const all = slots(tree);
  if (all.length === 0 || !("at" in o)) return;
  const [parent, key] = all[o.at % all.length];
  const arr = Array.isArray(parent) ? parent : undefined;
  const obj = parent as Record<string, unknown>;
  switch (o.kind) {
    case "delete":
      if (arr) arr.splice(key as number, 1);
      else delete obj[key];
      return;
    case "duplicate":
      if (arr) arr.splice(key as number, 0, structuredClone(arr[key as number]));
      else obj[`${key}2`] = structuredClone(obj[key]);
      return;
    case "reorder": {
      const target = arr ?? obj[key];
      if (Array.isArray(target)) target.reverse();
      else if (target && typeof target === "object") {
        const entries = Object.entries(target).reverse();
        for (const [k] of entries) delete (target as Record<string, unknown>)[k];
        Object.assign(target, Object.fromEntries(entries));
      }
      return;
    }
    case "retype":
      if (arr) arr[key as number] = structuredClone(o.value);
      else obj[key] = structuredClone(o.value);
      return;
  }
}

function applyTextOp(text: string, o: Op): string {
  const lines = text.split("\n");
  const at = "at" in o ? o.at % Math.max(lines.length, 1) : 0;
  switch (o.kind) {
    case "truncate":
      return text.slice(0, Math.floor(text.length * o.frac));
    case "inject":
      return [...lines.slice(0, at), o.feature.trimEnd(), ...lines.slice(at)].join("\n");
    case "line":
      if (o.how === "delete") lines.splice(at, 1);
      else if (o.how === "duplicate") lines.splice(at, 0, lines[at]);
      else if (o.how === "swap" && at + 1 < lines.length) [lines[at], lines[at + 1]] = [lines[at + 1], lines[at]];
      else lines[at] = "  " + lines[at];
      return lines.join("\n");
    default:
      return text;
  }
}

/** The mutated text of a case's file: tree operations on the parsed value, then text operations. */
function mutate(c: Case): string {
  const json = c.file.endsWith(".json");
  const original = ORIGINAL[c.file];
  const treeOps = c.ops.filter((o) => ["delete", "duplicate", "reorder", "retype"].includes(o.kind));
  let text = original;
  if (treeOps.length > 0) {
    const tree = json ? JSON.parse(original) : parse(original);
    for (const o of treeOps) applyTreeOp(tree, o);
    text = json ? JSON.stringify(tree, null, 1) : stringify(tree);
  }
  for (const o of c.ops) text = applyTextOp(text, o);
  return text;
}

function describeCase(c: Case): string {
  return JSON.stringify({ file: c.file, ops: c.ops.map((o) => ("feature" in o ? { ...o, feature: o.feature.slice(0, 40) } : o)) });
}

// ---- outcome checks ----

const LOCATED = /^[^\s:][^:\n]*:\d+:\d+: error: .+\n {4}fix: .+/m;
const STACK_TRACE = /^\s+at .+:\d+:\d+\)?$/m;

function assertOutcome(what: string, code: number | null, stderr: string): void {
  assert.ok(code === 0 || code === 1, `${what}: exit ${code}\n${stderr.slice(0, 2000)}`);
  assert.doesNotMatch(stderr, /internal error/, `${what}: internal error\n${stderr.slice(0, 2000)}`);
  assert.doesNotMatch(stderr, STACK_TRACE, `${what}: a stack trace reached the user\n${stderr.slice(0, 2000)}`);
  if (code === 1) assert.match(stderr, LOCATED, `${what}: exit 1 without a file:line:col error\n${stderr.slice(0, 2000)}`);
}

/** Runs the CLI in this process, capturing what it writes; a throw is what bin/strata.mjs turns into exit 3. */
async function runInProcess(argv: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = "";
  const out = process.stdout.write;
  const err = process.stderr.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(argv);
    return { code, stderr };
  } catch (e) {
    return { code: 3, stderr: `${stderr}strata: internal error: ${(e as Error)?.stack ?? String(e)}` };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

/**
 * A thread that kills this process (after printing the case) when the main thread does not finish a case in
 * time: a synchronous hang cannot be interrupted from the thread that hangs.
 */
function watchdog() {
  const beat = new Int32Array(new SharedArrayBuffer(4));
  const label = new Uint8Array(new SharedArrayBuffer(8192));
  const worker = new Worker(
    `const { workerData } = require("node:worker_threads");
     const { beat, label, limit } = workerData;
     let last = -1, since = Date.now();
     setInterval(() => {
       const now = Atomics.load(beat, 0);
       if (now !== last) { last = now; since = Date.now(); return; }
       if (now % 2 === 1 && Date.now() - since > limit) {
         const text = Buffer.from(label).toString("utf8").replace(/\\0+$/, "");
         require("node:fs").writeSync(2, "fuzz: a case ran longer than " + limit + " ms (a hang): " + text + "\\n");
         process.kill(process.pid, "SIGKILL");
       }
     }, 250);`,
    { eval: true, workerData: { beat, label, limit: CASE_TIMEOUT_MS } },
  );
  worker.unref();
  return {
    start(text: string) {
      label.fill(0);
      label.set(Buffer.from(text).subarray(0, label.length));
      Atomics.add(beat, 0, 1); // odd: a case is running
    },
    end() {
      Atomics.add(beat, 0, 1);
    },
    stop: () => worker.terminate(),
  };
}

describe("fuzzing the shipped matrices and stack files", () => {
  test(`${RUNS} mutated inputs, in process: exit 0 or a located exit 1 (seed ${SEED})`, async (t) => {
    const cwd = process.cwd();
    process.chdir(WORK);
    const dog = watchdog();
    let cases = 0;
    const outcomes = { ok: 0, errors: 0 };
    const messages = new Map<string, number>();
    try {
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          cases++;
          writeFileSync(join(WORK, c.file), mutate(c));
          try {
            for (const argv of commandFor(c.file)) {
              dog.start(`${describeCase(c)} strata ${argv.join(" ")}`);
              const r = await runInProcess(argv);
              dog.end();
              assertOutcome(`strata ${argv.join(" ")} on ${describeCase(c)}`, r.code, r.stderr);
              if (r.code === 0) outcomes.ok++;
              else outcomes.errors++;
              const first = /: error: (.*)/.exec(r.stderr)?.[1]?.replace(/'[^']*'|\d+/g, "_").slice(0, 60);
              if (first) messages.set(first, (messages.get(first) ?? 0) + 1);
            }
          } finally {
            writeFileSync(join(WORK, c.file), ORIGINAL[c.file]);
          }
        }),
        { seed: SEED, numRuns: RUNS, includeErrorInReport: true },
      );
    } finally {
      process.chdir(cwd);
      await dog.stop();
    }
    assert.ok(cases >= RUNS, `ran ${cases} cases`);
    t.diagnostic(`${cases} cases: ${outcomes.ok} runs exit 0, ${outcomes.errors} exit 1 with ${messages.size} kinds of error`);
    if (process.env.STRATA_FUZZ_STATS) for (const [m, n] of [...messages].sort((a, b) => b[1] - a[1])) t.diagnostic(`${n} ${m}`);
    // The mutations must get past the parser both ways: valid mutants and many kinds of located error.
    assert.ok(outcomes.ok > RUNS / 20 && messages.size > 15, `too little variety: ${JSON.stringify(outcomes)}, ${messages.size} kinds of error`);
  });

  test("mutated inputs as whole processes: within a heap limit and a time bound, plan included", async () => {
    const samples = fc.sample(caseArb, { seed: SEED + 1, numRuns: 200 });
    const picks = [
      ...samples.filter((c) => STACKS.includes(c.file)).slice(0, 5).map((c) => ({ c, argv: ["plan", "--stack", c.file.slice(7, -5)] })),
      ...samples.filter((c) => !STACKS.includes(c.file)).slice(0, 3).map((c) => ({ c, argv: commandFor(c.file)[0] })),
    ];
    // Each run gets its own copy of the project, so runs can go two at a time.
    const runOne = async ({ c, argv }: { c: Case; argv: string[] }) => {
      const dir = mkdtempSync(join(tmpdir(), "strata-fuzz-proc-"));
      try {
        cpSync(WORK, dir, { recursive: true });
        writeFileSync(join(dir, c.file), mutate(c));
        const r = await spawnBounded([`--max-old-space-size=384`, BIN, ...argv], dir);
        assert.equal(r.signal, null, `strata ${argv.join(" ")} on ${describeCase(c)} was killed (${r.signal}): a hang or a crash`);
        assertOutcome(`strata ${argv.join(" ")} on ${describeCase(c)}`, r.code, r.stderr);
      } finally {
        cleanup(dir);
      }
    };
    for (let i = 0; i < picks.length; i += 2) await Promise.all(picks.slice(i, i + 2).map(runOne));
  });
});

function spawnBounded(args: string[], cwd: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, STRATA_DEBUG: "" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}
