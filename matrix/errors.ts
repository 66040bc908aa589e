/** Where a problem was found: a file and a 1-based line and column. */
export interface Location {
  file: string;
  line: number;
  col: number;
}

/**
 * A location computed only when read: finding a line in a large JSON source means parsing it again with
 * positions, which a valid matrix never needs.
 */
export function lazyLocation(find: () => Location): Location {
  let found: Location | undefined;
  const get = () => (found ??= find());
  return Object.defineProperties({} as Location, {
    file: { get: () => get().file, enumerable: true },
    line: { get: () => get().line, enumerable: true },
    col: { get: () => get().col, enumerable: true },
  });
}

/** One problem with the user's input: where, what, and what to do about it. */
export interface Problem extends Location {
  message: string;
  fix: string;
}

/**
 * A user mistake in the matrix, its files or the stack config. It carries every problem found, so the user can
 * fix them in one go; nothing is declared when one is thrown.
 */
export class MatrixError extends Error {
  constructor(readonly problems: Problem[]) {
    super(problems.map((p) => formatProblem(p)).join("\n"));
    this.name = "MatrixError";
  }
}

export function formatProblem(p: Problem, severity: "error" | "warning" = "error"): string {
  return `${p.file}:${p.line}:${p.col}: ${severity}: ${p.message}\n    fix: ${p.fix}`;
}

/** Collects problems while a file is checked, then throws them together. */
export class Problems {
  readonly errors: Problem[] = [];
  readonly warnings: Problem[] = [];

  error(at: Location, message: string, fix: string): void {
    this.errors.push({ ...at, message, fix });
  }

  warn(at: Location, message: string, fix: string): void {
    this.warnings.push({ ...at, message, fix });
  }

  throwIfAny(): void {
    if (this.errors.length > 0) throw new MatrixError(this.errors);
  }
}
