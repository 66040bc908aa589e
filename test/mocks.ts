/**
 * Shared helpers for Pulumi mock-runtime tests.
 *
 *   const mocks = await installMocks({ calls: { "aws:index/getRegion:getRegion": () => ({ region: "us-west-2" }) } });
 *   const { Thing } = await import("../components/thing.ts");   // import only after installMocks
 *   new Thing("t", {...});
 *   const role = await mocks.findCreatedResource("aws:iam/role:Role", "t-role");
 *
 * `setMocks` can run once per process (node --test runs each file in its own process).
 * Unknown invoke tokens throw, so a new data source cannot slip in unmocked.
 */
import * as pulumi from "@pulumi/pulumi";

/** Marker key and value of a secret as it reaches the mocks. */
export const SECRET_SIG = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270";

/** One resource registration as the mock monitor saw it. */
export interface RecordedResource {
    type: string;
    name: string;
    inputs: Record<string, any>;
    id: string;
    state: Record<string, any>;
    provider?: string;
}

/** One invoke as the mock monitor saw it. */
export interface RecordedCall {
    token: string;
    inputs: Record<string, any>;
}

export interface InstallMocksOptions {
    /** Invoke results by token; a token not listed here throws. */
    calls?: Record<string, (inputs: Record<string, any>) => Record<string, any>>;
    /** Extra output state of a resource, by type token (merged over the inputs). */
    state?: Record<string, (r: { name: string; inputs: Record<string, any>; id: string }) => Record<string, any>>;
    /** Physical id of a resource. Default: `<name>-id`. */
    id?: (type: string, name: string, inputs: Record<string, any>) => string;
    project?: string;
    stack?: string;
    preview?: boolean;
}

export interface Mocks {
    readonly resources: RecordedResource[];
    readonly calls: RecordedCall[];
    /** The resource of `type` (and `name`), waiting up to `timeoutMs` for its registration. Throws if absent or ambiguous. */
    findCreatedResource(type: string, name?: string | RegExp, timeoutMs?: number): Promise<RecordedResource>;
    /** Every resource of `type` (optionally matching `name`) registered so far, after registrations settle. */
    findAll(type: string, name?: string | RegExp): Promise<RecordedResource[]>;
    /** Resolves once no new registration arrived for `quietMs`. */
    settled(quietMs?: number): Promise<void>;
}

function matches(r: { type: string; name: string }, type: string, name?: string | RegExp): boolean {
    if (r.type !== type) {
        return false;
    }
    if (name === undefined) {
        return true;
    }
    return typeof name === "string" ? r.name === name : name.test(r.name);
}

/** Install strict mocks and return the recorder. Call before importing any program or component. */
export async function installMocks(options: InstallMocksOptions = {}): Promise<Mocks> {
    const resources: RecordedResource[] = [];
    const calls: RecordedCall[] = [];
    let lastChange = Date.now();

    await pulumi.runtime.setMocks({
        newResource(args: pulumi.runtime.MockResourceArgs) {
            const id = options.id?.(args.type, args.name, args.inputs) ?? `${args.name}-id`;
            const extra = options.state?.[args.type]?.({ name: args.name, inputs: args.inputs, id }) ?? {};
            const state = { ...args.inputs, ...extra };
            resources.push({ type: args.type, name: args.name, inputs: args.inputs, id, state, provider: args.provider });
            lastChange = Date.now();
            return { id, state };
        },
        call(args: pulumi.runtime.MockCallArgs) {
            calls.push({ token: args.token, inputs: args.inputs });
            lastChange = Date.now();
            const fn = options.calls?.[args.token];
            if (!fn) {
                throw new Error(`unmocked invoke ${args.token} (${JSON.stringify(args.inputs)})`);
            }
            return fn(args.inputs);
        },
    }, options.project ?? "strata", options.stack ?? "test", options.preview ?? false);

    const settled = async (quietMs = 100) => {
        while (Date.now() - lastChange < quietMs) {
            await new Promise((r) => setTimeout(r, quietMs / 4));
        }
    };

    return {
        resources,
        calls,
        settled,
        async findCreatedResource(type, name, timeoutMs = 5000) {
            const deadline = Date.now() + timeoutMs;
            for (;;) {
                const found = resources.filter((r) => matches(r, type, name));
                if (found.length > 1) {
                    throw new Error(`${found.length} resources of ${type} match ${String(name)}: ${found.map((r) => r.name).join(", ")}`);
                }
                if (found.length === 1) {
                    return found[0]!;
                }
                if (Date.now() > deadline) {
                    const seen = [...new Set(resources.map((r) => `${r.type} ${r.name}`))].join("\n  ");
                    throw new Error(`no ${type} named ${String(name ?? "*")} was registered; saw:\n  ${seen}`);
                }
                await new Promise((r) => setTimeout(r, 20));
            }
        },
        async findAll(type, name) {
            await settled();
            return resources.filter((r) => matches(r, type, name));
        },
    };
}

/** Whether a value as seen by the mocks is a wrapped secret. */
export function isSecret(v: unknown): v is { value: unknown } {
    return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SECRET_SIG] === SECRET_SIG_VALUE;
}

/** The value inside a wrapped secret; throws when `v` is not one. */
export function unwrapSecret<T = unknown>(v: unknown): T {
    if (!isSecret(v)) {
        throw new Error(`expected a wrapped secret, got ${JSON.stringify(v)}`);
    }
    return v.value as T;
}

/** Every string reachable in `v` outside wrapped secrets (what would land in state in plain text). */
export function plainStrings(v: unknown, out: string[] = []): string[] {
    if (isSecret(v)) {
        return out;
    }
    if (typeof v === "string") {
        out.push(v);
    } else if (Array.isArray(v)) {
        v.forEach((x) => plainStrings(x, out));
    } else if (typeof v === "object" && v !== null) {
        Object.values(v).forEach((x) => plainStrings(x, out));
    }
    return out;
}

/** The value of an output (under mocks, outputs resolve without an engine). */
export function valueOf<T>(o: pulumi.Output<T>): Promise<T> {
    return new Promise((resolve) => o.apply((v) => { resolve(v); return v; }));
}

/** Whether an output is marked secret. */
export function isSecretOutput(o: pulumi.Output<unknown>): Promise<boolean> {
    return pulumi.isSecret(o);
}
