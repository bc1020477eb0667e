// The client against the real service (test/world.ts): every MailboxService
// call, every error shape, retries, TLS, and change streams that survive
// server and Postgres restarts with nothing lost and nothing repeated.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import {
  type ChangeEvent,
  type ChangeStream,
  CursorExpiredError,
  DeadlineExceededError,
  EventType,
  FailedPreconditionError,
  FileCheckpointStore,
  GrpcStatus,
  InvalidArgumentError,
  InvalidCursorError,
  MailboxState,
  MailwatchClient,
  MemoryCheckpointStore,
  NotFoundError,
  RateLimitedError,
  readAll,
  RpcError,
  tlsFromFiles,
  UnauthenticatedError,
  UnavailableError,
} from "../src/index.js";
import { type Tenant, waitUntil, World } from "./world.js";

let world: World;
let scratch: string;
const clients: MailwatchClient[] = [];

before(async () => {
  world = await World.start();
  scratch = await mkdtemp(join(tmpdir(), "mailwatch-ts-service-"));
}, { timeout: 180_000 });

after(async () => {
  for (const client of clients) client.close();
  await world?.stop();
  await rm(scratch, { recursive: true, force: true });
});

const FAST_RECONNECT = { initialBackoffMs: 100, maxBackoffMs: 500 };

function clientFor(tenant: Tenant, options: ConstructorParameters<typeof MailwatchClient>[1] = {}): MailwatchClient {
  const client = new MailwatchClient(world.target, { apiKey: tenant.apiKey, streamRetry: FAST_RECONNECT, ...options });
  clients.push(client);
  return client;
}

/** Iterates `stream` in the background into `events`; the promise settles when the iteration ends. */
function consume(stream: ChangeStream, events: ChangeEvent[]): Promise<void> {
  return (async () => {
    for await (const event of stream) events.push(event);
  })();
}

const addedIds = (events: ChangeEvent[]) =>
  events.filter((e) => e.type === EventType.EVENT_TYPE_MESSAGE_ADDED).map((e) => e.messageId);

async function rejection(promise: Promise<unknown>): Promise<RpcError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RpcError, `not an RpcError: ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

/**
 * Every event the tenant committed was received once, in commit order: waits
 * until the stream has delivered all that the change log holds, then compares
 * the two id lists (a duplicate or a gap makes them differ).
 */
async function assertReceivedExactlyTheCommitted(tenant: Tenant, received: ChangeEvent[]): Promise<void> {
  const committed = await world.committed(tenant.tenantId);
  await waitUntil(() => received.length >= committed.length, "every committed event received", 60_000);
  await delay(1500); // a heartbeat or so: anything extra (a duplicate) would show now
  assert.deepEqual(
    received.map((e) => e.id),
    await world.committed(tenant.tenantId),
  );
}

describe("MailboxService calls", () => {
  it("registers, batch-registers, gets, lists, stops, sends a test event", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const credentials = await world.serviceAccount("ts-ann@example.com");
    const mailbox = await client.registerMailbox("ts-ann@example.com", { credentials, labelIds: ["INBOX"] });
    assert.equal(mailbox.emailAddress, "ts-ann@example.com");
    assert.equal(mailbox.state, MailboxState.MAILBOX_STATE_ACTIVE);
    assert.equal((await client.registerMailbox("ts-ann@example.com", { credentials })).id, mailbox.id); // idempotent

    await world.sim("create_mailbox", ["ts-bob@example.com"]);
    const results = await client.registerMailboxes(["ts-bob@example.com", "not an address"], {
      serviceAccount: credentials.serviceAccount,
    });
    assert.equal(results.length, 2);
    assert.equal(results[0].status?.code, GrpcStatus.OK);
    assert.equal(results[0].mailbox?.emailAddress, "ts-bob@example.com");
    assert.equal(results[1].status?.code, GrpcStatus.INVALID_ARGUMENT);
    const bob = results[0].mailbox!;

    assert.equal((await client.getMailbox(mailbox.id)).id, mailbox.id);
    const page = await client.listMailboxes({ pageSize: 1 });
    assert.equal(page.items.length, 1);
    assert.ok(page.nextPageToken);
    const all = [];
    for await (const item of client.iterMailboxes({ pageSize: 1 })) all.push(item.id);
    assert.deepEqual(all.sort(), [mailbox.id, bob.id].sort());

    const stopped = await client.stopMailbox(bob.id);
    assert.equal(stopped.state, MailboxState.MAILBOX_STATE_STOPPED);
    assert.equal((await client.stopMailbox(bob.id)).state, MailboxState.MAILBOX_STATE_STOPPED); // idempotent
    const active = await client.listMailboxes({ states: ["ACTIVE"] });
    assert.deepEqual(active.items.map((m) => m.id), [mailbox.id]);

    const test = await client.sendTestEvent(mailbox.id, { note: "wiring check" });
    assert.equal(test.type, EventType.EVENT_TYPE_TEST);
    assert.equal(test.mailboxId, mailbox.id);
    assert.equal(test.attributes["note"], "wiring check");

    // The tenant has no Google settings of its own (it uses the deployment's topic).
    assert.ok((await rejection(client.getGoogleSettings())) instanceof NotFoundError);
  });

  it("reads a message as metadata, as a raw byte stream and as part chunks", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-big@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const body = "x".repeat(3 * 1024 * 1024) + "\nend\n"; // more than one 1 MiB chunk
    const id = await world.insertMessage(email, { subject: "Big", body });

    const raw = await client.getMessage(mailbox.id, id, { format: "raw" });
    assert.ok(raw.raw !== undefined && raw.parts === undefined);
    let chunks = 0;
    const pieces: Buffer[] = [];
    for await (const chunk of raw.raw) {
      chunks += 1;
      pieces.push(chunk as Buffer);
    }
    const source = Buffer.concat(pieces);
    assert.equal(source.length, Number(raw.message.rawSize));
    assert.ok(chunks >= 3, `${chunks} chunks`);
    assert.match(source.subarray(0, 4096).toString(), /^Subject: Big\r?$/m);

    const full = await client.getMessage(mailbox.id, id, { format: "full" });
    const bodies = new Map<string, Buffer[]>();
    for await (const chunk of full.parts!) {
      bodies.set(chunk.partId, [...(bodies.get(chunk.partId) ?? []), chunk.data]);
    }
    const root = full.message.payload!.partId;
    assert.equal(Buffer.concat(bodies.get(root)!).toString().replaceAll("\r\n", "\n"), body);

    const meta = await client.getMessage(mailbox.id, id, { metadataHeaders: ["Subject"] });
    assert.deepEqual(meta.message.metadata?.headers, [{ name: "Subject", value: "Big" }]);
    assert.equal(meta.raw, undefined);

    // A stream dropped half-way releases its call; the client stays usable.
    const dropped = await client.getMessage(mailbox.id, id, { format: "raw" });
    for await (const chunk of dropped.raw!) {
      assert.ok(chunk.length > 0);
      break;
    }
    assert.equal((await readAll((await client.getMessage(mailbox.id, id, { format: "raw" })).raw!)).length, source.length);

    await world.sim("delete_message", [email, id]);
    const gone = await rejection(client.getMessage(mailbox.id, id));
    assert.ok(gone instanceof NotFoundError);
    assert.equal(gone.reason, "MESSAGE_NOT_FOUND");
    await assert.rejects(client.getMessage(mailbox.id, id, { format: "html" as "raw" }), TypeError);
  });
});

describe("listing messages", () => {
  it("pages a mailbox's messages newest first, with labels when asked", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-list@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const ids: string[] = [];
    for (let n = 0; n < 5; n += 1) {
      ids.push(await world.insertMessage(email, { subject: `m${n}`, label_ids: n % 2 ? ["INBOX", "STARRED"] : ["INBOX"] }));
    }
    const newestFirst = [...ids].reverse();

    const page = await client.listMessages(mailbox.id, { pageSize: 2 });
    assert.deepEqual(page.items.map((m) => m.id), newestFirst.slice(0, 2));
    assert.ok(page.nextPageToken);
    assert.deepEqual(page.items[0].labelIds, []); // labels only when asked
    const all: string[] = [];
    for await (const message of client.iterMessages(mailbox.id, { pageSize: 2 })) all.push(message.id);
    assert.deepEqual(all, newestFirst);

    const starred = await client.listMessages(mailbox.id, { labelIds: ["STARRED"], includeLabels: true });
    assert.deepEqual(starred.items.map((m) => m.id), [ids[3], ids[1]]);
    assert.deepEqual(starred.items.map((m) => [...m.labelIds].sort()), [["INBOX", "STARRED"], ["INBOX", "STARRED"]]);
    assert.equal(starred.nextPageToken, "");

    const badToken = await rejection(client.listMessages(mailbox.id, { pageToken: page.nextPageToken, query: "x" }));
    assert.ok(badToken instanceof InvalidArgumentError);
    assert.deepEqual(badToken.fieldViolations.map((v) => v.field), ["page_token"]);
    const stranger = clientFor(await world.newTenant());
    assert.ok((await rejection(stranger.listMessages(mailbox.id))) instanceof NotFoundError);
  });
});

describe("attachments", () => {
  it("streams an attachment past gRPC's 4 MiB byte-exact", { timeout: 120_000 }, async () => {
    const client = clientFor(await world.newTenant());
    const email = "ts-att@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const attachment = randomBytes(6 * 1024 * 1024 + 3);
    const base64 = attachment.toString("base64").replace(/.{76}/g, "$&\r\n");
    const source = Buffer.from(
      [
        `From: bob@example.com`,
        `To: ${email}`,
        `Subject: Data`,
        `MIME-Version: 1.0`,
        `Content-Type: multipart/mixed; boundary="b1"`,
        ``,
        `--b1`,
        `Content-Type: text/plain`,
        ``,
        `The data is attached.`,
        `--b1`,
        `Content-Type: application/octet-stream`,
        `Content-Disposition: attachment; filename="data.bin"`,
        `Content-Transfer-Encoding: base64`,
        ``,
        base64,
        `--b1--`,
        ``,
      ].join("\r\n"),
    );
    const [inserted] = await world.sim<{ id: string }[]>("insert_messages", [
      [{ emailAddress: email, raw: source.toString("base64url"), labelIds: ["INBOX"] }],
    ]);
    const full = await client.getMessage(mailbox.id, inserted.id, { format: "full" });
    for await (const _ of full.parts!) {
      // read to the end to release the call
    }
    const part = full.message.payload!.parts.find((p) => p.filename === "data.bin")!;
    assert.ok(part.attachmentId);

    const fetched = await client.getAttachment(mailbox.id, inserted.id, part.attachmentId);
    assert.equal(fetched.size, attachment.length);
    const data = await readAll(fetched.data);
    assert.equal(createHash("sha256").update(data).digest("hex"), createHash("sha256").update(attachment).digest("hex"));

    const unknown = await rejection(client.getAttachment(mailbox.id, inserted.id, "ANGjdJnope"));
    assert.ok(unknown instanceof NotFoundError);
    assert.equal(unknown.reason, "ATTACHMENT_NOT_FOUND");
    const bad = await rejection(client.getAttachment(mailbox.id, inserted.id, "not/base64url"));
    assert.ok(bad instanceof InvalidArgumentError);
    assert.deepEqual(bad.fieldViolations.map((v) => v.field), ["attachment_id"]);
  });
});

describe("errors", () => {
  it("has a typed error with the server's details for each failure", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const other = await world.newTenant();
    const client = clientFor(tenant);
    const theirs = await clientFor(other).registerMailbox("ts-own@example.com", {
      credentials: await world.serviceAccount("ts-own@example.com"),
    });

    const notFound = await rejection(client.getMailbox(theirs.id)); // another tenant's mailbox looks missing
    assert.ok(notFound instanceof NotFoundError);
    assert.equal(notFound.code, GrpcStatus.NOT_FOUND);
    assert.deepEqual([notFound.reason, notFound.domain], ["NOT_FOUND", "mailwatch.dev"]);

    const negative = await rejection(client.listMailboxes({ pageSize: -1 }));
    assert.ok(negative instanceof InvalidArgumentError);
    assert.deepEqual(negative.fieldViolations.map((v) => v.field), ["page_size"]);
    assert.ok(negative.fieldViolations[0].description);
    assert.ok(negative.requestId);
    const address = await rejection(
      client.registerMailbox("not an address", { credentials: await world.serviceAccount("ts-x@example.com") }),
    );
    assert.ok(address instanceof InvalidArgumentError);
    assert.equal(address.fieldViolations[0]?.field, "email_address");

    const revoked = await world.serviceAccount("ts-gone@example.com");
    await world.sim("revoke_user", ["ts-gone@example.com"]);
    const refused = await rejection(client.registerMailbox("ts-gone@example.com", { credentials: revoked }));
    assert.ok(refused instanceof FailedPreconditionError);
    assert.equal(refused.reason, "GMAIL_AUTH_FAILED");

    const busy = await world.serviceAccount("ts-busy@example.com");
    await world.sim("inject_fault", ["rateLimitExceeded"], { method: "users.watch", count: 1, retry_after: 7 });
    // Not retried here (one attempt): the client would wait the 7 s and try again.
    const limited = await rejection(
      client.registerMailbox("ts-busy@example.com", { credentials: busy, retry: { maxAttempts: 1 } }),
    );
    assert.ok(limited instanceof RateLimitedError);
    assert.equal(limited.reason, "GMAIL_RATE_LIMITED");
    assert.ok(Math.abs(limited.retryDelay! - 7000) <= 1000, `retryDelay ${limited.retryDelay}`);

    const stranger = clientFor({ tenantId: "", apiKey: "not-a-key" });
    assert.ok((await rejection(stranger.listMailboxes())) instanceof UnauthenticatedError);

    // A deadline the server cannot meet: Gmail takes a second to answer getProfile.
    const slow = await world.serviceAccount("ts-slow@example.com");
    await world.sim("add_latency", ["users.getProfile", 1.0], { user: "ts-slow@example.com" });
    try {
      const late = await rejection(client.registerMailbox("ts-slow@example.com", { credentials: slow, timeoutMs: 100 }));
      assert.ok(late instanceof DeadlineExceededError);
    } finally {
      await world.sim("clear_latency");
    }

    const badCursor = await rejection(client.streamChanges({ start: Buffer.from("not-a-cursor") }).next());
    assert.ok(badCursor instanceof InvalidCursorError);
    assert.equal(badCursor.fieldViolations[0]?.field, "cursor");
    const unknown = await rejection(
      client.streamChanges({ mailboxIds: ["00000000-0000-0000-0000-000000000000"] }).next(),
    );
    assert.ok(unknown instanceof NotFoundError);
    assert.throws(() => client.streamChanges({ eventTypes: ["NO_SUCH_TYPE"] }), TypeError);
  });

  it("ends a stream whose cursor expired with CursorExpiredError and the earliest cursor", { timeout: 60_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-max@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const first = await client.sendTestEvent(mailbox.id, { note: "old" });
    await client.sendTestEvent(mailbox.id, { note: "newest before the prune" });
    await world.command("expire_cursors", { tenant_id: tenant.tenantId });

    const started = Date.now();
    const expired = await rejection(client.streamChanges({ start: first.cursor }).next());
    assert.ok(Date.now() - started < 5000, "not retried");
    assert.ok(expired instanceof CursorExpiredError);
    assert.equal(expired.reason, "CURSOR_EXPIRED");
    const earliest = expired.earliestCursor;
    assert.ok(earliest !== undefined && earliest.length > 0);

    // The documented way out: resume from the earliest retained position.
    const more = await client.sendTestEvent(mailbox.id, { note: "after the prune" });
    const resumed = client.streamChanges({ start: earliest });
    const next = await resumed.next();
    await resumed.close();
    assert.equal(next.value?.id, more.id);
  });

  it("retries idempotent calls on UNAVAILABLE, honouring RetryInfo, and never SendTestEvent", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant, { retry: { initialBackoffMs: 50, maxBackoffMs: 200, maxAttempts: 5 } });
    // Gmail answers 500 twice: the server says UNAVAILABLE twice, the third attempt succeeds.
    const flaky = await world.serviceAccount("ts-flaky@example.com");
    await world.sim("inject_fault", ["backendError"], { method: "users.watch", count: 2 });
    await world.sim("reset_counters");
    const mailbox = await client.registerMailbox("ts-flaky@example.com", { credentials: flaky });
    const counters = await world.sim<{ calls: Record<string, Record<string, number>> }>("counters");
    assert.equal(counters.calls["ts-flaky@example.com"]["users.watch"], 3);
    // The retry budget is the policy's: one attempt only, the error surfaces.
    const once = await world.serviceAccount("ts-flaky2@example.com");
    await world.sim("inject_fault", ["backendError"], { method: "users.watch", count: 1 });
    const unavailable = await rejection(
      client.registerMailbox("ts-flaky2@example.com", { credentials: once, retry: { maxAttempts: 1 } }),
    );
    assert.ok(unavailable instanceof UnavailableError);
    assert.equal(unavailable.reason, "GMAIL_UNAVAILABLE");

    await world.command("stop_postgres");
    let down = true;
    try {
      // The database is down: UNAVAILABLE with a retry hint (RetryInfo)...
      let started = Date.now();
      const notRetried = await rejection(client.sendTestEvent(mailbox.id));
      const hint = notRetried.retryDelay;
      assert.ok(notRetried instanceof UnavailableError && notRetried.reason === "DATABASE_UNAVAILABLE");
      assert.ok(hint !== undefined && hint > 0, `retryDelay ${hint}`);
      assert.ok(Date.now() - started < hint, "SendTestEvent is not idempotent: no second attempt");
      // ...that a retry waits for, even with a 1 ms backoff.
      started = Date.now();
      await rejection(client.getMailbox(mailbox.id, { retry: { maxAttempts: 2, initialBackoffMs: 1, maxBackoffMs: 1 } }));
      assert.ok(Date.now() - started >= hint - 50, `waited ${Date.now() - started} ms for a ${hint} ms hint`);
      // A patient call rides the outage out.
      const patient = client.getMailbox(mailbox.id, { retry: { maxAttempts: 0 }, timeoutMs: 60_000 });
      await delay(500);
      await world.command("start_postgres");
      down = false;
      assert.equal((await patient).id, mailbox.id);
    } finally {
      if (down) await world.command("start_postgres");
    }
  });
});

describe("tenant limits", () => {
  it("retries a call refused for the key's rate after the server's RetryInfo delay", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    await world.command("set_tenant_limits", { tenant_id: tenant.tenantId, rpcs_per_second: 1 });
    // One retry, 1 ms after a refusal: only waiting for RetryInfo's delay lets it pass.
    const client = clientFor(tenant, { retry: { maxAttempts: 2, initialBackoffMs: 1, maxBackoffMs: 1 } });
    const started = Date.now();
    await client.listMailboxes();
    const refused = await rejection(client.listMailboxes({ retry: { maxAttempts: 1 } }));
    assert.ok(refused instanceof RateLimitedError);
    assert.equal(refused.reason, "RPC_RATE_LIMITED");
    assert.ok(refused.retryDelay !== undefined && refused.retryDelay > 0 && refused.retryDelay <= 1000,
      `retryDelay ${refused.retryDelay}`);
    for (let n = 0; n < 3; n++) {
      await client.listMailboxes();
    }
    // The key's bucket passes one call a second: four calls passed, so three seconds went by.
    assert.ok(Date.now() - started >= 2900, `four calls in ${Date.now() - started} ms`);
  });
});

describe("change streams", () => {
  it("split by partition: each event in exactly one, as the documented hash places its mailbox", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const partitionOf = (mailboxId: string, count: number) =>
      mailboxId === "" ? 0 : parseInt(createHash("md5").update(mailboxId).digest("hex").slice(0, 8), 16) % count;
    const sent: ChangeEvent[] = [];
    for (let n = 0; n < 6; n++) {
      const email = `ts-part${n}@example.com`;
      const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
      sent.push(await client.sendTestEvent(mailbox.id, { note: `partition ${n}` }));
    }
    sent.push(await client.sendTestEvent("", { note: "tenant-wide" }));
    const received: ChangeEvent[][] = [[], []];
    const streams = [0, 1].map((index) => client.streamChanges({ start: "earliest", partition: { index, count: 2 } }));
    const consumers = streams.map((stream, index) => consume(stream, received[index]));
    const sentIds = new Set(sent.map((e) => e.id));
    const testsOf = (events: ChangeEvent[]) => events.filter((e) => sentIds.has(e.id));
    await waitUntil(() => testsOf(received[0]).length + testsOf(received[1]).length >= sent.length, "every test event");
    for (const stream of streams) await stream.close();
    await Promise.all(consumers);
    for (const index of [0, 1]) {
      for (const event of received[index]) assert.equal(partitionOf(event.mailboxId, 2), index, event.id);
    }
    const delivered = [...testsOf(received[0]), ...testsOf(received[1])].map((e) => e.id).sort();
    assert.deepEqual(delivered, [...sentIds].sort());
  });

  it("survive a graceful and a crashing server restart: every committed event once", { timeout: 150_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-restart@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const inserted = [await world.insertMessage(email), await world.insertMessage(email)];
    const stream = client.streamChanges({ start: "earliest", heartbeatIntervalMs: 1000 });
    const received: ChangeEvent[] = [];
    const consumer = consume(stream, received);
    await waitUntil(() => addedIds(received).length >= 2, "events before the restarts");

    for (const mode of ["graceful", "kill"]) {
      // Gmail keeps changing while the server is away.
      const restart = world.command("restart_server", { mode });
      let done = false;
      void restart.finally(() => (done = true));
      while (!done) {
        inserted.push(await world.insertMessage(email));
        await delay(300);
      }
      await restart;
      inserted.push(await world.insertMessage(email));
      await waitUntil(() => addedIds(received).length >= inserted.length, `every change after the ${mode} restart`);
    }
    const last = await client.sendTestEvent(mailbox.id, { note: "after the restarts" });
    await waitUntil(() => received.some((e) => e.id === last.id), "an event made after recovery");
    assert.ok(stream.reconnects >= 2, `${stream.reconnects} reconnects`);

    await assertReceivedExactlyTheCommitted(tenant, received);
    assert.deepEqual(addedIds(received).sort(), [...inserted].sort());
    await stream.close();
    await consumer;
  });

  it("survives a Postgres restart: every committed event once", { timeout: 120_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-pg@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const inserted = [await world.insertMessage(email), await world.insertMessage(email)];
    const stream = client.streamChanges({ start: "earliest", heartbeatIntervalMs: 1000 });
    const received: ChangeEvent[] = [];
    const consumer = consume(stream, received);
    await waitUntil(() => addedIds(received).length >= 2, "events before the restart");

    const restart = world.command("restart_postgres");
    let done = false;
    void restart.finally(() => (done = true));
    while (!done) {
      inserted.push(await world.insertMessage(email));
      await delay(200);
    }
    await restart;
    inserted.push(await world.insertMessage(email), await world.insertMessage(email));
    await waitUntil(() => addedIds(received).length >= inserted.length, "every change after the restart");
    const last = await client.sendTestEvent(mailbox.id, { note: "after the restart", retry: { maxAttempts: 1 } });
    await waitUntil(() => received.some((e) => e.id === last.id), "an event made after recovery");

    await assertReceivedExactlyTheCommitted(tenant, received);
    assert.deepEqual(addedIds(received).sort(), [...inserted].sort());
    await stream.close();
    await consumer;
  });

  it("waits as long as RetryInfo asks while the database is down, then resumes", { timeout: 90_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const first = await client.sendTestEvent("", { note: "before the outage" });
    // A 1 ms backoff: only the server's hint (RetryInfo, 1 s for DATABASE_UNAVAILABLE) spaces the attempts.
    const stream = client.streamChanges({
      start: first.cursor,
      heartbeatIntervalMs: 1000,
      retry: { initialBackoffMs: 1, maxBackoffMs: 1, jitter: 0 },
    });
    const received: ChangeEvent[] = [];
    const consumer = consume(stream, received);
    await waitUntil(() => stream.cursor !== undefined, "the stream's first heartbeat", 20_000);
    await world.command("stop_postgres");
    let down = true;
    try {
      await waitUntil(() => stream.reconnects >= 1, "the stream cut by the outage", 30_000);
      const cut = Date.now();
      await waitUntil(() => stream.reconnects >= 3, "two more attempts", 30_000);
      const elapsed = Date.now() - cut;
      assert.ok(elapsed >= 1800, `two reconnects ${elapsed} ms apart in all: the 1 s hint was not honoured`);
      await world.command("start_postgres");
      down = false;
    } finally {
      if (down) await world.command("start_postgres");
    }
    const after = await client.sendTestEvent("", { note: "after the outage", retry: { maxAttempts: 1 } });
    await waitUntil(() => received.some((e) => e.id === after.id), "an event made after recovery");
    const committed = await world.committed(tenant.tenantId);
    assert.deepEqual(
      received.map((e) => e.id),
      committed.slice(committed.indexOf(first.id) + 1),
    );
    await stream.close();
    await consumer;
  });

  it("reconnects a silent stream after its idle timeout without losing or repeating events", { timeout: 60_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-idle@example.com";
    const mailbox = await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    // Heartbeats a minute apart, idle after 1.5 s: the stream keeps reopening.
    const stream = client.streamChanges({ start: "earliest", heartbeatIntervalMs: 60_000, idleTimeoutMs: 1500 });
    const received: ChangeEvent[] = [];
    const consumer = consume(stream, received);
    await waitUntil(() => stream.reconnects >= 2, "two idle reconnects", 30_000);
    const sent = [await client.sendTestEvent(mailbox.id), await client.sendTestEvent(mailbox.id)];
    await waitUntil(() => sent.every((s) => received.some((e) => e.id === s.id)), "events after the reconnects");
    await assertReceivedExactlyTheCommitted(tenant, received);
    await stream.close();
    await consumer;
  });

  it("continues from its checkpoint file where the last run stopped", { timeout: 60_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-kim@example.com";
    await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const first = [await world.insertMessage(email), await world.insertMessage(email)];
    const path = join(scratch, "state", "cursor");

    const seen: ChangeEvent[] = [];
    const stream = client.streamChanges({ start: "earliest", checkpoint: new FileCheckpointStore(path) });
    for await (const event of stream) {
      seen.push(event);
      if (addedIds(seen).length === first.length) break;
    }
    // Leaving the loop means "done with everything before the last event";
    // the last one comes again next run unless the loop asked for more.
    const saved = await new FileCheckpointStore(path).load();
    assert.deepEqual(saved, seen.at(-2)!.cursor);
    assert.deepEqual(stream.cursor, saved);

    const later = await world.insertMessage(email);
    const resumed: ChangeEvent[] = [];
    // `start` is ignored: the checkpoint decides.
    for await (const event of client.streamChanges({ start: "now", checkpoint: new FileCheckpointStore(path) })) {
      resumed.push(event);
      if (addedIds(resumed).includes(later)) break;
    }
    assert.deepEqual(addedIds(resumed), [first[1], later]);
    assert.equal(resumed[0].id, seen.at(-1)!.id);
  });

  it("moves its position with heartbeats past events its filter excludes", { timeout: 60_000 }, async () => {
    const tenant = await world.newTenant();
    const client = clientFor(tenant);
    const email = "ts-lou@example.com";
    await client.registerMailbox(email, { credentials: await world.serviceAccount(email) });
    const store = new MemoryCheckpointStore();
    const stream = client.streamChanges({
      start: "earliest",
      eventTypes: ["MESSAGE_DELETED"], // the WATCH_STARTED event is filtered out
      checkpoint: store,
      heartbeatIntervalMs: 1000,
    });
    const waiting = stream.next();
    await waitUntil(() => stream.cursor !== undefined, "a heartbeat's cursor", 20_000);
    assert.deepEqual(store.load(), stream.cursor);
    await stream.close(); // ends the pending next()
    assert.deepEqual(await waiting, { done: true, value: undefined });
  });
});

describe("TLS", () => {
  it("talks to a server that requires mutual TLS, and only with a certificate it trusts", { timeout: 120_000 }, async () => {
    const tls = await world.command<{
      target: string; caFile: string; certFile: string; keyFile: string; strangerCertFile: string; strangerKeyFile: string;
    }>("start_tls");
    const tenant = await world.newTenant();
    const mutual = tlsFromFiles({ caFile: tls.caFile, certFile: tls.certFile, keyFile: tls.keyFile, serverName: "localhost" });
    const client = new MailwatchClient(tls.target, { apiKey: tenant.apiKey, tls: mutual });
    clients.push(client);
    const event = await client.sendTestEvent("", { note: "over mTLS" });
    const stream = client.streamChanges({ start: "earliest" });
    const first = await stream.next();
    await stream.close();
    assert.equal(first.value?.id, event.id);

    const once = { maxAttempts: 1 };
    const refusedWith = async (options: ConstructorParameters<typeof MailwatchClient>[1]) => {
      const other = new MailwatchClient(tls.target, { apiKey: tenant.apiKey, retry: once, timeoutMs: 20_000, ...options });
      try {
        return await rejection(other.listMailboxes());
      } finally {
        other.close();
      }
    };
    const ca = mutual.rootCerts;
    const noCertificate = await refusedWith({ tls: { rootCerts: ca } });
    const untrusted = await refusedWith({
      tls: tlsFromFiles({ caFile: tls.caFile, certFile: tls.strangerCertFile, keyFile: tls.strangerKeyFile }),
    });
    const systemRoots = await refusedWith({ tls: true });
    const plaintext = await refusedWith({});
    for (const refused of [noCertificate, untrusted, systemRoots, plaintext]) {
      assert.ok(refused instanceof UnavailableError, `${refused.name}: ${refused.message}`);
    }
  });
});
