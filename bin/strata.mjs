#!/usr/bin/env node
// The strata CLI: loads the TypeScript sources through tsx, then runs cli/main.ts.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli/main.ts");
let code;
try {
  code = await main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`strata: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
  if (process.env.STRATA_DEBUG) process.stderr.write(`${err?.stack ?? ""}\n`);
  else process.stderr.write("(set STRATA_DEBUG=1 for the stack trace, and please report it)\n");
  code = 3;
}
// The Pulumi runtime may hold the event loop open after an offline plan; flush and leave.
process.stdout.write("", () => process.exit(code));
