import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadMatrix } from "../matrix/load.ts";
import { FIXTURES, REPO, SIMPLE_MATRIX, assertProblem, cleanup, problemsOf, simpleProject } from "./helpers.ts";

const dirs: string[] = [];
after(() => dirs.forEach(cleanup));
/** Loads a matrix text in a fresh valid project and returns its problems. */
function problemsFor(matrix: string, extra: Record<string, string> = {}) {
  const dir = simpleProject(matrix, extra);
  dirs.push(dir);
  return problemsOf(() => loadMatrix(join(dir, "strata.yaml")));
}
function load(matrix: string, extra: Record<string, string> = {}) {
  const dir = simpleProject(matrix, extra);
  dirs.push(dir);
  return loadMatrix(join(dir, "strata.yaml"));
}

describe("the default matrix", () => {
  const plan = loadMatrix(join(REPO, "strata.yaml"));

  test("declares turing, ampere and hopper with the build args of the real setup", () => {
    const args = Object.fromEntries(plan.bases.map((b) => [b.name, b.args]));
    assert.deepEqual(Object.keys(args), ["turing", "ampere", "hopper"]);
    assert.equal(args.turing.CUDA_ARCH_LIST, "7.5");
    assert.equal(args.turing.TORCH_VER, "2.7.1+cu126");
    assert.equal(args.turing.TORCH_CHANNEL, "stable");
    assert.equal(args.turing.FA_VER, "");
    assert.equal(args.ampere.CUDA_ARCH_LIST, "8.0;8.6");
    assert.equal(args.ampere.TORCH_VER, "2.7.1+cu126");
    assert.equal(args.ampere.FA_VER, "2.7.4.post1");
    assert.equal(args.hopper.CUDA_ARCH_LIST, "9.0");
    assert.equal(args.hopper.TORCH_CHANNEL, "nightly");
    assert.equal(args.hopper.TORCH_CUDA_SUFFIX, "cu128");
    for (const a of Object.values(args)) assert.ok(a.MAX_JOBS && a.TORCH_CUDA_SUFFIX);
  });

  test("passes each base's CUDA version to the build, so the CUDA image tag follows the matrix", () => {
    assert.deepEqual(plan.bases.map((b) => b.args.CUDA_VERSION), ["12.6.3", "12.6.3", "12.8.1"]);
  });

  test("builds the base stage and one runtime per base, FROM it", () => {
    assert.ok(plan.bases.every((b) => b.target === "base"));
    assert.deepEqual(plan.runtimes.map((r) => [r.name, r.base, r.target]), [
      ["turing", "turing", "runtime"],
      ["ampere", "ampere", "runtime"],
      ["hopper", "hopper", "runtime"],
    ]);
    assert.deepEqual(plan.bases.map((b) => b.consumers), [["turing"], ["ampere"], ["hopper"]]);
  });

  test("tags bases with a readable prefix and a 12-digit identity hash", () => {
    for (const b of plan.bases) assert.match(b.tag, new RegExp(`^${b.name}-[0-9a-f]{12}$`));
    assert.equal(new Set(plan.bases.map((b) => b.tag)).size, 3);
  });

  test("lets the base see only the dependency list the app also declares", () => {
    for (const b of plan.bases) assert.deepEqual(Object.keys(b.inputs.contextFiles), ["requirements.txt"]);
  });
});

describe("consumer-derived matrices (LocalAI fixtures)", () => {
  test("the 234-entry matrix reduces to 29 bases, every consumer annotated with its base", () => {
    const plan = loadMatrix(join(FIXTURES, "strata-pr9672.yaml"));
    assert.equal(plan.runtimes.length, 234);
    assert.equal(plan.bases.length, 29);
    const names = new Set(plan.bases.map((b) => b.name));
    assert.ok(plan.runtimes.every((r) => names.has(r.base)));
    assert.equal(plan.bases.reduce((n, b) => n + b.consumers.length, 0), 234);
    const cpp = plan.bases.filter((b) => b.key?.language === "cpp");
    assert.ok(cpp.length > 0, "the three C++ Dockerfiles count as one language");
    assert.ok(!plan.bases.some((b) => ["llama-cpp", "turboquant", "ik-llama-cpp"].includes(b.key?.language ?? "")));
  });

  test("a base's platforms are the union of its consumers' platforms", () => {
    const plan = loadMatrix(join(FIXTURES, "strata-pr9672.yaml"));
    for (const b of plan.bases) {
      const union = new Set(plan.runtimes.filter((r) => r.base === b.name).flatMap((r) => r.platforms));
      assert.deepEqual(b.platforms, [...union].sort());
    }
    const cpuPython = plan.bases.find((b) => b.name === "python-cpu-2404-ubuntu-24.04")!;
    assert.deepEqual(cpuPython.platforms, ["linux/amd64", "linux/arm64"]);
  });

  test("the 457-entry matrix (entries split per platform) derives without error", () => {
    const plan = loadMatrix(join(FIXTURES, "strata-master.yaml"));
    assert.equal(plan.runtimes.length, 457);
    assert.equal(new Set(plan.runtimes.map((r) => r.name)).size, 457);
    assert.equal(plan.bases.length, 45);
  });

  test("a collision names both consumers and the field", () => {
    const problems = problemsFor(
      `derive:
  source: backend-matrix-pr9672-linux.json
  fields:
    name: tag-suffix
    language: { field: dockerfile, pattern: 'Dockerfile\\.([a-z0-9-]+)$', map: { llama-cpp: cpp, ik-llama-cpp: cpp, turboquant: cpp } }
    buildType: { field: build-type, default: cpu }
    cudaMajor: cuda-major-version
    cudaMinor: cuda-minor-version
    ubuntu: ubuntu-version
    osImage: base-image
    skipDrivers: skip-drivers
    dockerfile: dockerfile
  key: [language, buildType, cudaMajor, cudaMinor, ubuntu, osImage]
  mustAgree: [skipDrivers]
  base:
    dockerfile: docker/Dockerfile.base
    context: app
  runtime:
    dockerfile: docker/Dockerfile.runtime
    context: app
`,
      { "backend-matrix-pr9672-linux.json": readFileSync(join(FIXTURES, "backend-matrix-pr9672-linux.json"), "utf8") },
    );
    assert.equal(problems.length, 1);
    const [p] = problems;
    assert.match(p.message, /key collision: consumers '[a-z0-9-]+' \(.*backend-matrix-pr9672-linux\.json:\d+\) and '[a-z0-9-]+' both derive base '[a-z0-9.-]+' but disagree on 'skipDrivers' \('(true|false)' vs '(true|false)'\)/);
    assert.match(p.file, /backend-matrix-pr9672-linux\.json$/);
    assert.ok(p.line > 1);
  });

  test("a field the base template reads must agree among consumers even when not declared", () => {
    const problems = problemsFor(`derive:
  entries:
    - { name: a, lang: python, flavour: x }
    - { name: b, lang: python, flavour: y }
  fields: { name: name, lang: lang, flavour: flavour }
  key: [lang]
  base:
    dockerfile: docker/Dockerfile.base
    context: app
    args: { FLAVOUR: "{flavour}" }
  runtime: { dockerfile: docker/Dockerfile.runtime, context: app }
`);
    assertProblem(problems, /consumers 'a' \(.*:3\) and 'b' both derive base 'python' but disagree on 'flavour' \('x' vs 'y'\)/, 4);
  });
});

describe("derived CUDA versions", () => {
  const matrix = (cudaMinor: string) => `derive:
  entries:
    - { name: gpu, lang: python, major: "12", minor: "${cudaMinor}" }
    - { name: cpu, lang: python, major: "", minor: "" }
  fields: { name: name, lang: lang, cudaMajor: major, cudaMinor: minor }
  key: [lang, cudaMajor, cudaMinor]
  base: { dockerfile: docker/Dockerfile.base, context: app, target: base, cuda: "{cudaMajor}.{cudaMinor}" }
  runtime: { dockerfile: docker/Dockerfile.runtime, context: app }
`;

  test("a base gets the CUDA version its consumers map to, and a base without CUDA gets none", () => {
    const plan = load(matrix("8"));
    const byName = Object.fromEntries(plan.bases.map((b) => [b.name, b]));
    assert.equal(byName["python-12-8"].cuda, "12.8");
    assert.equal(byName["python-12-8"].args.CUDA_VERSION, "12.8");
    assert.equal(byName.python.cuda, undefined);
    assert.equal(byName.python.args.CUDA_VERSION, undefined);
  });

  test("a mapped value that is not a CUDA version is an error at the template", () => {
    assertProblem(problemsFor(matrix("x")), /derive\.base\.cuda gives '12\.x' for base 'python-12-x', which is not a CUDA version/, 7, 81);
  });
});

describe("identity", () => {
  const variant = (change: (files: Record<string, string>) => void) => {
    const files: Record<string, string> = {
      "strata.yaml": SIMPLE_MATRIX,
      "docker/Dockerfile.base": (require_base()),
      "app/requirements.txt": "numpy\n",
      "app/.dockerignore": "notes.md\n",
      "app/notes.md": "not in the image\n",
    };
    change(files);
    const { "strata.yaml": m, ...rest } = files;
    return load(m, rest).bases[0];
  };
  const reference = variant(() => {});

  test("is the same for the same inputs, in another directory", () => {
    assert.equal(variant(() => {}).tag, reference.tag);
  });

  const changes: [string, (f: Record<string, string>) => void][] = [
    ["a build arg", (f) => (f["strata.yaml"] = f["strata.yaml"].replace('"8.0;8.6"', '"8.0"'))],
    ["a new build arg", (f) => (f["strata.yaml"] = f["strata.yaml"].replace("      TORCH_CUDA_SUFFIX", "      MAX_JOBS: 8\n      TORCH_CUDA_SUFFIX"))],
    ["the Dockerfile of the target's stages", (f) => (f["docker/Dockerfile.base"] = f["docker/Dockerfile.base"].replace("echo build", "echo compile"))],
    ["a context file", (f) => (f["app/requirements.txt"] = "numpy\npandas\n")],
    ["a new context file", (f) => (f["app/extra.txt"] = "x")],
    ["the target", (f) => (f["strata.yaml"] = f["strata.yaml"].replace("target: base", "target: builder"))],
    ["the platforms", (f) => (f["strata.yaml"] = f["strata.yaml"].replace('cuda: "12.6.3"', 'cuda: "12.6.3"\n    platforms: [linux/amd64, linux/arm64]'))],
    ["the CUDA version", (f) => (f["strata.yaml"] = f["strata.yaml"].replace('cuda: "12.6.3"', 'cuda: "12.6.2"'))],
    [".dockerignore letting a file in", (f) => (f["app/.dockerignore"] = "\n")],
  ];
  for (const [what, change] of changes) {
    test(`changes with ${what}`, () => {
      const b = variant(change);
      assert.notEqual(b.tag, reference.tag);
      assert.match(b.tag, /^ampere-[0-9a-f]{12}$/);
    });
  }

  const noChanges: [string, (f: Record<string, string>) => void][] = [
    ["a Dockerfile comment", (f) => (f["docker/Dockerfile.base"] = "# a comment\n" + f["docker/Dockerfile.base"])],
    ["a stage the target does not use", (f) => (f["docker/Dockerfile.base"] += "FROM busybox AS debug\nRUN echo debug\n")],
    ["a file .dockerignore excludes", (f) => (f["app/notes.md"] = "edited")],
    ["the order of build args", (f) => (f["strata.yaml"] = f["strata.yaml"].replace('      TORCH_VER: 2.7.1+cu126\n      TORCH_CUDA_SUFFIX: cu126', '      TORCH_CUDA_SUFFIX: cu126\n      TORCH_VER: 2.7.1+cu126'))],
  ];
  for (const [what, change] of noChanges) {
    test(`does not change with ${what}`, () => {
      assert.equal(variant(change).tag, reference.tag);
    });
  }
});

function require_base(): string {
  return `ARG CUDA_VERSION=12.6.3
FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-devel-ubuntu22.04 AS builder
ARG TORCH_VER
RUN echo build torch \${TORCH_VER} > /opt/built
FROM nvidia/cuda:\${CUDA_VERSION}-cudnn-runtime-ubuntu22.04 AS base
COPY --from=builder /opt/built /opt/built
`;
}

describe("bad input: each problem named with file, line, column and what to do", () => {
  test("malformed YAML", () => {
    const problems = problemsFor("bases:\n  - name: a\n    args: {TORCH_VER: 2.7\n");
    assert.ok(problems.length >= 1);
    assert.match(problems[0].message, /malformed YAML/);
    assert.equal(problems[0].line, 4);
  });

  test("an unknown key, with the likely intended one", () => {
    const p = assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: base", "    taget: base")), /unknown key 'taget' in bases\[0\]/, 5, 5);
    assert.match(p.fix, /did you mean 'target'/);
  });

  test("a missing required field", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    dockerfile: docker/Dockerfile.base\n", "")), /missing required field 'dockerfile' in bases\[0\]/, 2, 5);
  });

  test("a wrong type", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: base", "    target: [base]")), /'target' must be a string, not a list/, 5, 13);
  });

  test("a float where a string is meant is caught, not silently changed", () => {
    const p = assertProblem(problemsFor(SIMPLE_MATRIX.replace('CUDA_ARCH_LIST: "8.0;8.6"', "CUDA_ARCH_LIST: 8.0")), /build arg CUDA_ARCH_LIST is written 8.0, which YAML reads as 8/, 10, 23);
    assert.match(p.fix, /quote it: CUDA_ARCH_LIST: "8.0"/);
  });

  test("an invalid CUDA arch list", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace('"8.0;8.6"', '"8.0;sm_86"')), /CUDA_ARCH_LIST '8.0;sm_86' is not a valid CUDA arch list \('sm_86'\)/, 10, 23);
    assertProblem(problemsFor(SIMPLE_MATRIX.replace('"8.0;8.6"', '"4.2"')), /not a valid CUDA arch list/, 10);
  });

  test("a torch build whose CUDA major version differs from the base's is an error", () => {
    const m = SIMPLE_MATRIX.replace("2.7.1+cu126", "2.7.1+cu118").replace("cu126\n", "cu118\n");
    assertProblem(problemsFor(m), /torch is built for CUDA 11.8 but the base's CUDA is 12.6.3 \(major versions differ\)/, 9, 26);
  });

  test("TORCH_VER and TORCH_CUDA_SUFFIX that disagree", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("2.7.1+cu126", "2.7.1+cu128")), /TORCH_VER '2.7.1\+cu128' is built for cu128 but TORCH_CUDA_SUFFIX is 'cu126'/, 8);
  });

  test("a minor CUDA mismatch is a warning, not an error", () => {
    const plan = load(SIMPLE_MATRIX.replace("2.7.1+cu126", "2.7.1+cu124").replace("cu126\n", "cu124\n"));
    assert.equal(plan.bases.length, 1);
    assert.equal(plan.warnings.length, 1);
    assert.match(plan.warnings[0].message, /CUDA 12.4 but the base's CUDA is 12.6.3 \(minor versions differ\)/);
    assert.equal(plan.warnings[0].line, 9);
  });

  test("duplicate names", () => {
    const m = SIMPLE_MATRIX.replace("runtimes:", `  - name: ampere
    context: app
    dockerfile: docker/Dockerfile.base
runtimes:`);
    assertProblem(problemsFor(m), /duplicate base name 'ampere' \(first declared at .*strata\.yaml:2\)/, 11, 11);
  });

  test("a runtime naming a base that does not exist", () => {
    const p = assertProblem(problemsFor(SIMPLE_MATRIX.replace("base: ampere", "base: amper")), /runtime 'app' names base 'amper', which does not exist/, 13, 11);
    assert.match(p.fix, /did you mean 'ampere'/);
  });

  test("an empty matrix", () => {
    assertProblem(problemsFor(""), /the matrix is empty/, 1, 1);
    assertProblem(problemsFor("runtimes: []\n"), /declares no bases/, 1, 1);
  });

  test("a tag that is not a valid OCI tag", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: runtime", "    target: runtime\n    tags: ['{name}:{version}']")), /tag template '\{name\}:\{version\}' gives 'app:x'.*not a valid OCI tag/, 17, 12);
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: runtime", "    target: runtime\n    tags: ['{name}-{release}']")), /unknown placeholder\(s\) \{release\}/, 17, 12);
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: base", `    target: base\n    tagPrefix: ${"x".repeat(120)}`)), /not a valid OCI tag/, 6);
  });

  test("a Dockerfile that does not exist", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("docker/Dockerfile.base", "docker/Dockerfile.bsae")), /Dockerfile 'docker\/Dockerfile.bsae' does not exist/, 4, 17);
  });

  test("a base Dockerfile without the declared target", () => {
    const p = assertProblem(problemsFor(SIMPLE_MATRIX.replace("target: base", "target: slim")), /docker\/Dockerfile.base has no stage 'slim'/, 5, 13);
    assert.match(p.fix, /builder, base/);
  });

  test("a runtime Dockerfile without ARG BASE_IMAGE", () => {
    const problems = problemsFor(SIMPLE_MATRIX, { "docker/Dockerfile.runtime": "FROM ubuntu:24.04 AS runtime\n" });
    assertProblem(problems, /does not build FROM the BASE_IMAGE build arg/, 15, 17);
  });

  test("a platform that is not os/arch", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace('cuda: "12.6.3"', 'cuda: "12.6.3"\n    platforms: [amd64]')), /'platforms\[0\]' is not a platform of the form os\/arch/, 7, 17);
  });

  test("a runtime wanting a platform its base is not built for", () => {
    assertProblem(problemsFor(SIMPLE_MATRIX.replace("    target: runtime", "    target: runtime\n    platforms: [linux/arm64]")), /wants linux\/arm64 but base 'ampere' is built for linux\/amd64 only/, 17, 16);
  });

  test("a consumer source that is not there, and a key field that is not mapped", () => {
    const problems = problemsFor(`derive:
  source: nowhere.json
  fields: { name: tag-suffix }
  key: [language]
  base: { dockerfile: docker/Dockerfile.base }
`);
    assertProblem(problems, /derive.key names 'language', which derive.fields does not map/, 4, 9);
  });

  test("every problem is reported at once, and nothing is returned", () => {
    const problems = problemsFor(SIMPLE_MATRIX.replace("target: base", "target: slim").replace('"8.0;8.6"', '"x"').replace("base: ampere", "base: nope"));
    assert.equal(problems.length, 3);
  });
});
