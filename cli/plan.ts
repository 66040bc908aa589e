import type { ProgramRun, RecordedResource } from "./program.ts";

/** What `strata plan --json` prints: the bases, runtimes and resources the program declared. */
export interface PlanReport {
  stack: string;
  matrix: string;
  registry: unknown;
  bases: {
    name: string;
    tag: string;
    identity: string;
    buildArgs: Record<string, string>;
    target: string;
    dockerfile: string;
    context: string;
    platforms: string[];
    consumers: string[];
  }[];
  runtimes: { name: string; base: string; tags: string[]; dockerfile: string; target: string; platforms: string[]; baseImageArg: string }[];
  resources: { type: string; name: string; parent: string | null; parentType: string | null }[];
}

/**
 * Builds the report from what the program registered: build args, targets and platforms are read off the
 * docker-build Images it declared, not recomputed, so the report is the program's view.
 */
export function planReport(stack: string, matrix: string, run: ProgramRun): PlanReport {
  const children = new Map<string, RecordedResource[]>();
  for (const r of run.resources) if (r.parent) children.set(`${r.parentType}::${r.parent}`, [...(children.get(`${r.parentType}::${r.parent}`) ?? []), r]);
  /** What a BaseImage or RuntimeImage component declared: its docker-build Images (one per platform). */
  const build = (c: RecordedResource) => {
    const images = (children.get(`${c.type}::${c.name}`) ?? []).filter((r) => r.type === "docker-build:index:Image");
    const first = (images[0]?.inputs ?? {}) as Record<string, any>;
    return {
      first,
      dockerfile: (first.dockerfile?.location ?? "") as string,
      target: (first.target ?? "") as string,
      platforms: images.flatMap((i) => (i.inputs.platforms as string[]) ?? []),
    };
  };
  const outputs = run.outputs as {
    registry?: unknown;
    bases?: Record<string, { tag: string; identity: string; consumers: string[] }>;
    runtimes?: Record<string, { base: string; tags: string[] }>;
  };

  const bases = run.resources
    .filter((r) => r.type === "strata:images:BaseImage")
    .map((c) => {
      const name = c.name.replace(/^base-/, "");
      const { first, dockerfile, target, platforms } = build(c);
      const declared = outputs.bases?.[name];
      return {
        name,
        tag: declared?.tag ?? "",
        identity: declared?.identity ?? "",
        buildArgs: (first.buildArgs ?? {}) as Record<string, string>,
        target,
        dockerfile,
        context: (first.context?.location ?? "") as string,
        platforms,
        consumers: declared?.consumers ?? [],
      };
    });
  const runtimes = run.resources
    .filter((r) => r.type === "strata:images:RuntimeImage")
    .map((c) => {
      const name = c.name.replace(/^runtime-/, "");
      const { first, dockerfile, target, platforms } = build(c);
      const declared = outputs.runtimes?.[name];
      return {
        name,
        base: declared?.base ?? "",
        tags: declared?.tags ?? [],
        dockerfile,
        target,
        platforms,
        baseImageArg: (first.buildArgs?.BASE_IMAGE ?? "") as string,
      };
    });
  return {
    stack,
    matrix,
    registry: outputs.registry,
    bases,
    runtimes,
    resources: run.resources.map((r) => ({ type: r.type, name: r.name, parent: r.parent ?? null, parentType: r.parentType ?? null })),
  };
}

/** The human form: bases, runtimes and the resource tree. */
export function formatPlan(report: PlanReport): string {
  const out: string[] = [];
  out.push(`strata plan: stack ${report.stack}, matrix ${report.matrix}, registry ${String(report.registry)}`);
  out.push("");
  out.push(`Bases (${report.bases.length}): built once each, tagged by identity`);
  out.push(table(["BASE", "TAG", "TARGET", "PLATFORMS", "RUNTIMES"], report.bases.map((b) => [b.name, b.tag, b.target, b.platforms.join(","), summarise(b.consumers)])));
  out.push("");
  out.push(`Runtimes (${report.runtimes.length}): built FROM their base by digest`);
  out.push(table(["RUNTIME", "FROM", "TAGS", "PLATFORMS"], report.runtimes.map((r) => [r.name, r.base, r.tags.join(","), r.platforms.join(",")])));
  out.push("");
  out.push(`Resources (${report.resources.length})`);
  const kids = new Map<string | null, PlanReport["resources"]>();
  const keyOf = (type: string | null, name: string | null) => (name === null ? null : `${type}::${name}`);
  for (const r of report.resources) {
    const k = keyOf(r.parentType, r.parent);
    kids.set(k, [...(kids.get(k) ?? []), r]);
  }
  const walk = (parent: string | null, indent: string) => {
    for (const r of kids.get(parent) ?? []) {
      out.push(`${indent}${r.type}  ${r.name}`);
      walk(keyOf(r.type, r.name), `${indent}  `);
    }
  };
  walk(null, "  ");
  return out.join("\n");
}

function summarise(names: string[]): string {
  if (names.length <= 3) return names.join(",");
  return `${names.slice(0, 2).join(",")} +${names.length - 2} more`;
}

/** A plain left-aligned table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}
