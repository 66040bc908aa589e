/**
 * Scaler bench: handler time per delivery (warm, in-process, fake AWS ports, real
 * GitHub client against the loopback GitHub server) and the esbuild bundle size of
 * each Lambda entry. Wired into `npm run bench` by bench/run.ts.
 */
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { SCALER_BUNDLE_OPTIONS, SCALER_ENTRIES } from "../scaler/bundle.ts";
import { createWebhookHandler } from "../scaler/core.ts";
import { createGitHubClient } from "../scaler/github.ts";
import { silentLogger } from "../scaler/ports.ts";
import { delivery, jobPayload, testConfig, testPool } from "../scaler/testing/events.ts";
import { FakeEc2, FakeParams, seeded } from "../scaler/testing/fakes.ts";
import { FakeGitHubServer, generateAppKey } from "../scaler/testing/github-server.ts";

const SECRET = "bench-secret";
const LABELS = ["self-hosted", "linux", "x64", "gpu"];

function quantile(sorted: number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}
const ms = (x: number) => Math.round(x * 1000) / 1000;

export async function bundleEntry(entry: "webhook" | "housekeeping"): Promise<{ code: string; bytes: number }> {
  const res = await build({ ...SCALER_BUNDLE_OPTIONS, write: false, entryPoints: [SCALER_ENTRIES[entry]] });
  const out = res.outputFiles[0]!;
  return { code: out.text, bytes: out.contents.byteLength };
}

export async function benchScaler(): Promise<Record<string, string | number>> {
  const N = 200;
  const key = generateAppKey();
  const server = new FakeGitHubServer({ appId: 1, installationId: 2, publicKey: key.publicKey, scope: "orgs/acme" });
  await server.start();
  const out: Record<string, string | number> = {};
  try {
    // --- per-delivery latency, sequential, warm -------------------------------
    const config = testConfig({ githubApiUrl: server.url, pools: [testPool({ maxRunners: N + 10 })] });
    const timing = { jitterMs: 0, random: seeded(1) };
    const ec2 = new FakeEc2(config.tagKey, Date.now, timing);
    const params = new FakeParams(Date.now, timing);
    const github = createGitHubClient({ apiUrl: server.url, owner: "acme", app: { appId: 1, installationId: 2, privateKey: key.privateKeyPem } });
    const handle = createWebhookHandler({ config, ec2, params, github: async () => github, webhookSecret: async () => SECRET, log: silentLogger });
    // warm-up: the first call fetches the installation token
    for (let i = 0; i < 5; i++) await handle(delivery(SECRET, jobPayload("queued", 1_000_000 + i, LABELS)));
    const samples: number[] = [];
    for (let i = 0; i < N; i++) {
      const ev = delivery(SECRET, jobPayload("queued", i + 1, LABELS), { delivery: randomUUID() });
      const t0 = performance.now();
      const r = await handle(ev);
      samples.push(performance.now() - t0);
      if (r.statusCode !== 201) throw new Error(`bench delivery ${i} answered ${r.statusCode}: ${r.body}`);
    }
    samples.sort((a, b) => a - b);
    out["scaler.webhook.deliveries"] = N;
    out["scaler.webhook.median_ms"] = ms(quantile(samples, 0.5));
    out["scaler.webhook.p95_ms"] = ms(quantile(samples, 0.95));
    out["scaler.webhook.max_ms"] = ms(samples[samples.length - 1]!);

    // forged request (bad signature): what an attacker costs us
    const rej: number[] = [];
    for (let i = 0; i < N; i++) {
      const ev = delivery(SECRET, jobPayload("queued", i + 1, LABELS), { signature: "sha256=" + "0".repeat(64) });
      const t0 = performance.now();
      await handle(ev);
      rej.push(performance.now() - t0);
    }
    rej.sort((a, b) => a - b);
    out["scaler.webhook.rejected_median_ms"] = ms(quantile(rej, 0.5));

    // --- burst: 20 concurrent deliveries into a pool capped at 5 -------------
    const bConfig = testConfig({ githubApiUrl: server.url, pools: [testPool({ maxRunners: 5 })] });
    const bTiming = { jitterMs: 3, random: seeded(7) };
    const bEc2 = new FakeEc2(bConfig.tagKey, Date.now, bTiming);
    const bParams = new FakeParams(Date.now, bTiming);
    let peakArmed = 0;
    bParams.onPut = () => {
      peakArmed = Math.max(peakArmed, bEc2.active("gpu").filter((i) => bParams.store.has(`${bConfig.paramPrefix}${i.id}`)).length);
    };
    const bHandle = createWebhookHandler({ config: bConfig, ec2: bEc2, params: bParams, github: async () => github, webhookSecret: async () => SECRET, log: silentLogger });
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 20 }, (_, k) => bHandle(delivery(SECRET, jobPayload("queued", 5000 + k, LABELS)))));
    out["scaler.burst20.wall_ms"] = ms(performance.now() - t0);
    out["scaler.burst20.cap"] = 5;
    out["scaler.burst20.final_active"] = bEc2.active("gpu").length;
    out["scaler.burst20.peak_armed"] = peakArmed;
    out["scaler.burst20.peak_pending_transient"] = bEc2.peakActive("gpu");
  } finally {
    await server.close();
  }

  // --- bundle sizes ----------------------------------------------------------
  for (const entry of ["webhook", "housekeeping"] as const) {
    const t0 = performance.now();
    const { bytes } = await bundleEntry(entry);
    out[`scaler.bundle.${entry}_bytes`] = bytes;
    out[`scaler.bundle.${entry}_kib`] = Math.round((bytes / 1024) * 10) / 10;
    out[`scaler.bundle.${entry}_build_ms`] = Math.round(performance.now() - t0);
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  benchScaler().then((r) => console.log(JSON.stringify(r, null, 2)));
}
