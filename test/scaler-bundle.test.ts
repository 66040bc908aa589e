import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, it } from "node:test";
import { bundleEntry } from "../bench/scaler.ts";
import { delivery } from "./support/events.ts";

// The deploying component bundles the entries with esbuild (node20, esm, minified, AWS SDK
// included). The bundle must load on its own and answer, not just compile.
describe("esbuild bundles of the Lambda entries", () => {
  for (const entry of ["webhook", "scaleup", "interruption", "housekeeping"] as const) {
    it(`${entry}: bundles, loads from outside the repo and exports handler`, async () => {
      const { code, bytes } = await bundleEntry(entry);
      assert.ok(bytes > 10_000);
      assert.doesNotMatch(code, /from\s*"@aws-sdk\//, "AWS SDK is bundled, not imported");
      assert.doesNotMatch(code, /from\s*"@octokit\//);
      const dir = mkdtempSync(join(tmpdir(), "strata-bundle-"));
      const saved = { ...process.env };
      try {
        const file = join(dir, `${entry}.mjs`);
        writeFileSync(file, code);
        for (const k of Object.keys(process.env)) if (k.startsWith("STRATA_")) delete process.env[k];
        const mod = (await import(pathToFileURL(file).href)) as { handler: (e: unknown) => Promise<{ statusCode?: number }> };
        assert.equal(typeof mod.handler, "function");
        const orig = console.error;
        console.error = () => {};
        try {
          if (entry === "webhook") {
            const r = await mod.handler(delivery("s", { zen: "x" }, { event: "ping" }));
            assert.equal(r.statusCode, 500, "misconfigured environment gives a defined 500");
          } else {
            await assert.rejects(mod.handler({}), /invalid scaler configuration/);
          }
        } finally {
          console.error = orig;
        }
      } finally {
        for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
        Object.assign(process.env, saved);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
