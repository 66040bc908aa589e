import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync, ftruncateSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { LIMITS } from "../matrix/files.ts";
import { loadMatrix } from "../matrix/load.ts";
import { BASE_DOCKERFILE, FIXTURES, REPO, SIMPLE_MATRIX, assertProblem, cleanup, problemsOf, project, simpleProject } from "./helpers.ts";

const BIN = join(REPO, "bin", "strata.mjs");
const dirs: string[] = [];
after(() => dirs.forEach(cleanup));

function proj(matrix?: string, extra: Record<string, string> = {}): string {
  const dir = simpleProject(matrix, extra);
  dirs.push(dir);
  return dir;
}
const problemsIn = (dir: string, file = "strata.yaml") => problemsOf(() => loadMatrix(join(dir, file)));
const mkfifo = (path: string) => execFileSync("mkfifo", [path]);

/** Runs the CLI with a time bound: a hang is a failure here, not a stuck test run. */
function strata(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: "utf8", timeout: 20_000, env: { ...process.env, STRATA_DEBUG: "" } });
  assert.equal(r.signal, null, `strata ${args.join(" ")} was killed (${r.signal}): it hung`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const DERIVE = (source: string) => `derive:
  source: ${source}
  fields: { name: tag-suffix }
  key: [name]
  base: { dockerfile: docker/Dockerfile.base, context: app }
  runtime: { dockerfile: docker/Dockerfile.runtime, context: app }
`;

describe("files that are not regular files are refused, never read", () => {
  test("a derive source that is a FIFO: an error at derive.source, at once", () => {
    const dir = proj(DERIVE("consumers.json"));
    mkfifo(join(dir, "consumers.json"));
    assertProblem(problemsIn(dir), /derive\.source 'consumers\.json': the derive source is a FIFO \(named pipe\), not a regular file/, 2, 11);
  });

  test("a derive source that is a device (through a symlink inside the repository)", () => {
    const dir = proj(DERIVE("consumers.json"));
    mkdirSync(join(dir, ".git"));
    symlinkSync("/dev/zero", join(dir, "consumers.json"));
    // /dev/zero is outside the repository: refused before it is opened.
    assertProblem(problemsIn(dir), /derive\.source 'consumers\.json' resolves outside the repository .*through a symlink, to \/dev\/zero/, 2, 11);
  });

  test("a matrix, a Dockerfile, a .dockerignore and a file in the context that are FIFOs", () => {
    const a = proj();
    mkfifo(join(a, "m.yaml"));
    assertProblem(problemsIn(a, "m.yaml"), /the file is a FIFO \(named pipe\), not a regular file/, 1, 1);

    const b = project({ "strata.yaml": SIMPLE_MATRIX, "docker/Dockerfile.runtime": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS runtime\n", "app/requirements.txt": "x\n" });
    dirs.push(b);
    mkfifo(join(b, "docker/Dockerfile.base"));
    assertProblem(problemsIn(b), /Dockerfile 'docker\/Dockerfile\.base': the Dockerfile is a FIFO/, 4, 17);

    const c = proj();
    mkfifo(join(c, "app/.dockerignore"));
    assertProblem(problemsIn(c), /base 'ampere': .*\.dockerignore: the ignore file is a FIFO/, 3, 14);

    const d = proj();
    mkfifo(join(d, "app/pipe"));
    const p = assertProblem(problemsIn(d), /base 'ampere': the build context holds pipe, which is a FIFO/, 3, 14);
    assert.match(p.fix, /add pipe to \.dockerignore/);
    writeFileSync(join(d, "app/.dockerignore"), "pipe\n");
    assert.equal(loadMatrix(join(d, "strata.yaml")).bases.length, 1, "an ignored FIFO is fine");
  });

  test("a stack file that is a FIFO: strata check exits 1 at once, naming it", () => {
    const dir = proj();
    mkfifo(join(dir, "Pulumi.dev.yaml"));
    const r = strata(["check"], dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^Pulumi\.dev\.yaml:1:1: error: the file is a FIFO \(named pipe\), not a regular file/m);
  });
});

describe("the stack file's values the CLI reads have their types", () => {
  for (const [stack, message, line] of [
    ["config:\n  strata:release:\n    sha: 1234567\n", /^Pulumi\.dev\.yaml:3:10: error: strata:release\.sha must be a string/m, 3],
    ["config:\n  strata:matrix: 5\n", /^Pulumi\.dev\.yaml:2:18: error: strata:matrix must be the path of the matrix file/m, 2],
    ["config: [1]\n", /^Pulumi\.dev\.yaml:1:9: error: `config:` must be a mapping/m, 1],
    ["- a\n", /^Pulumi\.dev\.yaml:1:1: error: a stack file must be a mapping/m, 1],
    ["config:\n  strata:registry: { kind: local, untaggedExpiryDays: 1e400 }\n", /^Pulumi\.dev\.yaml:2:55: error: strata:registry\.untaggedExpiryDays is a number too large to represent \(1e400\)/m, 2],
  ] as const) {
    test(`exit 1 at line ${line}, not an internal error: ${JSON.stringify(stack)}`, () => {
      const r = strata(["bake", "--registry", "localhost:5000"], proj(undefined, { "Pulumi.dev.yaml": stack }));
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
    });
  }
});

describe("files given on the command line", () => {
  test("plan --recorded with outputs of the wrong shape: exit 1 at the value, not an internal error", () => {
    const dir = proj(undefined, { "rec.json": '{"ampere": {"tag": 5}}', "list.json": "[1]" });
    let r = strata(["plan", "--recorded", "rec.json"], dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^rec\.json:1:20: error: cannot read the recorded outputs: 'tag' must be a string, not number 5/m);
    r = strata(["plan", "--recorded", "list.json"], dir);
    assert.match(r.stderr, /^list\.json:1:1: error: cannot read the recorded outputs: the file must be a mapping, not a list/m);
  });

  test("plan --recorded and bake --pin given a FIFO: exit 1 at once", () => {
    const dir = proj();
    mkfifo(join(dir, "pipe.json"));
    const rec = strata(["plan", "--recorded", "pipe.json"], dir);
    assert.equal(rec.code, 1);
    assert.match(rec.stderr, /^pipe\.json:1:1: error: cannot read the recorded outputs: the file is a FIFO/m);
    const pin = strata(["bake", "--registry", "localhost:5000", "--pin", "pipe.json"], dir);
    assert.equal(pin.code, 1);
    assert.match(pin.stderr, /^pipe\.json:1:1: error: cannot read the bake metadata \(the bake metadata file is a FIFO/m);
  });
});

describe("files over their size limit are refused before they are read", () => {
  test("a derive source over 16 MiB (sparse: nothing is allocated)", () => {
    const dir = proj(DERIVE("consumers.json"));
    const fd = openSync(join(dir, "consumers.json"), "w");
    ftruncateSync(fd, LIMITS.sourceBytes + 1);
    closeSync(fd);
    const p = assertProblem(problemsIn(dir), /derive\.source 'consumers\.json': the derive source is larger than strata reads \(16777217 bytes; at most 16777216\)/, 2, 11);
    assert.match(p.fix, /under 16 MiB/);
  });

  test("a matrix over 1 MiB, a Dockerfile over 1 MiB", () => {
    const big = SIMPLE_MATRIX + `# ${"x".repeat(LIMITS.matrixBytes)}\n`;
    assertProblem(problemsIn(proj(big)), /the file is larger than strata reads/, 1, 1);
    const dir = proj(undefined, { "docker/Dockerfile.base": BASE_DOCKERFILE + `# ${"x".repeat(LIMITS.dockerfileBytes)}\n` });
    assertProblem(problemsIn(dir), /Dockerfile 'docker\/Dockerfile\.base': the Dockerfile is larger than strata reads/, 4, 17);
  });

  test("a stack file over 1 MiB: exit 1 at the file", () => {
    const dir = proj(undefined, { "Pulumi.dev.yaml": `config:\n  strata:release: { version: v1 }\n# ${"x".repeat(LIMITS.stackBytes)}\n` });
    const r = strata(["check"], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^Pulumi\.dev\.yaml:1:1: error: the file is larger than strata reads/m);
  });
});

describe("values within limits", () => {
  test("a build arg value over 4096 characters, at its line", () => {
    const m = SIMPLE_MATRIX.replace('      CUDA_ARCH_LIST: "8.0;8.6"', `      CUDA_ARCH_LIST: "8.0;8.6"\n      NOTE: ${"a".repeat(LIMITS.stringChars + 1)}`);
    assertProblem(problemsIn(proj(m)), /'NOTE' must be at most 4096 characters/, 11, 13);
  });

  test("a name too long for its tag, too many platforms, too many tags", () => {
    assertProblem(problemsIn(proj(SIMPLE_MATRIX.replace("name: ampere", `name: ${"a".repeat(116)}`))), /'name' must be at most 115 characters/, 2, 11);
    const platforms = Array.from({ length: LIMITS.platforms + 1 }, (_, i) => `linux/arch${i}`).join(", ");
    assertProblem(problemsIn(proj(SIMPLE_MATRIX.replace('cuda: "12.6.3"', `cuda: "12.6.3"\n    platforms: [${platforms}]`))), /'platforms' must have at most 16 items/, 7, 16);
    const tags = Array.from({ length: LIMITS.tags + 1 }, (_, i) => `"t${i}-{version}"`).join(", ");
    assertProblem(problemsIn(proj(SIMPLE_MATRIX + `    tags: [${tags}]\n`)), /'tags' must have at most 32 items/, 17, 11);
  });

  test("a tag template that renders to more than 128 characters", () => {
    assertProblem(problemsIn(proj(SIMPLE_MATRIX + `    tags: ["{name}-${"v".repeat(130)}"]\n`)), /tag template .* gives .* which is not a valid OCI tag/, 17, 12);
  });

  test("a number too large to represent is named as such, not as `number null`", () => {
    const p = assertProblem(problemsIn(proj(SIMPLE_MATRIX.replace("target: base", "target: 1e400"))), /'target' must be a string, not a number too large to represent \(Infinity\)/, 5, 13);
    assert.match(p.fix, /"1e400"/);
    assertProblem(problemsIn(proj(SIMPLE_MATRIX.replace("TORCH_VER: 2.7.1+cu126", "TORCH_VER: 1e400"))), /'TORCH_VER' has an unsupported value \(a number too large to represent/, 8, 18);
  });

  test("a mapped consumer field over 4096 characters", () => {
    const dir = proj(DERIVE("c.json"), { "c.json": JSON.stringify([{ "tag-suffix": "x".repeat(LIMITS.stringChars + 1) }]) });
    assertProblem(problemsIn(dir), /consumer entry 0, field 'name': the value is 4097 characters long/, 1, 16);
  });
});

describe("build inputs must be inside the repository", () => {
  /** A git work tree (a `.git` directory marks it) with the matrix in `images/`. */
  function repo(files: Record<string, string>): string {
    const dir = project({ ".git/HEAD": "ref: refs/heads/main\n", ...files });
    dirs.push(dir);
    return dir;
  }
  const base = (ctx: string, dockerfile = "Dockerfile") => `bases:\n  - { name: one, context: ${ctx}, dockerfile: ${dockerfile}, target: base }\n`;

  test("a context with .. that stays in the git work tree is fine; one that leaves it is refused at its line", () => {
    const dir = repo({ "images/strata.yaml": base("../shared"), "images/Dockerfile": "FROM ubuntu AS base\n", "shared/lib.sh": "v1\n" });
    assert.equal(loadMatrix(join(dir, "images/strata.yaml")).bases[0].name, "one");
    writeFileSync(join(dir, "images/strata.yaml"), base("../.."));
    const p = assertProblem(problemsIn(dir, "images/strata.yaml"), /base 'one': build context '\.\.\/\.\.' resolves outside the repository/, 2, 27);
    assert.match(p.fix, /bring the files into the repository/);
  });

  test("without a git work tree, the repository is the matrix's directory", () => {
    const dir = project({ "images/strata.yaml": base("../shared"), "images/Dockerfile": "FROM ubuntu AS base\n", "shared/lib.sh": "v1\n" });
    dirs.push(dir);
    assertProblem(problemsIn(dir, "images/strata.yaml"), /build context '\.\.\/shared' resolves outside the repository .*images/, 2, 27);
  });

  test("a context, a Dockerfile and a derive source reaching out through symlinks are refused", () => {
    const outside = project({ "Dockerfile": "FROM ubuntu AS base\n", "c.json": "[]", "lib/x": "1" });
    dirs.push(outside);
    const dir = repo({ "strata.yaml": base("ctx", "df/Dockerfile") });
    symlinkSync(join(outside, "lib"), join(dir, "ctx"));
    symlinkSync(outside, join(dir, "df"));
    const problems = problemsIn(dir);
    assertProblem(problemsIn(dir), /build context 'ctx' resolves outside the repository .* \(through a symlink, to .*lib\)/, 2, 27);
    assertProblem(problems, /Dockerfile 'df\/Dockerfile' resolves outside the repository .* \(through a symlink/, 2, 44);
    writeFileSync(join(dir, "strata.yaml"), DERIVE("df/c.json"));
    assertProblem(problemsIn(dir), /derive\.source 'df\/c\.json' resolves outside the repository/, 2, 11);
  });

  test("a .dockerignore that is a symlink to outside is refused, not read", () => {
    const outside = project({ ignore: "*\n" });
    dirs.push(outside);
    const dir = repo({ "strata.yaml": base("ctx"), Dockerfile: "FROM ubuntu AS base\n", "ctx/a": "1" });
    symlinkSync(join(outside, "ignore"), join(dir, "ctx/.dockerignore"));
    assertProblem(problemsIn(dir), /base 'one': ctx\/\.dockerignore resolves outside the repository/, 2, 27);
  });

  test("absolute paths are refused: a relative path says where the file is on every machine", () => {
    assertProblem(problemsIn(proj(SIMPLE_MATRIX.replace("    context: app\n    dockerfile: docker/Dockerfile.base", "    context: /etc\n    dockerfile: docker/Dockerfile.base"))), /build context '\/etc' is an absolute path/, 3, 14);
  });

  test("a symlink inside a context pointing outside is hashed as the link, never followed", () => {
    const outside = project({ "secret.txt": "one\n" });
    dirs.push(outside);
    const dir = proj();
    symlinkSync(join(outside, "secret.txt"), join(dir, "app/link"));
    const before = loadMatrix(join(dir, "strata.yaml")).bases[0];
    writeFileSync(join(outside, "secret.txt"), "two\n");
    const after_ = loadMatrix(join(dir, "strata.yaml")).bases[0];
    assert.equal(after_.tag, before.tag, "the target's content is not an input");
    assert.ok("link" in before.inputs.contextFiles);
  });
});

describe("no internal error on user input", () => {
  test("a YAML alias bomb is an error at the first alias", () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]", ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(", ")}]`)].join("\n");
    const p = assertProblem(problemsIn(proj(bomb + "\n")), /the YAML aliases expand too far/, 2, 8);
    assert.match(p.fix, /write the repeated values out/);
  });

  test("an invalid regular expression in a derive mapping is an error at the pattern", () => {
    const m = DERIVE("c.json").replace("fields: { name: tag-suffix }", "fields: { name: { field: tag-suffix, pattern: '([a-z' } }");
    assertProblem(problemsIn(proj(m, { "c.json": '[{"tag-suffix": "a"}]' })), /'pattern' is not a valid regular expression/, 3, 49);
  });

  test("a pattern that can backtrack exponentially is refused", () => {
    const m = DERIVE("c.json").replace("fields: { name: tag-suffix }", () => "fields: { name: { field: tag-suffix, pattern: '^(a+)+$' } }");
    assertProblem(problemsIn(proj(m, { "c.json": '[{"tag-suffix": "a"}]' })), /'pattern' has a repeated group that itself repeats/, 3, 49);
  });

  test("lists nested thousands deep are an error, not a stack overflow", () => {
    const deep = `bases: ${"[".repeat(5000)}${"]".repeat(5000)}\n`;
    assert.match(problemsIn(proj(deep))[0].message, /nest/);
    const dir = proj(DERIVE("c.json"), { "c.json": `[${"[".repeat(100_000)}${"]".repeat(100_000)}]` });
    assert.match(problemsIn(dir)[0].message, /nest/);
  });

  test("consumer fields named like Object members (toString, __proto__) are plain fields", () => {
    const m = DERIVE("c.json").replace("fields: { name: tag-suffix }", "fields: { name: toString, kind: { field: __proto__, map: { constructor: x } } }");
    const plan = loadMatrix(join(proj(m.replace("key: [name]", "key: [name, kind]"), { "c.json": '[{"toString": "a", "__proto__": "constructor"}, {"toString": {"toString": 1}}]' }), "strata.yaml"));
    assert.deepEqual(plan.runtimes.map((r) => [r.name, r.fields?.kind]), [["a", "x"], ["tostring-1", ""]]);
  });

  test("the CLI turns each of these into exit 1 with a location, never exit 3", () => {
    const dir = proj(DERIVE("c.json").replace("fields: { name: tag-suffix }", "fields: { name: { field: tag-suffix, pattern: '(' } }"), { "c.json": "[]" });
    const r = strata(["check"], dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^strata\.yaml:3:\d+: error: /m);
    assert.doesNotMatch(r.stderr, /internal error/);
  });
});

test("the shipped LocalAI matrices stay within every limit", () => {
  for (const f of ["strata-master.yaml", "strata-pr9672.yaml"]) assert.ok(loadMatrix(join(FIXTURES, f)).bases.length > 0);
  assert.ok(readFileSync(join(FIXTURES, "backend-matrix-master-linux.json")).length < LIMITS.sourceBytes / 50);
});
