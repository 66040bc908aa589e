import { parseArgs, type ParseArgsConfig } from "node:util";

type Options = NonNullable<ParseArgsConfig["options"]>;
/** The values parseArgs gives for `options` (strict, no positionals). */
type Values<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>["values"];

/**
 * Parses the flags of `strata <command>` (no positionals; `-h`/`--help` is added to `options`). A bad flag prints
 * the error and the usage to stderr and gives `{ exit: 2 }`; --help prints the usage to stdout and gives
 * `{ exit: 0 }`; otherwise the flag values.
 */
export function parseFlags<O extends Options>(command: string, usage: string, args: string[], options: O): { values: Values<O>; exit?: undefined } | { exit: number } {
  let values: Values<O> & { help?: boolean };
  try {
    values = parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    return { exit: usageError(command, usage, (err as Error).message) };
  }
  if (values.help) {
    process.stdout.write(usage + "\n");
    return { exit: 0 };
  }
  return { values };
}

/** Prints `strata <command>: <message>` and the usage to stderr; returns the exit status of a usage error, 2. */
export function usageError(command: string, usage: string, message: string): number {
  process.stderr.write(`strata ${command}: ${message}\n\n${usage}\n`);
  return 2;
}
