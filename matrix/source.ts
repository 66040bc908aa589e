import { readFileSync } from "node:fs";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from "yaml";
import { MatrixError, type Location } from "./errors.ts";

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

  /** Reads and parses a file; a syntax error is a MatrixError at its position. */
  static read(file: string, displayName = file): SourceFile {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new MatrixError([
        {
          file: displayName,
          line: 1,
          col: 1,
          message: code === "ENOENT" ? "file not found" : `cannot read the file (${code ?? String(err)})`,
          fix: "check the path (it is relative to the matrix file) or pass --matrix PATH",
        },
      ]);
    }
    return SourceFile.parse(displayName, text);
  }

  static parse(file: string, text: string): SourceFile {
    if (/\.json$/i.test(file)) {
      try {
        return new SourceFile(file, text, JSON.parse(text));
      } catch {
        // Fall through: the YAML parser reports the syntax error with a position.
      }
    }
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
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
    const src = new SourceFile(file, text, doc.toJS({ maxAliasCount: 1000 }));
    src.doc = doc;
    src.lines = lines;
    return src;
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
    this.doc = parseDocument(this.text, { lineCounter: lines });
    this.lines = lines;
  }
}

function firstLine(s: string): string {
  return s.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}
