import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from "yaml";
import { MatrixError, type Location } from "./errors.ts";
import { FileProblem, LIMITS, readRegularFile } from "./files.ts";

export type Path = ReadonlyArray<string | number>;

/**
 * A parsed YAML (or JSON) file that remembers where each value came from, so that errors point at a line and
 * column. JSON sources are parsed with JSON.parse first (several times faster); the YAML parse that gives
 * positions only happens when a position is asked for.
 */
export class SourceFile {
  private doc?: Document;
  private lines?: LineCounter;

  private constructor(
    readonly file: string,
    readonly text: string,
    readonly data: unknown,
  ) {}

  /**
   * Reads and parses a file of at most `maxBytes` (a regular file only: see readRegularFile); a syntax error is a
   * MatrixError at its position.
   */
  static read(file: string, displayName = file, maxBytes: number = LIMITS.matrixBytes): SourceFile {
    let text: string;
    try {
      text = readRegularFile(file, maxBytes, "file");
    } catch (err) {
      if (!(err instanceof FileProblem)) throw err;
      const fix = err.code === "ENOENT" ? "check the path (it is relative to the matrix file) or pass --matrix PATH" : err.fix;
      throw new MatrixError([{ file: displayName, line: 1, col: 1, message: err.message, fix }]);
    }
    return SourceFile.parse(displayName, text);
  }

  static parse(file: string, text: string): SourceFile {
    if (/\.json$/i.test(file)) {
      let data: unknown;
      let parsed = false;
      try {
        data = JSON.parse(text);
        parsed = true;
      } catch {
        // Fall through: the YAML parser reports the syntax error with a position.
      }
      if (parsed) {
        const src = new SourceFile(file, text, data);
        src.checkShape();
        return src;
      }
    }
    const lines = new LineCounter();
    let doc: Document;
    try {
      doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    } catch (err) {
      throw tooDeep(file, err);
    }
    if (doc.errors.some((e) => /Maximum call stack/.test(e.message))) throw tooDeep(file, new RangeError());
    if (doc.errors.length > 0) {
      throw new MatrixError(
        doc.errors.map((e) => {
          const pos = e.linePos?.[0] ?? lines.linePos(e.pos[0]);
          return {
            file,
            line: pos.line,
            col: pos.col,
            message: `malformed ${/\.json$/i.test(file) ? "JSON" : "YAML"}: ${firstLine(e.message)}`,
            fix: "fix the syntax at this position (indentation, a missing colon or quote, a duplicate key)",
          };
        }),
      );
    }
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (err) {
      if (err instanceof RangeError) throw tooDeep(file, err);
      let at: Location = { file, line: 1, col: 1 };
      visit(doc, {
        Alias(_, node) {
          if (node.range) at = { file, ...lines.linePos(node.range[0]) };
          return visit.BREAK;
        },
      });
      throw new MatrixError([
        {
          ...at,
          message: /Excessive alias/.test((err as Error).message)
            ? `the YAML aliases expand too far (more than ${MAX_ALIAS_COUNT} alias uses): an alias bomb, or a file that needs writing out`
            : `malformed YAML: ${firstLine((err as Error).message)}`,
          fix: "write the repeated values out, or use fewer aliases (*name) of large anchors (&name)",
        },
      ]);
    }
    const src = new SourceFile(file, text, data);
    src.doc = doc;
    src.lines = lines;
    src.checkShape();
    return src;
  }

  /**
   * Refuses data nested deeper than LIMITS.depth or holding more than MAX_VALUES values (aliases can make a small
   * file expand), before anything walks it recursively. Iterative, so it cannot overflow the stack itself.
   */
  private checkShape(): void {
    const stack: [unknown, (string | number)[]][] = [[this.data, []]];
    let count = 0;
    while (stack.length > 0) {
      const [value, path] = stack.pop()!;
      if (++count > MAX_VALUES) {
        throw new MatrixError([{ ...this.locate(path), message: `the file holds more than ${MAX_VALUES} values (counting what YAML aliases expand to)`, fix: "split the matrix, or use fewer aliases of large anchors" }]);
      }
      if (value === null || typeof value !== "object") continue;
      if (path.length >= LIMITS.depth) {
        throw new MatrixError([{ ...this.locate(path), message: `lists and mappings nest more than ${LIMITS.depth} deep here`, fix: "a matrix needs only a few levels of nesting; flatten this value" }]);
      }
      const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
      for (const [k, v] of entries) stack.push([v, [...path, k]]);
    }
  }

  /** The value at `path` exactly as written in the file (to tell `8.0` from `8`), if it is a scalar. */
  rawText(path: Path): string | undefined {
    this.ensurePositions();
    const node = this.doc!.getIn(path, true) as Node | undefined;
    if (!node || !isScalar(node) || !node.range) return undefined;
    return this.text.slice(node.range[0], node.range[1]);
  }

  /** The position of the value at `path` (or of its key, with `key`), falling back to the nearest parent. */
  locate(path: Path, opts: { key?: boolean } = {}): Location {
    this.ensurePositions();
    let node: Node | null | undefined = this.doc!.contents as Node | null;
    let offset = node?.range?.[0] ?? 0;
    for (let i = 0; i < path.length && node; i++) {
      const step = path[i];
      const last = i === path.length - 1;
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(step));
        if (!pair) break;
        const keyNode = pair.key as Node;
        if (last && opts.key) {
          offset = keyNode.range?.[0] ?? offset;
          node = undefined;
          break;
        }
        node = pair.value as Node | null;
        offset = node?.range?.[0] ?? keyNode.range?.[0] ?? offset;
      } else if (isSeq(node) && typeof step === "number") {
        node = node.items[step] as Node | null;
        offset = node?.range?.[0] ?? offset;
      } else {
        break;
      }
    }
    const pos = this.lines!.linePos(offset);
    return { file: this.file, line: pos.line, col: pos.col };
  }

  private ensurePositions(): void {
    if (this.doc) return;
    const lines = new LineCounter();
    try {
      this.doc = parseDocument(this.text, { lineCounter: lines });
    } catch {
      this.doc = parseDocument("");
    }
    this.lines = lines;
  }
}

/** Alias uses YAML may expand (yaml's count, which weighs aliases nested in aliased nodes). */
const MAX_ALIAS_COUNT = 1000;
/** Values a file may hold once aliases are expanded: LocalAI's 457-entry matrix holds about 7,000. */
const MAX_VALUES = 1_000_000;

function tooDeep(file: string, err: unknown): MatrixError {
  if (!(err instanceof RangeError)) throw err;
  return new MatrixError([{ file, line: 1, col: 1, message: `the file nests lists or mappings too deeply to read (at most ${LIMITS.depth} levels)`, fix: "flatten the deeply nested value" }]);
}

function firstLine(s: string): string {
  return s.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}
