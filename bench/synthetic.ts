/**
 * Synthetic large matrices for the bench and the scale tests, made from LocalAI's real 457-entry matrix
 * (examples/localai/backend-matrix-master-linux.json) as issue 14 describes: every entry is copied with new tag
 * suffixes (up to 4 copies per entry, the same bases), and the whole set is repeated over variants of the base
 * images (each variant a distinct OS image, so a new set of bases). 1,000 entries give 45 bases, 5,000 give 135,
 * 20,000 give 495. Written at run time next to the fixture (its Dockerfiles are relative to it), never committed.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const FIXTURES = join(import.meta.dirname, "..", "examples", "localai");
const SOURCE = join(FIXTURES, "backend-matrix-master-linux.json");
const MATRIX = join(FIXTURES, "strata-master.yaml");
/** Tag-suffix copies of each entry per base-image variant. */
const COPIES = 4;

type Entry = Record<string, string>;

/** `count` consumer entries: variant-major, then copy-major, so every base appears before any is repeated. */
export function syntheticEntries(count: number): Entry[] {
  const real = JSON.parse(readFileSync(SOURCE, "utf8")) as Entry[];
  const out: Entry[] = [];
  for (let variant = 0; out.length < count; variant++) {
    for (let copy = 0; copy < COPIES && out.length < count; copy++) {
      for (const e of real) {
        if (out.length >= count) break;
        const mark = `${variant ? `-v${variant}` : ""}${copy ? `-c${copy}` : ""}`;
        out.push({ ...e, "tag-suffix": `${e["tag-suffix"]}${mark}`, ...(variant ? { "base-image": `${e["base-image"]}-v${variant}` } : {}) });
      }
    }
  }
  return out;
}

export interface SyntheticMatrix {
  /** The matrix file, relative to the repository root (what `--matrix` takes). */
  matrix: string;
  /** Absolute path of the matrix file. */
  path: string;
  remove(): void;
}

/** Writes a matrix of `count` entries (the LocalAI mapping over `syntheticEntries`) beside the fixture. */
export function writeSyntheticMatrix(count: number, tag = String(process.pid)): SyntheticMatrix {
  const base = `.synthetic-${count}-${tag}`;
  const json = join(FIXTURES, `${base}.json`);
  const path = join(FIXTURES, `${base}.yaml`);
  writeFileSync(json, JSON.stringify(syntheticEntries(count)));
  const yaml = readFileSync(MATRIX, "utf8").replace(/^(\s*source:\s*)backend-matrix-master-linux\.json\s*$/m, `$1${base}.json`);
  if (!yaml.includes(`${base}.json`)) throw new Error(`${MATRIX}: no 'source: backend-matrix-master-linux.json' line to point at the synthetic entries`);
  writeFileSync(path, yaml);
  return {
    matrix: relative(join(import.meta.dirname, ".."), path),
    path,
    remove() {
      rmSync(json, { force: true });
      rmSync(path, { force: true });
    },
  };
}
