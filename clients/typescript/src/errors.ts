/**
 * The client's two-layer error model (the same as the Python client's).
 *
 * Layer 1: `RpcError`, every failed call, with the gRPC status code, the
 * server's message and the `google.rpc` details it attached in the
 * `grpc-status-details-bin` trailer (a `google.rpc.Status`): ErrorInfo
 * (`reason`, `domain`, `errorMetadata`), BadRequest (`fieldViolations`),
 * RetryInfo (`retryDelay`) and RequestInfo (`requestId`).
 *
 * Layer 2: subclasses for the codes and reasons a caller acts on
 * (`NotFoundError`, `InvalidArgumentError`, `CursorExpiredError`, ...). Catch
 * the subclass you can handle and let `RpcError` cover the rest.
 */
import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, RequestInfo, RetryInfo } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";

export { GrpcStatus };

/** ErrorInfo.domain of the errors mailwatch produces. */
export const ERROR_DOMAIN = "mailwatch.dev";

const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** Base class of every error this library throws. */
export class MailwatchError extends Error {
  override name = "MailwatchError";
}

/** One invalid request field (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** What a failed call ended with: a status code, a message and the trailers. */
export interface StatusLike {
  code: GrpcStatus;
  details?: string;
  metadata?: Metadata;
}

/** A call failed with a gRPC status; the details are decoded from the trailers. */
export class RpcError extends MailwatchError {
  override name = "RpcError";
  /** The gRPC status code (`GrpcStatus.NOT_FOUND`, ...). */
  readonly code: GrpcStatus;
  /** The server's message. */
  readonly statusMessage: string;
  /** The rich status, or undefined when the server sent no details. */
  readonly status: Status | undefined;
  /** The stable UPPER_SNAKE reason (ErrorInfo.reason), when the server sent one. */
  readonly reason: string | undefined;
  /** ErrorInfo.domain ("mailwatch.dev" for mailwatch's own errors). */
  readonly domain: string | undefined;
  /** ErrorInfo.metadata: dynamic facts about this failure. */
  readonly errorMetadata: Record<string, string>;
  /** BadRequest.field_violations (INVALID_ARGUMENT). */
  readonly fieldViolations: FieldViolation[];
  /** Milliseconds the server asked the caller to wait (RetryInfo), if it did. */
  readonly retryDelay: number | undefined;
  /** The server's request id (RequestInfo), to find the call in its logs. */
  readonly requestId: string | undefined;
  /** The call's trailing metadata. */
  readonly trailers: Metadata | undefined;

  constructor(failure: StatusLike) {
    const code = failure.code;
    const message = failure.details ?? "";
    const codeName = GrpcStatus[code] ?? String(code);
    super(message ? `${codeName}: ${message}` : codeName);
    this.code = code;
    this.statusMessage = message;
    this.trailers = failure.metadata;
    this.status = decodeStatus(failure.metadata, code);
    const details = this.status?.details ?? [];
    const info = unpack(details, "google.rpc.ErrorInfo", ErrorInfo);
    this.reason = info?.reason || undefined;
    this.domain = info?.domain || undefined;
    this.errorMetadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = (unpack(details, "google.rpc.BadRequest", BadRequest)?.fieldViolations ?? []).map(
      (violation) => ({ field: violation.field, description: violation.description }),
    );
    const retry = unpack(details, "google.rpc.RetryInfo", RetryInfo)?.retryDelay;
    this.retryDelay = retry === undefined ? undefined : retry.seconds * 1000 + retry.nanos / 1e6;
    this.requestId = unpack(details, "google.rpc.RequestInfo", RequestInfo)?.requestId || undefined;
  }
}

interface Decoder<T> {
  decode(input: Uint8Array): T;
}

function unpack<T>(details: Status["details"], typeName: string, type: Decoder<T>): T | undefined {
  const found = details.find((detail) => detail.typeUrl.split("/").pop() === typeName);
  return found === undefined ? undefined : type.decode(found.value);
}

function decodeStatus(metadata: Metadata | undefined, code: GrpcStatus): Status | undefined {
  const value = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (value === undefined || typeof value === "string") {
    return undefined;
  }
  try {
    const status = Status.decode(value);
    // A status whose code differs from the call's belongs to something else (a proxy's).
    return status.code === code ? status : undefined;
  } catch {
    return undefined;
  }
}

/** INVALID_ARGUMENT: see `fieldViolations`. */
export class InvalidArgumentError extends RpcError {
  override name = "InvalidArgumentError";
}

/** INVALID_ARGUMENT, reason INVALID_CURSOR: the cursor is not a position of this tenant's log. */
export class InvalidCursorError extends InvalidArgumentError {
  override name = "InvalidCursorError";
}

/** UNAUTHENTICATED: missing, unknown or revoked API key. */
export class UnauthenticatedError extends RpcError {
  override name = "UnauthenticatedError";
}

/** PERMISSION_DENIED. */
export class PermissionDeniedError extends RpcError {
  override name = "PermissionDeniedError";
}

/** NOT_FOUND (also what another tenant's resource looks like). */
export class NotFoundError extends RpcError {
  override name = "NotFoundError";
}

/** ALREADY_EXISTS. */
export class AlreadyExistsError extends RpcError {
  override name = "AlreadyExistsError";
}

/** FAILED_PRECONDITION (e.g. GMAIL_AUTH_FAILED: the caller's Google setup refused). */
export class FailedPreconditionError extends RpcError {
  override name = "FailedPreconditionError";
}

/**
 * FAILED_PRECONDITION, reason CURSOR_EXPIRED: the cursor is older than the
 * retained change log. Resync, then restart the stream from "now", "earliest"
 * or `earliestCursor` (the oldest retained position).
 */
export class CursorExpiredError extends FailedPreconditionError {
  override name = "CursorExpiredError";

  /** The oldest position still retained, when the server said it. */
  get earliestCursor(): Buffer | undefined {
    const value = this.errorMetadata["earliest_cursor"];
    return value ? Buffer.from(value, "ascii") : undefined;
  }
}

/**
 * Whether a failure is worth retrying (for idempotent calls and streams): UNAVAILABLE, or
 * RESOURCE_EXHAUSTED when the server said when to come back (RetryInfo: a rate or stream limit).
 * The retry waits at least `retryDelay`.
 */
export function retriedAfter(error: RpcError): boolean {
  return (
    error.code === GrpcStatus.UNAVAILABLE ||
    (error.code === GrpcStatus.RESOURCE_EXHAUSTED && error.retryDelay !== undefined)
  );
}

/** RESOURCE_EXHAUSTED: slow down (`retryDelay` says for how long, when known). */
export class RateLimitedError extends RpcError {
  override name = "RateLimitedError";
}

/** UNAVAILABLE: the server (or Gmail, or its database) is unreachable; retried for idempotent calls. */
export class UnavailableError extends RpcError {
  override name = "UnavailableError";
}

/** DEADLINE_EXCEEDED: the call's timeout passed. */
export class DeadlineExceededError extends RpcError {
  override name = "DeadlineExceededError";
}

/** CANCELLED: the call was cancelled (by this client, e.g. a closed stream). */
export class CancelledError extends RpcError {
  override name = "CancelledError";
}

/** INTERNAL / UNKNOWN: a server bug; `requestId` helps the operator find it. */
export class InternalError extends RpcError {
  override name = "InternalError";
}

type ErrorClass = new (failure: StatusLike) => RpcError;

const BY_CODE = new Map<GrpcStatus, ErrorClass>([
  [GrpcStatus.INVALID_ARGUMENT, InvalidArgumentError],
  [GrpcStatus.UNAUTHENTICATED, UnauthenticatedError],
  [GrpcStatus.PERMISSION_DENIED, PermissionDeniedError],
  [GrpcStatus.NOT_FOUND, NotFoundError],
  [GrpcStatus.ALREADY_EXISTS, AlreadyExistsError],
  [GrpcStatus.FAILED_PRECONDITION, FailedPreconditionError],
  [GrpcStatus.RESOURCE_EXHAUSTED, RateLimitedError],
  [GrpcStatus.UNAVAILABLE, UnavailableError],
  [GrpcStatus.DEADLINE_EXCEEDED, DeadlineExceededError],
  [GrpcStatus.CANCELLED, CancelledError],
  [GrpcStatus.INTERNAL, InternalError],
  [GrpcStatus.UNKNOWN, InternalError],
]);

// Reasons that refine a code's class.
const BY_REASON = new Map<string, ErrorClass>([
  [`${GrpcStatus.FAILED_PRECONDITION}:CURSOR_EXPIRED`, CursorExpiredError],
  [`${GrpcStatus.INVALID_ARGUMENT}:INVALID_CURSOR`, InvalidCursorError],
]);

/** The typed error for a failed call (a grpc-js `ServiceError` or anything with a status code). */
export function toRpcError(failure: unknown): RpcError {
  if (failure instanceof RpcError) {
    return failure;
  }
  const candidate = failure as Partial<StatusLike> | undefined;
  if (candidate === undefined || candidate === null || typeof candidate.code !== "number") {
    throw failure; // not a call's failure: a bug, let it surface as it is
  }
  const probe = new RpcError(candidate as StatusLike);
  const refined = probe.reason ? BY_REASON.get(`${probe.code}:${probe.reason}`) : undefined;
  const ErrorType = refined ?? BY_CODE.get(probe.code);
  return ErrorType === undefined ? probe : new ErrorType(candidate as StatusLike);
}
