"""Python client for mailwatch: Gmail mailboxes as durable, resumable change streams.

    from mailwatch_client import MailwatchClient, FileCheckpointStore

    with MailwatchClient("127.0.0.1:50051", api_key) as client:
        with client.stream_changes(start="earliest", checkpoint=FileCheckpointStore("cursor.txt")) as stream:
            for event in stream:
                print(EventType.Name(event.type), event.email_address, event.message_id)

Everything public is exported here; modules starting with `_` are private.
Requests and results are the API's protobuf messages (`Mailbox`,
`ChangeEvent`, ...), re-exported below.
"""

from mailwatch_client._async_client import AsyncMailwatchClient
from mailwatch_client._checkpoint import (
    CheckpointStore,
    FileCheckpointStore,
    MemoryCheckpointStore,
    cursor_from_str,
    cursor_to_str,
)
from mailwatch_client._client import MailwatchClient
from mailwatch_client._common import DEFAULT, FetchedMessage, Page, Start
from mailwatch_client._config import DEFAULT_STREAM_RETRY, NO_RETRY, KeepAliveConfig, RetryConfig, TLSConfig
from mailwatch_client._errors import (
    ERROR_DOMAIN,
    AdminDisabledError,
    AlreadyExistsError,
    CursorExpiredError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    InvalidCursorError,
    MailwatchClientError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RPCError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from mailwatch_client._proto.v1.admin_service_pb2 import ApiKey, CreateApiKeyResponse, Tenant
from mailwatch_client._proto.v1.mailbox_service_pb2 import (
    BackfillRequest,
    Message,
    MessageFormat,
    MessagePart,
    OAuthCredentials,
    ServiceAccountCredentials,
)
from mailwatch_client._proto.v1.resources_pb2 import (
    BackfillState,
    ChangeEvent,
    CredentialKind,
    EventType,
    LabelFilter,
    LabelFilterBehavior,
    Mailbox,
    MailboxBackfill,
    MailboxError,
    MailboxState,
    MessageHeader,
    MessageMetadata,
    MetadataOptions,
)
from mailwatch_client._stream import AsyncChangeStream, ChangeStream

__version__ = "0.1.0"

__all__ = [
    "AdminDisabledError",
    "AlreadyExistsError",
    "ApiKey",
    "AsyncChangeStream",
    "AsyncMailwatchClient",
    "BackfillRequest",
    "BackfillState",
    "ChangeEvent",
    "ChangeStream",
    "CheckpointStore",
    "CreateApiKeyResponse",
    "CredentialKind",
    "CursorExpiredError",
    "DEFAULT",
    "DEFAULT_STREAM_RETRY",
    "DeadlineExceededError",
    "ERROR_DOMAIN",
    "EventType",
    "FailedPreconditionError",
    "FetchedMessage",
    "FieldViolation",
    "FileCheckpointStore",
    "InternalError",
    "InvalidArgumentError",
    "InvalidCursorError",
    "KeepAliveConfig",
    "LabelFilter",
    "LabelFilterBehavior",
    "Mailbox",
    "MailboxBackfill",
    "MailboxError",
    "MailboxState",
    "MailwatchClient",
    "MailwatchClientError",
    "MemoryCheckpointStore",
    "Message",
    "MessageFormat",
    "MessageHeader",
    "MessageMetadata",
    "MessagePart",
    "MetadataOptions",
    "NO_RETRY",
    "NotFoundError",
    "OAuthCredentials",
    "Page",
    "PermissionDeniedError",
    "RPCError",
    "RateLimitedError",
    "RetryConfig",
    "ServiceAccountCredentials",
    "Start",
    "TLSConfig",
    "Tenant",
    "UnauthenticatedError",
    "UnavailableError",
    "cursor_from_str",
    "cursor_to_str",
    "from_rpc_error",
]
