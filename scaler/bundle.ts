/**
 * esbuild options for the Lambda entries, for the deploying component to reuse.
 * The banner is required: bundled CommonJS from the AWS SDK calls require("node:https")
 * etc., which an ESM bundle cannot do without a require of its own ("Dynamic require
 * of ... is not supported" at cold start otherwise). test/scaler-bundle.test.ts loads
 * the bundles built with exactly these options.
 */
import { fileURLToPath } from "node:url";

export const SCALER_ENTRIES = {
  webhook: fileURLToPath(new URL("./webhook.ts", import.meta.url)),
  scaleup: fileURLToPath(new URL("./scaleup.ts", import.meta.url)),
  interruption: fileURLToPath(new URL("./interruption.ts", import.meta.url)),
  housekeeping: fileURLToPath(new URL("./housekeeping.ts", import.meta.url)),
} as const;

export const SCALER_BUNDLE_OPTIONS = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  minify: true,
  legalComments: "none",
  banner: { js: "import { createRequire as __strataCreateRequire } from 'node:module'; const require = __strataCreateRequire(import.meta.url);" },
} as const;
