/**
 * A loopback sigstore (127.0.0.1 only) for the real `cosign` binary: the Fulcio CA, CT log and Rekor transparency
 * log of `@sigstore/mock`, whose handlers the package otherwise only mounts as in-process `nock` interceptors,
 * served over HTTP, plus GitHub Actions' OIDC token endpoint (what `cosign sign` calls on a runner when it sees
 * ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN). Routes:
 *   GET  /actions-token/<identity>?...&audience=sigstore   a JWT with the GitHub Actions claims of <identity>
 *   POST /api/v1/signingCert, /api/v2/signingCert          Fulcio: a code-signing certificate with an embedded SCT
 *   POST /api/v1/log/entries                               Rekor: a log entry with a signed entry timestamp
 * The trust material cosign needs (Fulcio root, CT log key, Rekor key) is written to `dir` as PEM files and named
 * in `env` (SIGSTORE_ROOT_FILE, SIGSTORE_CT_LOG_PUBLIC_KEY_FILE, SIGSTORE_REKOR_PUBLIC_KEY), so cosign verifies
 * certificates, SCTs and log entries against the mock's own keys, exactly as it does against sigstore's TUF root.
 */
import { execFileSync } from "node:child_process";
import { createPublicKey, generateKeyPairSync, randomBytes, sign as cryptoSign } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fulcioHandler, initializeCA, initializeCTLog } from "@sigstore/mock/dist/fulcio/index.js";
import { initializeTLog, rekorHandler } from "@sigstore/mock/dist/rekor/index.js";
import { initializeTSA, tsaHandler } from "@sigstore/mock/dist/timestamp/index.js";
import { GITHUB_OIDC_URL, workflowRef } from "../../components/github-trust.ts";

/** Who a job is, as GitHub Actions' OIDC token says it. */
export interface ActionsIdentity {
  /** `owner/name`. */
  repository: string;
  /** Workflow file, e.g. `.github/workflows/strata-build-bases.yml`. */
  workflow: string;
  /** The ref the workflow ran at, e.g. `refs/heads/main` or `refs/pull/7/merge`. */
  ref: string;
  /** `push`, `pull_request`, ... */
  event: string;
}

/** The claims GitHub Actions puts in an OIDC token for `id` (docs.github.com, "About security hardening with OpenID Connect"). */
export function actionsClaims(id: ActionsIdentity, audience: string): Record<string, string | number> {
  const now = Math.floor(Date.now() / 1000);
  const jobWorkflowRef = workflowRef(id.repository, id.workflow, id.ref);
  const [owner] = id.repository.split("/");
  return {
    iss: GITHUB_OIDC_URL,
    aud: audience,
    sub: `repo:${id.repository}:ref:${id.ref}`,
    iat: now,
    nbf: now - 5,
    exp: now + 300,
    jti: randomBytes(8).toString("hex"),
    repository: id.repository,
    repository_owner: owner!,
    repository_id: "123456789",
    repository_owner_id: "987654",
    repository_visibility: "private",
    ref: id.ref,
    ref_type: id.ref.startsWith("refs/tags/") ? "tag" : "branch",
    sha: "0123456789abcdef0123456789abcdef01234567",
    event_name: id.event,
    workflow: id.workflow.replace(/^.*\//, ""),
    workflow_ref: jobWorkflowRef,
    workflow_sha: "0123456789abcdef0123456789abcdef01234567",
    job_workflow_ref: jobWorkflowRef,
    job_workflow_sha: "0123456789abcdef0123456789abcdef01234567",
    runner_environment: "github-hosted",
    run_id: "4242",
    run_attempt: "1",
  };
}

/** A compact ES256 JWT (signed with a throwaway key: Fulcio's mock, like cosign, reads it without verifying). */
function jwt(claims: Record<string, unknown>): string {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${b64({ alg: "ES256", typ: "JWT" })}.${b64(claims)}`;
  const sig = cryptoSign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${input}.${sig.toString("base64url")}`;
}

/** The SAN Fulcio writes for a GitHub Actions token: the job's workflow, `https://github.com/<job_workflow_ref>`. */
const FULCIO_SAN_CLAIM = "strata_fulcio_san";
/** Fulcio's v1 certificate endpoint (what cosign 2.5 calls). */
const FULCIO_V1_PATH = "/api/v1/signingCert";

export interface LoopbackSigstore {
  /** `http://127.0.0.1:PORT`: Fulcio and Rekor URL alike. */
  url: string;
  /** SIGSTORE_ROOT_FILE, SIGSTORE_CT_LOG_PUBLIC_KEY_FILE, SIGSTORE_REKOR_PUBLIC_KEY for cosign. */
  trustEnv: Record<string, string>;
  /** Environment of a GitHub Actions job with `id-token: write` running as `id` (its token endpoint is this server). */
  jobEnv(id: ActionsIdentity): Record<string, string>;
  /** Requests served, `METHOD path` (token requests without their query). */
  requests: string[];
  close(): Promise<void>;
}

/** Starts the loopback sigstore; trust material goes to `dir`. */
export async function startSigstore(dir: string): Promise<LoopbackSigstore> {
  const caKeys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const ctKeys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const rekorKeys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const ctlog = await initializeCTLog(ctKeys);
  const ca = await initializeCA(caKeys, ctlog);
  const identities = new Map<string, ActionsIdentity>();
  const requests: string[] = [];
  let url = "";
  // The mock CA puts the claim it is told to into the SAN; Fulcio's GitHub issuer puts the job's workflow there.
  const fulcio = fulcioHandler(ca, { subjectClaim: FULCIO_SAN_CLAIM });
  let rekor: ReturnType<typeof rekorHandler> | undefined;

  const reply = (res: ServerResponse, status: number, body: string | ArrayBufferView, type = "application/json") => {
    res.writeHead(status, { "Content-Type": type });
    res.end(typeof body === "string" ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  };
  const readBody = async (req: IncomingMessage): Promise<string> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > 1 << 20) throw new Error("request body over 1 MiB");
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  };

  const server: Server = createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    requests.push(`${req.method} ${path}`);
    try {
      const token = /^\/actions-token\/([^/]+)$/.exec(path);
      if (req.method === "GET" && token) {
        const id = identities.get(decodeURIComponent(token[1]!));
        const audience = new URL(req.url!, url).searchParams.get("audience") ?? "";
        if (!id || !/^bearer request-token-/i.test(req.headers.authorization ?? "") || req.headers.authorization!.slice(7) !== `request-token-${token[1]}`) return reply(res, 401, '{"message":"bad request token"}');
        return reply(res, 200, JSON.stringify({ value: jwt(actionsClaims(id, audience)) }));
      }
      if (req.method === "POST" && (path === fulcio.path || path === FULCIO_V1_PATH)) {
        // cosign 2.5 speaks Fulcio's v1 API (token in the Authorization header, the PEM key base64 in JSON, the
        // chain back as PEM); the mock speaks v2. Same certificate either way.
        const raw = JSON.parse(await readBody(req)) as Record<string, any>;
        const v1 = path === FULCIO_V1_PATH;
        const token: string = v1 ? String(req.headers.authorization ?? "").replace(/^bearer /i, "") : raw.credentials?.oidcIdentityToken;
        const claims = JSON.parse(Buffer.from(String(token).split(".")[1] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
        if (claims.iss !== GITHUB_OIDC_URL || typeof claims.job_workflow_ref !== "string") return reply(res, 400, "not a GitHub Actions token");
        // What Fulcio derives from a GitHub token before issuing: the SAN is https://github.com/<job_workflow_ref>.
        const body = {
          credentials: { oidcIdentityToken: jwt({ ...claims, [FULCIO_SAN_CLAIM]: `https://github.com/${claims.job_workflow_ref}` }) },
          publicKeyRequest: v1 ? { publicKey: { content: Buffer.from(raw.publicKey.content, "base64").toString("utf8") } } : raw.publicKeyRequest,
        };
        const r = await fulcio.fn(JSON.stringify(body));
        if (!v1 || r.statusCode !== 201) return reply(res, r.statusCode, r.response, r.contentType ?? "text/plain");
        const chain = (JSON.parse(String(r.response)) as { signedCertificateEmbeddedSct: { chain: { certificates: string[] } } }).signedCertificateEmbeddedSct.chain.certificates;
        return reply(res, 201, chain.join(""), "application/pem-certificate-chain");
      }
      if (req.method === "POST" && rekor && path === rekor.path) {
        const r = await rekor.fn(await readBody(req));
        return reply(res, r.statusCode, r.response, r.contentType ?? "text/plain");
      }
      reply(res, 404, `{"message":"no route ${req.method} ${path}"}`);
    } catch (err) {
      reply(res, 500, JSON.stringify({ message: (err as Error).message }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const tlog = await initializeTLog(url, rekorKeys);
  rekor = rekorHandler(tlog);

  const pem = (der: ArrayBufferView, label: string) =>
    `-----BEGIN ${label}-----\n${Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
  const files = { root: join(dir, "fulcio-root.pem"), ct: join(dir, "ctlog.pub"), rekor: join(dir, "rekor.pub") };
  await writeFile(files.root, pem(ca.rootCertificate, "CERTIFICATE"));
  await writeFile(files.ct, createPublicKey({ key: ctlog.publicKey, format: "der", type: "spki" }).export({ format: "pem", type: "spki" }).toString());
  await writeFile(files.rekor, pem(tlog.publicKey, "PUBLIC KEY"));

  let n = 0;
  return {
    url,
    trustEnv: { SIGSTORE_ROOT_FILE: files.root, SIGSTORE_CT_LOG_PUBLIC_KEY_FILE: files.ct, SIGSTORE_REKOR_PUBLIC_KEY: files.rekor },
    jobEnv(id) {
      const key = `id${++n}`;
      identities.set(key, id);
      return { GITHUB_ACTIONS: "true", ACTIONS_ID_TOKEN_REQUEST_URL: `${url}/actions-token/${key}?api-version=2.0`, ACTIONS_ID_TOKEN_REQUEST_TOKEN: `request-token-${key}` };
    },
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface LoopbackTimestampAuthority {
  /** `https://127.0.0.1:PORT/api/v1/timestamp` (what strata:github.signing.timestampUrl names). */
  url: string;
  /** The loopback TLS certificate: give it to cosign (SSL_CERT_FILE) and curl (CURL_CA_BUNDLE). */
  tlsCaFile: string;
  /** Requests served, `METHOD path`. */
  requests: string[];
  close(): Promise<void>;
}

/** One DER element: tag byte, contents, and the offset after it. */
function derElement(buf: Buffer, at: number): { tag: number; body: Buffer; end: number } {
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  if (start + len > buf.length) throw new Error("truncated DER");
  return { tag, body: buf.subarray(start, start + len), end: start + len };
}
const derChildren = (body: Buffer) => {
  const out: ReturnType<typeof derElement>[] = [];
  for (let at = 0; at < body.length; ) {
    const e = derElement(body, at);
    out.push(e);
    at = e.end;
  }
  return out;
};
const HASH_OIDS: Record<string, string> = { "608648016503040201": "sha256", "608648016503040202": "sha384", "608648016503040203": "sha512" };

/**
 * The mock's RFC 3161 timestamp authority on loopback HTTPS (self-signed for 127.0.0.1, made with openssl):
 * `POST /api/v1/timestamp` takes the DER TimeStampReq cosign sends and answers with the mock's TimeStampResp;
 * `GET /api/v1/timestamp/certchain` gives its certificate chain (PEM), as sigstore's timestamp authority does.
 */
export async function startTimestampAuthority(dir: string): Promise<LoopbackTimestampAuthority> {
  const tsa = await initializeTSA(generateKeyPairSync("ec", { namedCurve: "prime256v1" }));
  const handler = tsaHandler(tsa);
  const keyFile = join(dir, "tsa-tls.key");
  const tlsCaFile = join(dir, "tsa-tls.crt");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", tlsCaFile], { stdio: "ignore" });
  const pem = (der: ArrayBufferView) => `-----BEGIN CERTIFICATE-----\n${Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
  const chain = pem(tsa.intCertificate) + pem(tsa.rootCertificate);
  const requests: string[] = [];
  const server = createHttpsServer({ key: await readFile(keyFile), cert: await readFile(tlsCaFile) }, async (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    try {
      if (req.method === "GET" && req.url === "/api/v1/timestamp/certchain") {
        res.writeHead(200, { "Content-Type": "application/pem-certificate-chain" });
        res.end(chain);
        return;
      }
      if (req.method !== "POST" || req.url !== handler.path) {
        res.writeHead(404);
        res.end();
        return;
      }
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      // TimeStampReq ::= SEQUENCE { version, messageImprint SEQUENCE { AlgorithmIdentifier, OCTET STRING }, reqPolicy OID
      // OPTIONAL, nonce INTEGER OPTIONAL, certReq BOOLEAN DEFAULT FALSE, ... } (RFC 3161 2.4.1); the mock takes JSON.
      const fields = derChildren(derElement(Buffer.concat(chunks), 0).body);
      const [algorithm, hashed] = derChildren(fields[1]!.body);
      const oid = derChildren(algorithm!.body)[0]!.body.toString("hex");
      // The mock encodes the nonce as a JS number: cosign's 160-bit nonce is kept to its low 48 bits (cosign does not
      // compare the nonce when it verifies a timestamp).
      const nonce = fields.find((f, i) => i > 1 && f.tag === 0x02)?.body;
      const json = {
        artifactHash: hashed!.body.toString("base64"),
        hashAlgorithm: HASH_OIDS[oid] ?? "sha256",
        nonce: nonce ? Number(BigInt(`0x${nonce.toString("hex")}`) & 0xffffffffffffn) : undefined,
        certificates: fields.some((f) => f.tag === 0x01 && f.body[0] !== 0),
      };
      const r = await handler.fn(JSON.stringify(json));
      res.writeHead(r.statusCode, { "Content-Type": r.contentType ?? "text/plain" });
      res.end(typeof r.response === "string" ? r.response : Buffer.from(r.response.buffer, r.response.byteOffset, r.response.byteLength));
    } catch (err) {
      res.writeHead(400, { "Content-Type": "text/plain" });
      res.end((err as Error).message);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/timestamp`,
    tlsCaFile,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
