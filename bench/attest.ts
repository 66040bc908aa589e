/**
 * `strata attest`'s layer scan (gunzip + tar parse + the package-database pick) on a synthetic CUDA-like layer:
 * large half-compressible files (libraries), a 3 MB dpkg status and 3,000 Python dist-info directories. Figures:
 * throughput (compressed and uncompressed) and the process's peak RSS while scanning, which stays bounded
 * however large the layer is.
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { scanLayerStream } from "../cli/attest.ts";
import { applyLayers, packagesOf } from "../cli/attestation.ts";

function header(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number) => h.write(s, off, "latin1");
  put(name, 0);
  put("0000644\0", 100);
  put("0000000\0", 108);
  put("0000000\0", 116);
  put(size.toString(8).padStart(11, "0") + "\0", 124);
  put("00000000000\0", 136);
  put("        ", 148);
  put("0", 156);
  put("ustar\0", 257);
  put("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

function* entry(name: string, body: Buffer): Generator<Buffer> {
  yield header(name, body.length);
  yield body;
  yield Buffer.alloc((512 - (body.length % 512)) % 512);
}

/** A tar stream of about `mib` MiB. */
function* layer(mib: number): Generator<Buffer> {
  const dpkg = Array.from({ length: 3000 }, (_, i) => `Package: pkg${i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.${i}-1\nDescription: package ${i}\n ${"x".repeat(900)}\n`).join("\n");
  yield* entry("var/lib/dpkg/status", Buffer.from(dpkg));
  for (let i = 0; i < 3000; i++) yield* entry(`opt/venv/lib/python3.11/site-packages/p${i}-1.0.dist-info/METADATA`, Buffer.from(`Metadata-Version: 2.1\nName: p${i}\nVersion: 1.0\n\n${"d".repeat(4000)}`));
  let seed = 1;
  for (let f = 0; f < mib; f++) {
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < block.length; i += 4) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      block.writeUInt32LE(i % 8 < 4 ? seed : 0, i);
    }
    yield* entry(`usr/local/cuda/lib64/libbig${f}.so`, block);
  }
  yield Buffer.alloc(1024);
}

export async function benchAttest(mib = Number(process.env.BENCH_ATTEST_MIB ?? 512)): Promise<[string, string][]> {
  const dir = mkdtempSync(join(tmpdir(), "strata-bench-attest-"));
  try {
    const file = join(dir, "layer.tar.gz");
    await pipeline(layer(mib), createGzip({ level: 6 }), createWriteStream(file));
    const compressed = statSync(file).size;
    let peak = process.memoryUsage().rss;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const t = performance.now();
    const r = await scanLayerStream(createReadStream(file, { highWaterMark: 1 << 20 }), "bench layer", { bytes: 512 << 20, files: 100_000 });
    const s = (performance.now() - t) / 1000;
    clearInterval(sampler);
    const n = packagesOf(applyLayers([r.changes])).packages.length;
    return [
      [`attest layer scan, ${mib} MiB tar (${(compressed / (1 << 20)).toFixed(0)} MiB gzip), ${n} packages`, `${s.toFixed(1)} s: ${(mib / s).toFixed(0)} MiB/s uncompressed, ${(compressed / (1 << 20) / s).toFixed(0)} MiB/s gzip; peak RSS ${Math.round(peak / (1 << 20))} MB`],
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
