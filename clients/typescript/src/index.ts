/**
 * @mailwatch/client: a TypeScript client for mailwatch's MailboxService.
 *
 * The public surface is re-exported here; the modules behind it are private.
 */
export {
  MailwatchClient,
  type CallOptions,
  type ClientOptions,
  type GetMessageOptions,
  type ListMailboxesOptions,
  type ListMessagesOptions,
  type MailboxCredentials,
  type Page,
  type RegisterMailboxesOptions,
  type RegisterMailboxOptions,
  type StreamChangesOptions,
} from "./client.js";
export { ChangeStream, type Start } from "./stream.js";
export {
  type CheckpointStore,
  cursorFromString,
  cursorToString,
  FileCheckpointStore,
  MemoryCheckpointStore,
} from "./checkpoint.js";
export {
  DEFAULT_RETRY,
  DEFAULT_STREAM_RETRY,
  NO_RETRY,
  retryPolicy,
  tlsFromFiles,
  type KeepaliveOptions,
  type RetryPolicy,
  type TlsOptions,
} from "./config.js";
export {
  AlreadyExistsError,
  CancelledError,
  CursorExpiredError,
  DeadlineExceededError,
  ERROR_DOMAIN,
  FailedPreconditionError,
  type FieldViolation,
  GrpcStatus,
  InternalError,
  InvalidArgumentError,
  InvalidCursorError,
  MailwatchError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  RpcError,
  toRpcError,
  UnauthenticatedError,
  UnavailableError,
} from "./errors.js";
export { readAll, type FetchedAttachment, type FetchedMessage, type MessageFormatName } from "./messages.js";
export {
  BackfillState,
  type ChangeEvent,
  CredentialKind,
  EventType,
  type GoogleSettings,
  LabelFilterBehavior,
  type LabelFilter,
  type Mailbox,
  type MailboxBackfill,
  type MailboxError,
  MailboxState,
  type MessageHeader,
  type MessageMetadata,
  SubscriptionState,
} from "./gen/mailwatch/v1/resources.js";
export {
  type BackfillRequest,
  type Heartbeat,
  type MailboxRegistrationResult,
  type Message,
  MessageFormat,
  type MessagePart,
  type PartChunk,
  StartPosition,
} from "./gen/mailwatch/v1/mailbox_service.js";
