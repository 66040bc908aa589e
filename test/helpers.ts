import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { MatrixError, type Problem } from "../matrix/errors.ts";

export const REPO = join(import.meta.dirname, "..");
export const FIXTURES = join(REPO, "examples", "localai");
/** The strata CLI, as users run it. */
export const BIN = join(REPO, "bin", "strata.mjs");

/** Runs the strata CLI in `cwd` (default the repository) with STRATA_DEBUG off; its exit code and output. */
export function strata(args: string[], cwd = REPO) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: "utf8", env: { ...process.env, STRATA_DEBUG: "" } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts that `text` carries no stack trace. */
export const noStackTrace = (text: string) => assert.doesNotMatch(text, /^\s+at .+:\d+:\d+\)?$/m, "no stack trace reaches the user");

/** A minimal base Dockerfile with the two stages the reference Dockerfile has. */
export const BASE_DOCKERFILE = `ARG CUDA_VERSION=12.6.3
FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-devel-ubuntu22.04 AS builder
ARG TORCH_VER
RUN echo build torch \${TORCH_VER} > /opt/built
FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-runtime-ubuntu22.04 AS base
COPY --from=builder /opt/built /opt/built
`;

export const RUNTIME_DOCKERFILE = `ARG BASE_IMAGE
FROM \${BASE_IMAGE} AS runtime
COPY . /app
`;

/** Writes files into a fresh temporary directory; returns its path. Removed by `cleanup`. */
export function project(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "strata-test-"));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A valid one-base, one-runtime project; `matrix` replaces strata.yaml. */
export function simpleProject(matrix?: string, extra: Record<string, string> = {}): string {
  return project({
    "strata.yaml": matrix ?? SIMPLE_MATRIX,
    "docker/Dockerfile.base": BASE_DOCKERFILE,
    "docker/Dockerfile.runtime": RUNTIME_DOCKERFILE,
    "app/requirements.txt": "numpy\n",
    ...extra,
  });
}

export const SIMPLE_MATRIX = `bases:
  - name: ampere
    context: app
    dockerfile: docker/Dockerfile.base
    target: base
    cuda: "12.6.3"
    args:
      TORCH_VER: 2.7.1+cu126
      TORCH_CUDA_SUFFIX: cu126
      CUDA_ARCH_LIST: "8.0;8.6"
runtimes:
  - name: app
    base: ampere
    context: app
    dockerfile: docker/Dockerfile.runtime
    target: runtime
`;

/** Runs `fn`, expects a MatrixError, and returns its problems. */
export function problemsOf(fn: () => unknown): Problem[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof MatrixError) return err.problems;
    throw err;
  }
  assert.fail("expected a MatrixError");
}

/** Asserts that exactly one problem matches `message` and sits at `line`:`col` (col optional). */
export function assertProblem(problems: Problem[], message: RegExp, line: number, col?: number): Problem {
  const hits = problems.filter((p) => message.test(p.message));
  assert.equal(hits.length, 1, `expected one problem matching ${message}, got:\n${problems.map((p) => `${p.line}:${p.col} ${p.message}`).join("\n")}`);
  assert.equal(hits[0].line, line, `line of '${hits[0].message}'`);
  if (col !== undefined) assert.equal(hits[0].col, col, `column of '${hits[0].message}'`);
  assert.ok(hits[0].fix.length > 10, "a problem says what to do");
  return hits[0];
}
