import { createHash } from "node:crypto";
import { Arg, DockerfileParser, From, type Instruction } from "dockerfile-ast";

/** One build stage: a FROM and the instructions up to the next FROM. */
export interface Stage {
  index: number;
  /** The `AS name`, lowercased, if any. */
  name?: string;
  /** 1-based line of the FROM. */
  line: number;
  /** The FROM image as written (may contain ${ARG}s or name an earlier stage). */
  image: string;
  /** Earlier stages this one reads from (FROM, COPY --from, RUN --mount from=), by index. */
  needs: number[];
  /** The FROM's `--platform=` value as written, if any. */
  platform?: string;
  /** Images (not stages) this stage copies or mounts from (COPY/ADD --from, RUN --mount from=), as written. */
  copiesFrom: { image: string; line: number }[];
  /** The stage's instructions, comments and blank lines left out. */
  text: string;
}

/** What strata needs to know about a Dockerfile: its stages, their dependencies and its global ARGs. */
export class DockerfileInfo {
  readonly stages: Stage[] = [];
  /** Global ARG names (declared before the first FROM), in order. */
  readonly globalArgs: string[] = [];
  /** Global ARGs with their defaults as written (undefined: no default), in order. */
  readonly globalArgDefaults: { name: string; value?: string }[] = [];
  /** The frontend image the `# syntax=` parser directive names, if any (BuildKit pulls and runs it). */
  readonly syntax?: { image: string; line: number };
  /** The instructions before the first FROM (global ARGs), as written. */
  readonly globalText: string;

  constructor(content: string) {
    const parsed = DockerfileParser.parse(content);
    const directive = parsed.getDirectives().find((d) => d.getName()?.toLowerCase() === "syntax" && d.getValue());
    if (directive) this.syntax = { image: directive.getValue()!, line: directive.getRange().start.line + 1 };
    const globals: string[] = [];
    let current: { stage: Stage; lines: string[] } | undefined;
    const finish = () => {
      if (current) current.stage.text = current.lines.join("\n");
    };
    for (const inst of parsed.getInstructions()) {
      const keyword = inst.getKeyword().toUpperCase();
      const text = inst.toString();
      if (keyword === "FROM") {
        finish();
        const args = inst.getArguments().map((a) => a.getValue());
        const positional = args.filter((a) => !a.startsWith("--"));
        const asIndex = positional.findIndex((a) => a.toUpperCase() === "AS");
        const stage: Stage = {
          index: this.stages.length,
          name: asIndex >= 0 ? positional[asIndex + 1]?.toLowerCase() : undefined,
          line: inst.getRange().start.line + 1,
          image: positional[0] ?? "",
          needs: [],
          platform: (inst instanceof From ? inst.getPlatformFlag()?.getValue() : undefined) ?? undefined,
          copiesFrom: [],
          text: "",
        };
        const from = this.stageIndex(stage.image);
        if (from !== undefined) stage.needs.push(from);
        this.stages.push(stage);
        current = { stage, lines: [text] };
        continue;
      }
      if (!current) {
        if (keyword === "ARG") {
          this.globalArgs.push(...argNames(inst));
          const property = inst instanceof Arg ? inst.getProperty() : null;
          if (property) this.globalArgDefaults.push({ name: property.getName(), value: property.getValue() ?? undefined });
        }
        globals.push(text);
        continue;
      }
      current.lines.push(text);
      for (const ref of stageRefs(keyword, text)) {
        const idx = this.stageIndex(ref);
        if (idx === undefined) current.stage.copiesFrom.push({ image: ref, line: inst.getRange().start.line + 1 });
        else if (!current.stage.needs.includes(idx)) current.stage.needs.push(idx);
      }
    }
    finish();
    this.globalText = globals.join("\n");
  }

  /** The stage a build with this target ends in: the named stage, or the last one when no target is given. */
  stage(target?: string): Stage | undefined {
    if (target === undefined) return this.stages[this.stages.length - 1];
    return this.stages.find((s) => s.name === target.toLowerCase());
  }

  /** Names of all named stages, for error messages. */
  stageNames(): string[] {
    return this.stages.flatMap((s) => (s.name ? [s.name] : []));
  }

  /** Every stage a build of `target` runs, in file order. */
  closure(target?: string): Stage[] {
    const end = this.stage(target);
    if (!end) return [];
    const seen = new Set<number>();
    const visit = (s: Stage) => {
      if (seen.has(s.index)) return;
      seen.add(s.index);
      for (const n of s.needs) visit(this.stages[n]);
    };
    visit(end);
    return this.stages.filter((s) => seen.has(s.index));
  }

  /**
   * A digest of the parts of the file that a build of `target` uses: the global ARGs and the stages it runs.
   * Editing a stage that only another target uses, or a comment, leaves it unchanged.
   */
  digestFor(target?: string): string {
    const h = createHash("sha256");
    h.update(this.globalText);
    for (const s of this.closure(target)) h.update(`\n--stage ${s.index}\n${s.text}`);
    return h.digest("hex");
  }

  /** True when some FROM reads the given global ARG (`FROM ${BASE_IMAGE}` or `FROM $BASE_IMAGE`). */
  fromUsesArg(name: string): boolean {
    const re = new RegExp(`\\$\\{?${name}(\\}|\\b)`);
    return this.stages.some((s) => re.test(s.image));
  }

  private stageIndex(ref: string): number | undefined {
    if (/^\d+$/.test(ref)) {
      const i = Number(ref);
      return i < this.stages.length ? i : undefined;
    }
    const lower = ref.toLowerCase();
    for (let i = this.stages.length - 1; i >= 0; i--) if (this.stages[i].name === lower) return i;
    return undefined;
  }
}

function argNames(inst: Instruction): string[] {
  return inst.getArguments().map((a) => a.getValue().split("=")[0]);
}

/** Stage names an instruction reads from: COPY/ADD --from=X and RUN --mount=...,from=X. */
function stageRefs(keyword: string, text: string): string[] {
  const refs: string[] = [];
  if (keyword === "COPY" || keyword === "ADD") {
    const m = /--from=("?)([^\s"]+)\1/.exec(text);
    if (m) refs.push(m[2]);
  } else if (keyword === "RUN") {
    for (const m of text.matchAll(/--mount=(\S+)/g)) {
      const from = /(?:^|,)from=([^,]+)/.exec(m[1]);
      if (from) refs.push(from[1]);
    }
  }
  return refs;
}
