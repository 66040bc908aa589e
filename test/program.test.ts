import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { runProgram, type ProgramRun, type RecordedResource } from "../cli/program.ts";

// The real program, default matrix, a local registry: what `strata plan` shows for the dev stack.
let run: ProgramRun;
before(async () => {
  run = await runProgram({
    stack: "dev",
    config: { "strata:registry": { kind: "local", address: "localhost:5000" }, "strata:release": { version: "v0.1.1" } },
  });
});

function findCreatedResource(type: string, name: string): RecordedResource {
  const hits = run.resources.filter((r) => r.type === type && r.name === name);
  assert.equal(hits.length, 1, `expected one ${type} named ${name}; have ${run.resources.map((r) => `${r.type}:${r.name}`).join(", ")}`);
  return hits[0];
}
const image = (name: string) => findCreatedResource("docker-build:index:Image", name).inputs as Record<string, any>;

describe("program: default matrix on a local registry", () => {
  test("declares the registry, three bases and one runtime per base, each image under its component", () => {
    assert.deepEqual(
      run.resources.filter((r) => r.type.startsWith("strata:")).map((r) => `${r.type} ${r.name}`),
      [
        "strata:registry:Registry registry",
        "strata:images:BaseImage base-turing",
        "strata:images:BaseImage base-ampere",
        "strata:images:BaseImage base-hopper",
        "strata:images:RuntimeImage runtime-turing",
        "strata:images:RuntimeImage runtime-ampere",
        "strata:images:RuntimeImage runtime-hopper",
      ],
    );
    for (const n of ["base-turing", "runtime-hopper"]) {
      const img = findCreatedResource("docker-build:index:Image", n);
      assert.equal(img.parent, n);
      assert.equal(img.parentType, n.startsWith("base") ? "strata:images:BaseImage" : "strata:images:RuntimeImage");
    }
    assert.equal(run.resources.filter((r) => r.type.startsWith("aws:")).length, 0, "a local registry needs no cloud resources");
  });

  test("a base builds its target with the matrix's build args, pushed under its identity tag", () => {
    const ampere = image("base-ampere");
    const outputs = run.outputs.bases as Record<string, { tag: string }>;
    assert.equal(ampere.push, true);
    assert.deepEqual(ampere.tags, [`localhost:5000/strata/bases:${outputs.ampere.tag}`]);
    assert.match(outputs.ampere.tag, /^ampere-[0-9a-f]{12}$/);
    assert.equal(ampere.target, "base");
    assert.equal(ampere.dockerfile.location, "docker/Dockerfile.base");
    assert.equal(ampere.context.location, "app");
    assert.deepEqual(ampere.platforms, ["linux/amd64"]);
    assert.equal(ampere.buildArgs.CUDA_ARCH_LIST, "8.0;8.6");
    assert.equal(ampere.buildArgs.FA_VER, "2.7.4.post1");
    assert.equal(ampere.buildArgs.CUDA_VERSION, "12.6.3");
  });

  test("a preview never starts a base build and no image forces a pull", () => {
    for (const r of run.resources.filter((r) => r.type === "docker-build:index:Image")) {
      assert.equal(r.inputs.buildOnPreview, false, r.name);
      assert.notEqual(r.inputs.pull, true, r.name);
    }
  });

  test("every image reads and writes its own registry cache, mode max, image manifest, OCI media types", () => {
    const turing = image("base-turing");
    assert.deepEqual(turing.cacheFrom, [{ registry: { ref: "localhost:5000/strata/cache:cache-base-turing" } }]);
    assert.deepEqual(turing.cacheTo, [{ registry: { ref: "localhost:5000/strata/cache:cache-base-turing", mode: "max", imageManifest: true, ociMediaTypes: true } }]);
    assert.equal(image("runtime-turing").cacheTo[0].registry.ref, "localhost:5000/strata/cache:cache-runtime-turing");
  });

  test("a runtime builds FROM its base's digest-pinned reference", () => {
    const refs = run.outputs.baseRefs as Record<string, string>;
    for (const name of ["turing", "ampere", "hopper"]) {
      const base = findCreatedResource("docker-build:index:Image", `base-${name}`);
      const runtime = image(`runtime-${name}`);
      assert.match(refs[name], /^localhost:5000\/strata\/bases:[a-z]+-[0-9a-f]{12}@sha256:[0-9a-f]{64}$/);
      assert.equal(refs[name], base.state.ref, "the exported ref is the pushed image's");
      assert.equal(runtime.buildArgs.BASE_IMAGE, refs[name]);
      assert.equal(runtime.target, "runtime");
    }
  });

  test("runtime tags follow the release: <runtime>-<version>", () => {
    assert.deepEqual(image("runtime-ampere").tags, ["localhost:5000/strata/runtimes:ampere-v0.1.1"]);
  });

  test("outputs list each base's consumers and identity inputs", () => {
    const bases = run.outputs.bases as Record<string, { consumers: string[]; inputs: { args: Record<string, string> } }>;
    assert.deepEqual(bases.hopper.consumers, ["hopper"]);
    assert.equal(bases.hopper.inputs.args.TORCH_CHANNEL, "nightly");
  });
});
