/**
 * Scaler bench: in-process latency of webhook → enqueue and queue → launch request (warm, the real
 * handlers over in-memory ports), and the esbuild bundle size of each Lambda entry. The fleet
 * simulation (served / lost / cap / makespan) is bench/fleet.ts. Wired into `npm run bench` by bench/run.ts.
 */
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { SCALER_BUNDLE_OPTIONS, SCALER_ENTRIES } from "../scaler/bundle.ts";
import { createWebhookHandler, runScaleUp } from "../scaler/core.ts";
import { silentLogger, type LaunchRequest } from "../scaler/ports.ts";
import { delivery, jobPayload, testConfig, testPool } from "../test/support/events.ts";
import { FakeEc2, FakeGitHub, FakeParams, FakeQueue, FakeState, seeded } from "../test/support/fakes.ts";

const SECRET = "bench-secret";
const LABELS = ["self-hosted", "linux", "x64", "gpu"];

function quantile(sorted: number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}
const ms = (x: number) => Math.round(x * 1000) / 1000;

export async function bundleEntry(entry: keyof typeof SCALER_ENTRIES): Promise<{ code: string; bytes: number }> {
  const res = await build({ ...SCALER_BUNDLE_OPTIONS, write: false, entryPoints: [SCALER_ENTRIES[entry]] });
  const out = res.outputFiles[0]!;
  return { code: out.text, bytes: out.contents.byteLength };
}

export async function benchScaler(): Promise<Record<string, string | number>> {
  const N = 300;
  const out: Record<string, string | number> = {};
  const config = testConfig({ pools: [testPool({ maxRunners: 1 })], repositories: ["acme/app"] });
  const instant = { jitterMs: -1, random: seeded(1) }; // no artificial latency: the handlers' own time
  const ec2 = new FakeEc2(config.tagKey, Date.now, instant);
  const github = new FakeGitHub();
  const deps = { config, ec2, params: new FakeParams(Date.now, instant), state: new FakeState(), queue: new FakeQueue(), github: async () => github, log: silentLogger };
  const handle = createWebhookHandler({ ...deps, webhookSecret: async () => SECRET });

  const enqueue: number[] = [];
  const launch: number[] = [];
  let launchStarted = 0;
  const launchRequest = ec2.launch.bind(ec2);
  ec2.launch = async (req: LaunchRequest) => {
    launch.push(performance.now() - launchStarted);
    return launchRequest(req);
  };
  for (let i = 1; i <= N; i++) {
    github.addJob("acme/app", { id: i, labels: LABELS });
    const ev = delivery(SECRET, jobPayload("queued", i, LABELS));
    const t0 = performance.now();
    const r = await handle(ev);
    enqueue.push(performance.now() - t0);
    if (r.statusCode !== 202) throw new Error(`bench delivery ${i}: ${r.statusCode} ${r.body}`);
    launchStarted = performance.now();
    await runScaleUp(deps);
    for (const inst of ec2.active()) inst.state = "terminated"; // the job ran: the slot frees for the next
  }
  for (const [name, xs] of [["webhook_to_enqueue", enqueue], ["queue_to_launch_request", launch]] as const) {
    const s = [...xs].slice(20).sort((a, b) => a - b); // warm
    out[`scaler.${name}.p50_ms`] = ms(quantile(s, 0.5));
    out[`scaler.${name}.p95_ms`] = ms(quantile(s, 0.95));
  }

  for (const entry of Object.keys(SCALER_ENTRIES) as (keyof typeof SCALER_ENTRIES)[]) {
    const { bytes } = await bundleEntry(entry);
    out[`scaler.bundle.${entry}_kib`] = Math.round((bytes / 1024) * 10) / 10;
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  benchScaler().then((r) => console.log(JSON.stringify(r, null, 2)));
}
