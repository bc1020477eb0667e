/** `MailwatchClient`: every MailboxService call, with deadlines, retries and typed errors. */
import { setTimeout as delay } from "node:timers/promises";

import {
  type CallOptions as GrpcCallOptions,
  type ChannelOptions,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import type { CheckpointStore } from "./checkpoint.js";
import {
  allowsAnotherAttempt,
  backoffMs,
  DEFAULT_RETRY,
  DEFAULT_STREAM_RETRY,
  type KeepaliveOptions,
  NO_RETRY,
  retryPolicy,
  type RetryPolicy,
  type TlsOptions,
} from "./config.js";
import { eventTypes, mailboxStates } from "./enums.js";
import { retriedAfter, toRpcError } from "./errors.js";
import {
  type BackfillRequest,
  type GetMessageRequest,
  type ListMessagesRequest,
  MailboxServiceClient,
  type MailboxRegistrationResult,
  type Message,
  MessageFormat,
  type OAuthCredentials,
  type ServiceAccountCredentials,
} from "./gen/mailwatch/v1/mailbox_service.js";
import type {
  ChangeEvent,
  EventType,
  GoogleSettings,
  LabelFilterBehavior,
  Mailbox,
  MailboxState,
} from "./gen/mailwatch/v1/resources.js";
import {
  fetchAttachment,
  type FetchedAttachment,
  fetchMessage,
  type FetchedMessage,
  type MessageFormatName,
} from "./messages.js";
import { ChangeStream, type Start } from "./stream.js";

export interface ClientOptions {
  /** The tenant's API key, sent as `authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** TLS: `true` trusts the system roots; an object sets a CA, a client certificate (mTLS), a server name. */
  tls?: boolean | TlsOptions;
  /** Default deadline of a call, all its attempts together; `null`: none. Default 30 s. */
  timeoutMs?: number | null;
  /** How idempotent calls are retried on UNAVAILABLE, and on RESOURCE_EXHAUSTED with RetryInfo after at least its
   * delay (default: 6 attempts, 0.1 s to 5 s apart). */
  retry?: Partial<RetryPolicy>;
  /** How change streams reconnect (default: forever, 0.2 s to 10 s apart). */
  streamRetry?: Partial<RetryPolicy>;
  /** HTTP/2 keepalive pings; off by default (streams have heartbeats and an idle timeout). */
  keepalive?: KeepaliveOptions;
  /** Metadata sent with every call. */
  metadata?: Record<string, string>;
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

/** Per-call options: every call takes them. */
export interface CallOptions {
  /** This call's deadline (all attempts together); `null`: none. Default: the client's. */
  timeoutMs?: number | null;
  /** Metadata for this call; its `authorization` replaces the client's API key. */
  metadata?: Record<string, string>;
  /** This call's retry policy (changes to the client's). Non-idempotent calls are never retried. */
  retry?: Partial<RetryPolicy>;
}

/** Google credentials for a mailbox: a delegated service account or per-user OAuth. */
export type MailboxCredentials =
  | { serviceAccount: { jsonKey: string; subject?: string } }
  | { oauth: { refreshToken: string; clientId?: string; clientSecret?: string } };

export interface RegisterMailboxOptions extends CallOptions {
  /** Unset: the tenant's default credentials (see the proto). */
  credentials?: MailboxCredentials;
  labelIds?: string[];
  labelFilterBehavior?: LabelFilterBehavior;
  /** Message metadata on MESSAGE_ADDED events: true (default headers) or the header names. */
  messageMetadata?: boolean | string[];
  /** Every draft version (added, and deleted when replaced); unset or false: drafts left out. */
  includeDrafts?: boolean;
  /** Deliver existing messages as MESSAGE_EXISTING events (e.g. `{ since: undefined, newest: 500, labelIds: [] }`). */
  backfill?: BackfillRequest;
}

export interface RegisterMailboxesOptions extends CallOptions {
  /** Unset: the tenant's default service account. */
  serviceAccount?: { jsonKey: string; subject?: string };
  labelIds?: string[];
  labelFilterBehavior?: LabelFilterBehavior;
  /** As in RegisterMailboxOptions. */
  includeDrafts?: boolean;
  /** As in RegisterMailboxOptions, for every address. */
  backfill?: BackfillRequest;
}

export interface ListMailboxesOptions extends CallOptions {
  pageSize?: number;
  pageToken?: string;
  /** MailboxState values or names ("ACTIVE"). */
  states?: (MailboxState | string)[];
}

export interface ListMessagesOptions extends CallOptions {
  /** Only messages carrying every one of these Gmail label ids. */
  labelIds?: string[];
  /** A Gmail search query ("from:bob after:2026/01/01"). */
  query?: string;
  /** Also each message's current labels (one more Gmail call per message; pages of at most 100). */
  includeLabels?: boolean;
  /** Include SPAM and TRASH. */
  includeSpamTrash?: boolean;
  /** 0: 100; at most 500 (100 with includeLabels). */
  pageSize?: number;
  pageToken?: string;
}

export interface Page<T> {
  items: T[];
  /** Empty on the last page. */
  nextPageToken: string;
}

export interface StreamChangesOptions {
  /** Where to start when the checkpoint store holds nothing: "now" (default), "earliest" or a cursor. */
  start?: Start;
  /** Only these mailboxes (empty: all of the tenant's). */
  mailboxIds?: string[];
  /** Only these types: EventType values or names ("MESSAGE_ADDED"). */
  eventTypes?: (EventType | string)[];
  /**
   * Only the events of one share of the tenant's mailboxes, so `count` replicas can split one
   * stream (each with its own checkpoint): replica `index` of `count` (see `StreamPartition`).
   */
  partition?: { index: number; count: number };
  /** Loads the position at the start, saves it as the stream goes (see `ChangeStream`). */
  checkpoint?: CheckpointStore;
  /** Events per response (0: the server's default). */
  maxBatchSize?: number;
  /** How long the server may stay silent before it sends a heartbeat (default: the server's, 15 s). */
  heartbeatIntervalMs?: number;
  /** Reconnect when nothing (not even a heartbeat) came for this long; default 3 heartbeats + 5 s; null: never. */
  idleTimeoutMs?: number | null;
  /** The reconnect policy (changes to the client's stream policy). */
  retry?: Partial<RetryPolicy>;
  metadata?: Record<string, string>;
}

export interface GetMessageOptions extends CallOptions {
  /** "metadata" (default), "full" (MIME tree and part bodies) or "raw" (the RFC 822 source). */
  format?: MessageFormatName;
  /** "metadata" only: the header names to return. */
  metadataHeaders?: string[];
}

const MESSAGE_FORMATS: Record<MessageFormatName, MessageFormat> = {
  metadata: MessageFormat.MESSAGE_FORMAT_METADATA,
  full: MessageFormat.MESSAGE_FORMAT_FULL,
  raw: MessageFormat.MESSAGE_FORMAT_RAW,
};

// Reconnect quickly once a server is back: gRPC's own connection backoff
// otherwise grows to 120 s, and calls fail fast (UNAVAILABLE) in between.
const BASE_CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5000,
};

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<GrpcCallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/**
 * A client for mailwatch's MailboxService over one gRPC channel.
 *
 *     const client = new MailwatchClient("mailwatch.example.com:443", { apiKey, tls: true });
 *     for await (const event of client.streamChanges({ start: "earliest" })) { ... }
 *     client.close();
 *
 * Every call rejects with a typed `RpcError` subclass; idempotent calls are
 * retried on UNAVAILABLE within their deadline.
 */
export class MailwatchClient {
  private readonly stub: MailboxServiceClient;
  private readonly timeoutMs: number | null;
  private readonly retry: RetryPolicy;
  private readonly streamRetry: RetryPolicy;
  private readonly defaultMetadata: Record<string, string>;
  private readonly apiKey: string | undefined;

  constructor(
    readonly target: string,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs;
    this.retry = retryPolicy(options.retry ?? {}, DEFAULT_RETRY);
    this.streamRetry = retryPolicy(options.streamRetry ?? {}, DEFAULT_STREAM_RETRY);
    this.defaultMetadata = { ...(options.metadata ?? {}) };
    this.apiKey = options.apiKey;
    const channelOptions: ChannelOptions = { ...BASE_CHANNEL_OPTIONS };
    if (options.keepalive !== undefined) {
      channelOptions["grpc.keepalive_time_ms"] = options.keepalive.intervalMs;
      channelOptions["grpc.keepalive_timeout_ms"] = options.keepalive.timeoutMs;
    }
    const tls = options.tls === true ? {} : options.tls || undefined;
    if (tls?.serverName) {
      channelOptions["grpc.ssl_target_name_override"] = tls.serverName;
      channelOptions["grpc.default_authority"] = tls.serverName;
    }
    Object.assign(channelOptions, options.channelOptions ?? {});
    if ((tls?.clientCert === undefined) !== (tls?.clientKey === undefined)) {
      throw new TypeError("tls.clientCert and tls.clientKey go together");
    }
    const channelCredentials =
      tls === undefined
        ? grpcCredentials.createInsecure()
        : grpcCredentials.createSsl(tls.rootCerts ?? null, tls.clientKey ?? null, tls.clientCert ?? null);
    this.stub = new MailboxServiceClient(target, channelCredentials, channelOptions);
  }

  /** Closes the channel; open streams and calls fail. */
  close(): void {
    this.stub.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // --- MailboxService --------------------------------------------------------

  /** Starts watching a mailbox (idempotent per address: retried on UNAVAILABLE). */
  registerMailbox(emailAddress: string, options: RegisterMailboxOptions = {}): Promise<Mailbox> {
    const metadata = options.messageMetadata;
    const request = {
      emailAddress,
      labelIds: options.labelIds ?? [],
      labelFilterBehavior: options.labelFilterBehavior ?? 0,
      ...credentialsField(options.credentials),
      metadata: metadata ? { enabled: true, headers: metadata === true ? [] : [...metadata] } : undefined,
      includeDrafts: options.includeDrafts ?? false,
      backfill: options.backfill,
    };
    return this.unary(this.stub.registerMailbox, request, options, true);
  }

  /**
   * Registers up to 1,000 addresses that share one service account; one
   * result per address, in order, each with its own `status` (code 0 and
   * `mailbox` on success). Idempotent per address: retried on UNAVAILABLE.
   */
  async registerMailboxes(
    emailAddresses: string[],
    options: RegisterMailboxesOptions = {},
  ): Promise<MailboxRegistrationResult[]> {
    const request = {
      emailAddresses: [...emailAddresses],
      labelIds: options.labelIds ?? [],
      labelFilterBehavior: options.labelFilterBehavior ?? 0,
      serviceAccount: options.serviceAccount && serviceAccount(options.serviceAccount),
      includeDrafts: options.includeDrafts ?? false,
      backfill: options.backfill,
    };
    const response = await this.unary(this.stub.batchRegisterMailboxes, request, options, true);
    return response.results;
  }

  /** Stops watching a mailbox (idempotent). */
  stopMailbox(mailboxId: string, options: CallOptions = {}): Promise<Mailbox> {
    return this.unary(this.stub.stopMailbox, { mailboxId }, options, true);
  }

  getMailbox(mailboxId: string, options: CallOptions = {}): Promise<Mailbox> {
    return this.unary(this.stub.getMailbox, { mailboxId }, options, true);
  }

  /** One page of the tenant's mailboxes. */
  async listMailboxes(options: ListMailboxesOptions = {}): Promise<Page<Mailbox>> {
    const request = {
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
      states: mailboxStates(options.states ?? []),
    };
    const response = await this.unary(this.stub.listMailboxes, request, options, true);
    return { items: response.mailboxes, nextPageToken: response.nextPageToken };
  }

  /** Every mailbox, fetching pages as needed (`timeoutMs` applies per page). */
  async *iterMailboxes(options: Omit<ListMailboxesOptions, "pageToken"> = {}): AsyncGenerator<Mailbox> {
    let pageToken = "";
    do {
      const page = await this.listMailboxes({ ...options, pageToken });
      yield* page.items;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** A resuming async iterator of change events (see `ChangeStream`). */
  streamChanges(options: StreamChangesOptions = {}): ChangeStream {
    const heartbeat = options.heartbeatIntervalMs;
    const idle = options.idleTimeoutMs === undefined ? 3 * (heartbeat ?? 15_000) + 5_000 : options.idleTimeoutMs;
    const metadata = this.callMetadata(options.metadata);
    return new ChangeStream((request) => this.stub.streamChanges(request, metadata), {
      mailboxIds: options.mailboxIds ?? [],
      eventTypes: eventTypes(options.eventTypes ?? []),
      partition: options.partition,
      start: options.start ?? "now",
      checkpoint: options.checkpoint,
      maxBatchSize: options.maxBatchSize ?? 0,
      heartbeatIntervalMs: heartbeat,
      idleTimeoutMs: idle ?? undefined,
      retry: retryPolicy(options.retry ?? {}, this.streamRetry),
    });
  }

  /**
   * Reads a message of one of the tenant's mailboxes from Gmail. For "raw"
   * the RFC 822 source comes as a byte stream (`raw`), for "full" the part
   * bodies as chunks (`parts`). Retried on UNAVAILABLE until the message
   * arrives; `timeoutMs` bounds the whole read, bytes included.
   */
  async getMessage(mailboxId: string, messageId: string, options: GetMessageOptions = {}): Promise<FetchedMessage> {
    const format = options.format ?? "metadata";
    if (!(format in MESSAGE_FORMATS)) {
      throw new TypeError(`format must be one of ${Object.keys(MESSAGE_FORMATS).join(", ")}, not ${String(format)}`);
    }
    const request: GetMessageRequest = {
      mailboxId,
      messageId,
      format: MESSAGE_FORMATS[format],
      metadataHeaders: options.metadataHeaders ?? [],
    };
    return this.withRetries(options, true, (metadata, callOptions) =>
      fetchMessage(this.stub.getMessage(request, metadata, callOptions), format),
    );
  }

  /**
   * Reads one attachment of a message (`attachmentId`: a part's `attachmentId` in
   * `getMessage(..., { format: "full" })`): its size, then its bytes as a stream.
   * Retried on UNAVAILABLE until the size arrives; `timeoutMs` bounds the whole read.
   */
  async getAttachment(
    mailboxId: string,
    messageId: string,
    attachmentId: string,
    options: CallOptions = {},
  ): Promise<FetchedAttachment> {
    const request = { mailboxId, messageId, attachmentId };
    return this.withRetries(options, true, (metadata, callOptions) =>
      fetchAttachment(this.stub.getAttachment(request, metadata, callOptions)),
    );
  }

  /**
   * One page of a mailbox's messages from Gmail, newest first (id, thread id, and the labels
   * with `includeLabels`): to reconcile after an outage or a RESYNC_REQUIRED. Retried on UNAVAILABLE.
   */
  async listMessages(mailboxId: string, options: ListMessagesOptions = {}): Promise<Page<Message>> {
    const request: ListMessagesRequest = {
      mailboxId,
      labelIds: options.labelIds ?? [],
      query: options.query ?? "",
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
      includeLabels: options.includeLabels ?? false,
      includeSpamTrash: options.includeSpamTrash ?? false,
    };
    const response = await this.unary(this.stub.listMessages, request, options, true);
    return { items: response.messages, nextPageToken: response.nextPageToken };
  }

  /** Every message of `listMessages`, fetching pages as needed (`timeoutMs` applies per page). */
  async *iterMessages(mailboxId: string, options: Omit<ListMessagesOptions, "pageToken"> = {}): AsyncGenerator<Message> {
    let pageToken = "";
    do {
      const page = await this.listMessages(mailboxId, { ...options, pageToken });
      yield* page.items;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Appends a TEST event to the tenant's change log (for one mailbox, or tenant-wide). Never retried. */
  sendTestEvent(mailboxId = "", options: CallOptions & { note?: string } = {}): Promise<ChangeEvent> {
    return this.unary(this.stub.sendTestEvent, { mailboxId, note: options.note ?? "" }, options, false);
  }

  /** The tenant's Google settings (never the secrets) and its Pub/Sub subscription's health. */
  getGoogleSettings(options: CallOptions = {}): Promise<GoogleSettings> {
    return this.unary(this.stub.getGoogleSettings, {}, options, true);
  }

  // --- plumbing --------------------------------------------------------------

  private unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, options: CallOptions, idempotent: boolean) {
    return this.withRetries(
      options,
      idempotent,
      (metadata, callOptions) =>
        new Promise<Res>((resolve, reject) => {
          method.call(this.stub, request, metadata, callOptions, (error, response) =>
            error ? reject(toRpcError(error)) : resolve(response),
          );
        }),
    );
  }

  private async withRetries<T>(
    options: CallOptions,
    idempotent: boolean,
    attempt: (metadata: Metadata, callOptions: Partial<GrpcCallOptions>) => Promise<T>,
  ): Promise<T> {
    const policy = idempotent ? retryPolicy(options.retry ?? {}, this.retry) : NO_RETRY;
    const timeoutMs = options.timeoutMs === undefined ? this.timeoutMs : options.timeoutMs;
    const deadline = timeoutMs === null ? undefined : Date.now() + timeoutMs;
    const metadata = this.callMetadata(options.metadata);
    for (let attempts = 1; ; attempts++) {
      try {
        return await attempt(metadata, deadline === undefined ? {} : { deadline: new Date(deadline) });
      } catch (failure) {
        const error = toRpcError(failure);
        if (!retriedAfter(error) || !allowsAnotherAttempt(policy, attempts)) {
          throw error;
        }
        const wait = Math.max(backoffMs(policy, attempts), error.retryDelay ?? 0);
        if (deadline !== undefined && Date.now() + wait >= deadline) {
          throw error;
        }
        await delay(wait);
      }
    }
  }

  /** Client-wide metadata, then the call's; a call's own `authorization` replaces the API key. */
  private callMetadata(extra: Record<string, string> = {}): Metadata {
    const metadata = new Metadata();
    const overridden = Object.keys(extra).some((key) => key.toLowerCase() === "authorization");
    if (this.apiKey && !overridden) {
      metadata.set("authorization", `Bearer ${this.apiKey}`);
    }
    for (const [key, value] of Object.entries({ ...this.defaultMetadata, ...extra })) {
      metadata.set(key, value);
    }
    return metadata;
  }
}

function serviceAccount(account: { jsonKey: string; subject?: string }): ServiceAccountCredentials {
  return { jsonKey: account.jsonKey, subject: account.subject ?? "" };
}

function credentialsField(
  credentials: MailboxCredentials | undefined,
): { serviceAccount?: ServiceAccountCredentials; oauth?: OAuthCredentials } {
  if (credentials === undefined) {
    return {};
  }
  if ("serviceAccount" in credentials) {
    return { serviceAccount: serviceAccount(credentials.serviceAccount) };
  }
  if ("oauth" in credentials) {
    const { refreshToken, clientId = "", clientSecret = "" } = credentials.oauth;
    return { oauth: { refreshToken, clientId, clientSecret } };
  }
  throw new TypeError("credentials must be { serviceAccount } or { oauth }");
}
