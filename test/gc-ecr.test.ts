import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { test } from "node:test";
import { CreateRepositoryCommand, DescribeImagesCommand, ECRClient, PutImageCommand } from "@aws-sdk/client-ecr";
import { ecrDeleter } from "../cli/gc.ts";

/** strata gc's ECR port (BatchDeleteImage) against moto_server on 127.0.0.1. */
test("the ECR deleter removes exactly the image it is given (moto_server)", async (t) => {
  const port = await new Promise<number>((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
  const moto = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
  t.after(() => moto.kill("SIGTERM"));
  const ecr = new ECRClient({ region: "eu-west-1", endpoint: `http://127.0.0.1:${port}`, credentials: { accessKeyId: "test", secretAccessKey: "test" } });
  for (let i = 0; ; i++) {
    try {
      await ecr.send(new CreateRepositoryCommand({ repositoryName: "strata/bases" }));
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const manifest = (n: number) => JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${String(n).repeat(64)}`, size: n }, layers: [] });
  const put = async (tag: string, n: number) => (await ecr.send(new PutImageCommand({ repositoryName: "strata/bases", imageTag: tag, imageManifest: manifest(n) }))).image!.imageId!.imageDigest!;
  const gone = await put("alpha-aaaaaaaaaaaa", 1);
  await put("alpha-bbbbbbbbbbbb", 2);
  const deleter = ecrDeleter("123456789012.dkr.ecr.eu-west-1.amazonaws.com", ecr);
  assert.ok(deleter);
  assert.equal(ecrDeleter("ghcr.io"), null, "other registries use the registry API");
  await deleter.deleteDigest("strata/bases", gone);
  const left = (await ecr.send(new DescribeImagesCommand({ repositoryName: "strata/bases" }))).imageDetails!.flatMap((d) => d.imageTags ?? []);
  assert.deepEqual(left, ["alpha-bbbbbbbbbbbb"]);
  await deleter.deleteDigest("strata/bases", gone);
});
