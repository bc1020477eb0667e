/**
 * `ChangeStream`: StreamChanges calls wrapped in one async iterator of
 * `ChangeEvent`s that outlives any single call.
 *
 * - The position (`cursor`) is the cursor of the last event the consumer
 *   moved past (asked for the next item after), or of the last heartbeat; a
 *   stream that has seen nothing yet starts where asked ("now", "earliest", a
 *   cursor, or what the checkpoint store holds).
 * - When the call fails with a transient error (UNAVAILABLE: server restart,
 *   network trouble, the server's database restarting; or the stream stayed
 *   silent for `idleTimeoutMs` although the server heartbeats), the iterator
 *   waits (the retry policy's backoff, at least the server's RetryInfo) and
 *   reopens the call strictly after its position. Reconnecting only happens
 *   while the consumer waits for the next event, so every event handed out
 *   is behind the position: none is handed out twice, none is skipped. (A
 *   window of recent event ids guards against a server resending one anyway.)
 * - Any other error ends the iteration as a typed error; a cursor older than
 *   the retained log throws `CursorExpiredError`.
 * - With a `CheckpointStore`, the position is loaded at the start and saved
 *   whenever the iterator is about to wait for the network (after the
 *   consumer moved past the last event of a response, and on heartbeats) and
 *   when the stream is closed. After a crash the consumer therefore sees at
 *   most the events of one response again; handle events idempotently (each
 *   has a unique `id`).
 *
 * A stream started at "now" that is cut off before its first event or
 * heartbeat has no position yet and restarts at "now": events committed
 * during the outage are then not delivered. Pass a short
 * `heartbeatIntervalMs` (or start from a cursor) where that matters.
 */
import type { ClientReadableStream } from "@grpc/grpc-js";

import type { CheckpointStore } from "./checkpoint.js";
import { allowsAnotherAttempt, backoffMs, type RetryPolicy } from "./config.js";
import { RpcError, retriedAfter, toRpcError } from "./errors.js";
import { StartPosition, type StreamChangesRequest, type StreamChangesResponse } from "./gen/mailwatch/v1/mailbox_service.js";
import type { ChangeEvent, EventType } from "./gen/mailwatch/v1/resources.js";

/** Where a stream starts when it has no cursor (and its checkpoint store none) yet. */
export type Start = "now" | "earliest" | Uint8Array;

export interface StreamSettings {
  mailboxIds: string[];
  eventTypes: EventType[];
  partition?: { index: number; count: number } | undefined;
  start: Start;
  checkpoint: CheckpointStore | undefined;
  maxBatchSize: number;
  heartbeatIntervalMs: number | undefined;
  idleTimeoutMs: number | undefined;
  retry: RetryPolicy;
}

const RECENT_IDS = 4096;

export class ChangeStream implements AsyncIterableIterator<ChangeEvent> {
  private position: Buffer | undefined;
  private saved: Buffer | undefined;
  private restored = false;
  private closed = false;
  private call: ClientReadableStream<StreamChangesResponse> | undefined;
  private readonly recent = new Map<string, true>();
  private readonly events: AsyncGenerator<ChangeEvent, void, undefined>;
  private wakeSleeper: (() => void) | undefined;
  private reconnectCount = 0;

  /** @internal Made by `MailwatchClient.streamChanges`. */
  constructor(
    private readonly openCall: (request: StreamChangesRequest) => ClientReadableStream<StreamChangesResponse>,
    private readonly settings: StreamSettings,
  ) {
    this.request(); // checks the arguments now, not at the first next()
    this.events = this.run();
  }

  /** The position: resume after it to continue where this stream is. */
  get cursor(): Buffer | undefined {
    return this.position;
  }

  /** How many times the stream reopened its call. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<ChangeEvent, undefined>> {
    if (this.closed) {
      return Promise.resolve({ done: true, value: undefined });
    }
    return this.events.next() as Promise<IteratorResult<ChangeEvent, undefined>>;
  }

  /** Called by `for await` when the loop is left early: closes the stream. */
  async return(): Promise<IteratorResult<ChangeEvent, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /**
   * Stop: cancel the open call and save the position (idempotent). May be
   * called while another task waits in `next()`; that wait then ends with
   * `done`.
   */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.call?.cancel();
    this.wakeSleeper?.();
    await this.events.return(undefined).catch(() => undefined); // a generator busy in next() ends by itself
    await this.save();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The request that resumes after the position, or begins at `start` when there is none yet. */
  private request(): StreamChangesRequest {
    const { settings } = this;
    const request: StreamChangesRequest = {
      mailboxIds: [...settings.mailboxIds],
      eventTypes: [...settings.eventTypes],
      maxBatchSize: settings.maxBatchSize,
      heartbeatInterval: undefined,
      partition: settings.partition === undefined ? undefined : { ...settings.partition },
    };
    if (settings.heartbeatIntervalMs !== undefined) {
      const ms = settings.heartbeatIntervalMs;
      request.heartbeatInterval = { seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) };
    }
    if (this.position !== undefined) {
      request.cursor = this.position;
    } else if (settings.start instanceof Uint8Array) {
      if (settings.start.length === 0) {
        throw new TypeError("an empty cursor is not a start position");
      }
      request.cursor = Buffer.from(settings.start);
    } else if (settings.start === "earliest") {
      request.startPosition = StartPosition.START_POSITION_EARLIEST;
    } else if (settings.start === "now") {
      request.startPosition = StartPosition.START_POSITION_NOW;
    } else {
      throw new TypeError(`start must be "now", "earliest" or a cursor (bytes), not ${String(settings.start)}`);
    }
    return request;
  }

  private isNew(event: ChangeEvent): boolean {
    if (!event.id) {
      return true;
    }
    if (this.recent.has(event.id)) {
      return false;
    }
    this.recent.set(event.id, true);
    if (this.recent.size > RECENT_IDS) {
      this.recent.delete(this.recent.keys().next().value as string);
    }
    return true;
  }

  private async save(): Promise<void> {
    const { checkpoint } = this.settings;
    const cursor = this.position;
    if (checkpoint === undefined || cursor === undefined || (this.saved !== undefined && cursor.equals(this.saved))) {
      return;
    }
    this.saved = cursor;
    await checkpoint.save(cursor);
  }

  private async *run(): AsyncGenerator<ChangeEvent, void, undefined> {
    const { settings } = this;
    if (settings.checkpoint !== undefined && !this.restored) {
      this.restored = true;
      const loaded = await settings.checkpoint.load();
      this.position = this.saved = loaded && loaded.length ? Buffer.from(loaded) : undefined;
    }
    let failures = 0;
    while (!this.closed) {
      const call = this.openCall(this.request());
      this.call = call;
      const responses = new ResponseReader(call, settings.idleTimeoutMs);
      let error: RpcError | undefined;
      try {
        for (;;) {
          const response = await responses.next();
          if (response === undefined) {
            break; // the server ended the call, or it went silent: reopen
          }
          failures = 0;
          for (const event of response.events) {
            if (this.isNew(event)) {
              yield event;
            }
            this.position = event.cursor;
          }
          if (response.heartbeat !== undefined && response.heartbeat.cursor.length > 0) {
            this.position = response.heartbeat.cursor;
          }
          await this.save();
        }
      } catch (failure) {
        if (this.closed) {
          return;
        }
        error = toRpcError(failure);
        if (!retriedAfter(error)) {
          throw error;
        }
      } finally {
        responses.stop();
        this.call = undefined;
      }
      failures += 1;
      if (!allowsAnotherAttempt(settings.retry, failures)) {
        if (error !== undefined) {
          throw error;
        }
        return;
      }
      await this.sleep(Math.max(backoffMs(settings.retry, failures), error?.retryDelay ?? 0));
      if (!this.closed) {
        this.reconnectCount += 1;
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleeper = done; // close() cuts the wait short
    });
  }
}

/**
 * Reads one call's responses: `next()` gives the next response, undefined
 * when the call ended or stayed silent longer than `idleMs` (then it is
 * cancelled), and throws the call's error.
 */
class ResponseReader {
  private readonly iterator: AsyncIterator<StreamChangesResponse>;
  private stopped = false;

  constructor(
    private readonly call: ClientReadableStream<StreamChangesResponse>,
    private readonly idleMs: number | undefined,
  ) {
    this.iterator = call[Symbol.asyncIterator]();
  }

  async next(): Promise<StreamChangesResponse | undefined> {
    const read = this.iterator.next();
    if (this.idleMs === undefined) {
      const result = await read;
      return result.done ? undefined : result.value;
    }
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<"idle">((resolve) => {
      timer = setTimeout(() => resolve("idle"), this.idleMs);
    });
    try {
      const result = await Promise.race([read, silent]);
      if (result === "idle") {
        read.catch(() => undefined); // the cancel below fails it; nobody waits for it
        this.stop();
        return undefined;
      }
      return result.done ? undefined : result.value;
    } finally {
      clearTimeout(timer);
    }
  }

  stop(): void {
    if (!this.stopped) {
      this.stopped = true;
      this.call.cancel();
    }
  }
}
