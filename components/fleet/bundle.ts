import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as pulumi from "@pulumi/pulumi";
import { SCALER_BUNDLE_OPTIONS } from "../../scaler/bundle.ts";

/** Turns a scaler entry file into the Lambda code archive. Injectable so tests need no scaler sources. */
export type Bundler = (entry: string) => pulumi.asset.Archive | Promise<pulumi.asset.Archive>;

/** File name of the bundled handler inside the archive; the Lambda handler is `index.handler`. */
export const BUNDLE_FILE = "index.mjs";

/** Absolute path of a scaler entry point (`webhook`, `housekeeping`, `userdata`) in this repository. */
export function scalerEntry(name: string): string {
    return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "scaler", `${name}.ts`);
}

/**
 * Default bundler: esbuild at deploy time, every dependency inlined into one minified ESM file (the AWS SDK too,
 * so the deployed version is the pinned one, not the runtime's), with the scaler's own bundle options.
 */
export async function esbuildBundle(entry: string): Promise<pulumi.asset.AssetArchive> {
    const esbuild = await import("esbuild");
    const result = await esbuild.build({
        ...SCALER_BUNDLE_OPTIONS,
        entryPoints: [entry],
        outfile: BUNDLE_FILE,
        write: false,
        logLevel: "silent",
    });
    const out = result.outputFiles.find((f) => path.basename(f.path) === BUNDLE_FILE);
    if (!out) {
        throw new Error(`esbuild produced no ${BUNDLE_FILE} for ${entry}`);
    }
    return new pulumi.asset.AssetArchive({ [BUNDLE_FILE]: new pulumi.asset.StringAsset(out.text) });
}
