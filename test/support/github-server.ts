/**
 * A loopback GitHub REST server (127.0.0.1 only) speaking the endpoints the scaler uses:
 *   POST   /app/installations/{id}/access_tokens      (App JWT, RS256, checked)
 *   POST   /orgs/{org}/actions/runners/generate-jitconfig
 *   POST   /repos/{owner}/{repo}/actions/runners/generate-jitconfig
 *   GET    /orgs/{org}/actions/runners | /repos/{owner}/{repo}/actions/runners
 *   DELETE /orgs/{org}/actions/runners/{id} | /repos/{owner}/{repo}/actions/runners/{id}
 *   GET    /repos/{owner}/{repo}/actions/jobs/{job_id}
 *   POST   /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun
 *   GET    /repos/{owner}/{repo}/actions/runs?status=queued, /repos/{owner}/{repo}/actions/runs/{run_id}/jobs
 * Installation tokens carry the permissions and repositories they were requested with, and every
 * route checks them as GitHub does. Scripted faults per route let tests replay rate limits and outages.
 */
import { generateKeyPairSync, randomBytes, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type Route = "access_tokens" | "jit" | "list" | "delete" | "job" | "rerun" | "runs" | "run_jobs";

export interface ServerJob {
  id: number;
  repository: string;
  status: string;
  conclusion: string | null;
  labels: string[];
  runner_name: string | null;
  run_id: number;
  run_attempt: number;
  name: string;
  created_at: string;
}

/** What an installation token was minted for. */
export interface TokenScope {
  permissions: Record<string, string>;
  repositories?: string[];
}

export interface ScriptedResponse {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface RecordedRequest {
  method: string;
  path: string;
  route: Route | "unknown";
  status: number;
}

export interface TestAppKey {
  privateKeyPem: string; // PKCS#1, as GitHub hands them out
  publicKey: KeyObject;
}

export function generateAppKey(): TestAppKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { privateKeyPem: privateKey.export({ type: "pkcs1", format: "pem" }).toString(), publicKey };
}

interface ServerRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
  labels: string[];
  scope: string;
}

export interface FakeGitHubServerOptions {
  appId: number;
  installationId: number;
  publicKey: KeyObject;
  /** "orgs/acme" or "repos/acme/app": the only scope the installation may manage runners in. */
  scope: string;
}

const WRITE_PERMISSION: Record<string, string> = { orgs: "organization_self_hosted_runners", repos: "administration" };

function b64urlJson(part: string): unknown {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

export class FakeGitHubServer {
  readonly requests: RecordedRequest[] = [];
  readonly runners = new Map<number, ServerRunner>();
  readonly tokens = new Map<string, TokenScope>();
  /** The body of every installation token request (permissions, repositories). */
  readonly tokenRequests: TokenScope[] = [];
  readonly jobs = new Map<number, ServerJob>();
  readonly reruns: number[] = [];
  private nextJobId = 5_000_000;
  /** Problems found in App JWTs (tests assert it stays empty). */
  readonly jwtProblems: string[] = [];
  private readonly scripts = new Map<Route, ScriptedResponse[]>();
  private nextRunnerId = 1000;
  private server: Server | undefined;
  url = "";

  constructor(private readonly opts: FakeGitHubServerOptions) {}

  /** Answer the next calls of a route with these responses, in order, before behaving normally. */
  script(route: Route, ...responses: ScriptedResponse[]): void {
    this.scripts.set(route, [...(this.scripts.get(route) ?? []), ...responses]);
  }

  /** Answer every call of a route with this response until clearScripts(). */
  scriptForever(route: Route, response: ScriptedResponse): void {
    this.script(route, ...Array.from({ length: 1000 }, () => response));
  }

  clearScripts(): void {
    this.scripts.clear();
  }

  count(route: Route): number {
    return this.requests.filter((r) => r.route === route).length;
  }

  addJob(repository: string, job: Partial<ServerJob> & { id: number; labels: string[] }): ServerJob {
    const full: ServerJob = { status: "queued", conclusion: null, runner_name: null, run_id: job.id, run_attempt: 1, name: "build", created_at: new Date().toISOString(), ...job, repository };
    this.jobs.set(full.id, full);
    return full;
  }

  addRunner(name: string, status = "offline", busy = false): number {
    const id = this.nextRunnerId++;
    this.runners.set(id, { id, name, status, busy, labels: ["self-hosted"], scope: this.opts.scope });
    return id;
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.send(res, req, "unknown", 500, { message: String(err) }));
    });
    this.server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private send(res: ServerResponse, req: IncomingMessage, route: Route | "unknown", status: number, body?: unknown, headers: Record<string, string> = {}): void {
    this.requests.push({ method: req.method ?? "", path: req.url ?? "", route, status });
    const text = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, { ...(text ? { "content-type": "application/json; charset=utf-8" } : {}), ...headers });
    res.end(text);
  }

  private checkJwt(auth: string | undefined): string | undefined {
    const m = /^bearer (.+)$/i.exec(auth ?? "");
    if (!m) return "no bearer JWT";
    const parts = m[1]!.split(".");
    if (parts.length !== 3) return "JWT is not three parts";
    try {
      const header = b64urlJson(parts[0]!) as { alg?: string };
      if (header.alg !== "RS256") return `JWT alg ${header.alg}`;
      const ok = cryptoVerify("sha256", Buffer.from(`${parts[0]}.${parts[1]}`), this.opts.publicKey, Buffer.from(parts[2]!, "base64url"));
      if (!ok) return "JWT signature invalid";
      const claims = b64urlJson(parts[1]!) as { iss?: unknown; iat?: unknown; exp?: unknown };
      const now = Math.floor(Date.now() / 1000);
      if (String(claims.iss) !== String(this.opts.appId)) return `JWT iss ${String(claims.iss)}`;
      if (typeof claims.iat !== "number" || typeof claims.exp !== "number") return "JWT iat/exp missing";
      if (claims.iat > now + 60) return "JWT iat in the future";
      if (claims.exp <= now) return "JWT expired";
      if (claims.exp - claims.iat > 600) return "JWT lifetime over 10 minutes";
    } catch (err) {
      return `JWT unreadable: ${String(err)}`;
    }
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const rawBody = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const method = req.method ?? "GET";
    const path = url.pathname;

    let route: Route | "unknown" = "unknown";
    let scope = "";
    let runnerId: number | undefined;
    let m: RegExpExecArray | null;
    if ((m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path)) && method === "POST") route = "access_tokens";
    else if ((m = /^\/(orgs\/[^/]+|repos\/[^/]+\/[^/]+)\/actions\/runners\/generate-jitconfig$/.exec(path)) && method === "POST") [route, scope] = ["jit", m[1]!];
    else if ((m = /^\/(orgs\/[^/]+|repos\/[^/]+\/[^/]+)\/actions\/runners$/.exec(path)) && method === "GET") [route, scope] = ["list", m[1]!];
    else if ((m = /^\/(orgs\/[^/]+|repos\/[^/]+\/[^/]+)\/actions\/runners\/(\d+)$/.exec(path)) && method === "DELETE") [route, scope, runnerId] = ["delete", m[1]!, Number(m[2])];
    else if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/jobs\/(\d+)$/.exec(path)) && method === "GET") [route, scope, runnerId] = ["job", m[1]!, Number(m[2])];
    else if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/jobs\/(\d+)\/rerun$/.exec(path)) && method === "POST") [route, scope, runnerId] = ["rerun", m[1]!, Number(m[2])];
    else if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/runs$/.exec(path)) && method === "GET") [route, scope] = ["runs", m[1]!];
    else if ((m = /^\/repos\/([^/]+\/[^/]+)\/actions\/runs\/(\d+)\/jobs$/.exec(path)) && method === "GET") [route, scope, runnerId] = ["run_jobs", m[1]!, Number(m[2])];
    if (route === "unknown") return this.send(res, req, route, 404, { message: "Not Found" });

    const scripted = this.scripts.get(route)?.shift();
    if (scripted) return this.send(res, req, route, scripted.status, scripted.body ?? { message: `scripted ${scripted.status}` }, scripted.headers);

    if (route === "access_tokens") {
      const problem = this.checkJwt(req.headers.authorization);
      if (problem) {
        this.jwtProblems.push(problem);
        return this.send(res, req, route, 401, { message: problem });
      }
      if (Number(m![1]) !== this.opts.installationId) return this.send(res, req, route, 404, { message: "installation not found" });
      const asked = (rawBody ? JSON.parse(rawBody) : {}) as { permissions?: Record<string, string>; repositories?: string[] };
      const tokenScope: TokenScope = { permissions: asked.permissions ?? { organization_self_hosted_runners: "write", administration: "write", actions: "write" }, ...(asked.repositories ? { repositories: asked.repositories } : {}) };
      this.tokenRequests.push(tokenScope);
      const token = `ghs_${randomBytes(18).toString("hex")}`;
      this.tokens.set(token, tokenScope);
      return this.send(res, req, route, 201, {
        token,
        expires_at: new Date(Date.now() + 3600_000).toISOString(),
        permissions: tokenScope.permissions,
        repository_selection: tokenScope.repositories ? "selected" : "all",
      });
    }

    const tok = /^token (.+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const granted = tok ? this.tokens.get(tok) : undefined;
    if (!granted) return this.send(res, req, route, 401, { message: "Bad credentials" });
    const forbidden = () => this.send(res, req, route, 403, { message: "Resource not accessible by integration" });
    const repoAllowed = (full: string) => granted.repositories === undefined || granted.repositories.some((r) => r.toLowerCase() === full.split("/")[1]!.toLowerCase());
    if (route === "job" || route === "rerun" || route === "runs" || route === "run_jobs") {
      const need = route === "rerun" ? ["write"] : ["read", "write"];
      if (!need.includes(granted.permissions.actions ?? "") || !repoAllowed(scope) || scope.split("/")[0]!.toLowerCase() !== this.opts.scope.split("/")[1]!.toLowerCase()) return forbidden();
      return this.handleJobs(req, res, route, scope, runnerId, url);
    }
    if (scope.toLowerCase() !== this.opts.scope.toLowerCase()) return forbidden();
    if (granted.permissions[WRITE_PERMISSION[scope.split("/")[0]!]!] !== "write") return forbidden();
    if (scope.startsWith("repos/") && !repoAllowed(scope.slice("repos/".length))) return forbidden();

    if (route === "jit") {
      let body: { name?: unknown; runner_group_id?: unknown; labels?: unknown; work_folder?: unknown };
      try {
        body = JSON.parse(rawBody);
      } catch {
        return this.send(res, req, route, 400, { message: "Problems parsing JSON" });
      }
      if (typeof body.name !== "string" || !body.name) return this.send(res, req, route, 422, { message: "name required" });
      if (typeof body.runner_group_id !== "number") return this.send(res, req, route, 422, { message: "Invalid input: object is missing required key: runner_group_id" });
      if (!Array.isArray(body.labels) || body.labels.length < 1 || body.labels.length > 100 || !body.labels.every((l) => typeof l === "string")) {
        return this.send(res, req, route, 422, { message: "labels must be 1-100 strings" });
      }
      if (body.work_folder !== undefined && typeof body.work_folder !== "string") return this.send(res, req, route, 422, { message: "work_folder" });
      if ([...this.runners.values()].some((r) => r.name === body.name)) return this.send(res, req, route, 409, { message: "Already exists - A runner with the name already exists." });
      const id = this.nextRunnerId++;
      const runner: ServerRunner = { id, name: body.name, status: "offline", busy: false, labels: body.labels as string[], scope };
      this.runners.set(id, runner);
      const encoded = Buffer.from(JSON.stringify({ ".runner": { agentId: id, agentName: body.name }, ".credentials": randomBytes(32).toString("hex") })).toString("base64");
      return this.send(res, req, route, 201, {
        runner: { id, name: runner.name, os: "unknown", status: "offline", busy: false, labels: runner.labels.map((name, i) => ({ id: i + 1, name, type: "custom" })) },
        encoded_jit_config: encoded,
      });
    }

    if (route === "list") {
      const perPage = Math.min(100, Math.max(1, Number(url.searchParams.get("per_page") ?? 30)));
      const page = Math.max(1, Number(url.searchParams.get("page") ?? 1));
      const name = url.searchParams.get("name");
      const all = [...this.runners.values()].filter((r) => name === null || r.name === name);
      const slice = all.slice((page - 1) * perPage, page * perPage);
      return this.send(res, req, route, 200, {
        total_count: all.length,
        runners: slice.map((r) => ({ id: r.id, name: r.name, os: "linux", status: r.status, busy: r.busy, labels: r.labels.map((n, i) => ({ id: i + 1, name: n, type: "custom" })) })),
      });
    }

    // delete
    const r = this.runners.get(runnerId!);
    if (!r) return this.send(res, req, route, 404, { message: "Not Found" });
    if (r.busy) return this.send(res, req, route, 422, { message: `Bad request - Runner "${r.name}" is still running a job"` });
    this.runners.delete(runnerId!);
    return this.send(res, req, route, 204);
  }

  private handleJobs(req: IncomingMessage, res: ServerResponse, route: Route, repository: string, id: number | undefined, url: URL): void {
    const same = (a: string) => a.toLowerCase() === repository.toLowerCase();
    if (route === "job" || route === "rerun") {
      const job = this.jobs.get(id!);
      if (!job || !same(job.repository)) return this.send(res, req, route, 404, { message: "Not Found" });
      if (route === "job") return this.send(res, req, route, 200, { ...job, html_url: `https://github.com/${job.repository}/actions/runs/${job.run_id}/job/${job.id}` });
      if (job.status !== "completed") return this.send(res, req, route, 403, { message: "This workflow job is not completed" });
      this.reruns.push(job.id);
      this.addJob(job.repository, { id: this.nextJobId++, labels: job.labels, run_id: job.run_id, run_attempt: job.run_attempt + 1, name: job.name });
      return this.send(res, req, route, 201, {});
    }
    const jobs = [...this.jobs.values()].filter((j) => same(j.repository));
    if (route === "runs") {
      const status = url.searchParams.get("status");
      const runs = [...new Set(jobs.filter((j) => status === null || j.status === status).map((j) => j.run_id))].map((run) => ({ id: run, status: "queued" }));
      return this.send(res, req, route, 200, { total_count: runs.length, workflow_runs: runs });
    }
    const ofRun = jobs.filter((j) => j.run_id === id);
    const latest = new Map<string, ServerJob>();
    for (const j of ofRun) if ((latest.get(j.name)?.run_attempt ?? 0) < j.run_attempt) latest.set(j.name, j);
    const list = url.searchParams.get("filter") === "all" ? ofRun : [...latest.values()];
    return this.send(res, req, route, 200, { total_count: list.length, jobs: list });
  }
}
