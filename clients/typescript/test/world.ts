/**
 * The test world: test/world/world.py (the repository's Python venv) starts
 * Postgres, the Gmail simulator and `mailwatch serve`, and carries out
 * commands (restart the server or Postgres, read the change log, drive the
 * simulator) that the tests send it as JSON lines. Stopped by its pid.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";

// dist/test/world.js -> clients/typescript
const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const repoRoot = resolve(packageDir, "..", "..");

export function pythonPath(): string {
  return process.env.MAILWATCH_PYTHON || join(repoRoot, ".venv", "bin", "python");
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

export interface Tenant {
  tenantId: string;
  apiKey: string;
}

export class World {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private exited = false;
  private readonly stderr: string[] = [];
  target = "";
  simUrl = "";
  project = "";

  private constructor(private readonly child: ChildProcessByStdio<Writable, Readable, Readable>) {
    createInterface({ input: child.stdout }).on("line", (line) => this.onLine(line));
    child.stderr.on("data", (data: Buffer) => {
      this.stderr.push(data.toString());
      if (this.stderr.length > 200) this.stderr.shift();
    });
    child.on("exit", () => {
      this.exited = true;
      for (const { reject } of this.pending.values()) {
        reject(new Error(`the test world exited:\n${this.stderrTail()}`));
      }
      this.pending.clear();
    });
  }

  static async start(): Promise<World> {
    const python = pythonPath();
    if (!existsSync(python)) {
      throw new Error(`no Python at ${python}: create the repository's .venv as README says, or set MAILWATCH_PYTHON`);
    }
    const child = spawn(python, [join(packageDir, "test", "world", "world.py")], {
      cwd: repoRoot,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
    });
    const world = new World(child);
    const started = (await world.waitFor(0)) as { target: string; simUrl: string; project: string };
    Object.assign(world, started);
    return world;
  }

  private onLine(line: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(line) as Reply;
    } catch {
      return; // not ours (a stray print)
    }
    const waiter = this.pending.get(reply.id);
    if (waiter === undefined) return;
    this.pending.delete(reply.id);
    if (reply.ok) waiter.resolve(reply.result);
    else waiter.reject(new Error(`test world: ${reply.error}`));
  }

  private waitFor(id: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.exited) reject(new Error(`the test world exited:\n${this.stderrTail()}`));
      else this.pending.set(id, { resolve, reject });
    });
  }

  stderrTail(): string {
    return this.stderr.join("").slice(-4000);
  }

  /** Sends a command and waits for its answer. */
  command<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    const answer = this.waitFor(id);
    this.child.stdin.write(`${JSON.stringify({ id, cmd, args })}\n`);
    return answer as Promise<T>;
  }

  /** A SimulatorControl call. */
  sim<T = unknown>(method: string, args: unknown[] = [], kwargs: Record<string, unknown> = {}): Promise<T> {
    return this.command<T>("sim", { method, args, kwargs });
  }

  newTenant(): Promise<Tenant> {
    return this.command<Tenant>("new_tenant");
  }

  /** The tenant's committed event ids, in commit order. */
  committed(tenantId: string): Promise<string[]> {
    return this.command<string[]>("committed", { tenant_id: tenantId });
  }

  /** A mailbox in the simulator and a service-account key (JSON) its domain granted delegation. */
  async serviceAccount(email: string): Promise<{ serviceAccount: { jsonKey: string } }> {
    await this.sim("create_mailbox", [email]);
    const domain = email.slice(email.lastIndexOf("@") + 1);
    const key = await this.sim("create_service_account_key", [], { project_id: this.project, delegate_domains: [domain] });
    return { serviceAccount: { jsonKey: JSON.stringify(key) } };
  }

  async insertMessage(email: string, fields: Record<string, unknown> = {}): Promise<string> {
    const message = await this.sim<{ id: string }>("insert_message", [email], { label_ids: ["INBOX"], ...fields });
    return message.id;
  }

  /** Stops everything the world started (asks, then SIGKILLs its pid after 60 s). */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin.end(`${JSON.stringify({ id: 0, cmd: "stop" })}\n`);
    const patience = new AbortController();
    const timedOut = await Promise.race([
      exited.then(() => false),
      delay(60_000, true, { signal: patience.signal }).catch(() => false),
    ]);
    patience.abort(); // no timer left to keep the test process alive
    if (timedOut && this.child.pid !== undefined) {
      process.kill(this.child.pid, "SIGKILL");
      await exited;
    }
  }
}

/** Waits until `check` holds (polling every 50 ms), failing after `timeoutMs` with `what`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms`);
    }
    await delay(50);
  }
}
