import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from mailwatch.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartPosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    START_POSITION_UNSPECIFIED: _ClassVar[StartPosition]
    START_POSITION_NOW: _ClassVar[StartPosition]
    START_POSITION_EARLIEST: _ClassVar[StartPosition]

class MessageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_FORMAT_UNSPECIFIED: _ClassVar[MessageFormat]
    MESSAGE_FORMAT_METADATA: _ClassVar[MessageFormat]
    MESSAGE_FORMAT_FULL: _ClassVar[MessageFormat]
    MESSAGE_FORMAT_RAW: _ClassVar[MessageFormat]
START_POSITION_UNSPECIFIED: StartPosition
START_POSITION_NOW: StartPosition
START_POSITION_EARLIEST: StartPosition
MESSAGE_FORMAT_UNSPECIFIED: MessageFormat
MESSAGE_FORMAT_METADATA: MessageFormat
MESSAGE_FORMAT_FULL: MessageFormat
MESSAGE_FORMAT_RAW: MessageFormat

class RegisterMailboxRequest(_message.Message):
    __slots__ = ("email_address", "label_ids", "label_filter_behavior", "service_account", "oauth", "metadata", "include_drafts", "backfill")
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    OAUTH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DRAFTS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    email_address: str
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    label_filter_behavior: _resources_pb2.LabelFilterBehavior
    service_account: ServiceAccountCredentials
    oauth: OAuthCredentials
    metadata: _resources_pb2.MetadataOptions
    include_drafts: bool
    backfill: BackfillRequest
    def __init__(self, email_address: _Optional[str] = ..., label_ids: _Optional[_Iterable[str]] = ..., label_filter_behavior: _Optional[_Union[_resources_pb2.LabelFilterBehavior, str]] = ..., service_account: _Optional[_Union[ServiceAccountCredentials, _Mapping]] = ..., oauth: _Optional[_Union[OAuthCredentials, _Mapping]] = ..., metadata: _Optional[_Union[_resources_pb2.MetadataOptions, _Mapping]] = ..., include_drafts: _Optional[bool] = ..., backfill: _Optional[_Union[BackfillRequest, _Mapping]] = ...) -> None: ...

class BackfillRequest(_message.Message):
    __slots__ = ("since", "newest", "label_ids")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    newest: int
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., newest: _Optional[int] = ..., label_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchRegisterMailboxesRequest(_message.Message):
    __slots__ = ("email_addresses", "label_ids", "label_filter_behavior", "service_account", "include_drafts", "backfill")
    EMAIL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DRAFTS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    email_addresses: _containers.RepeatedScalarFieldContainer[str]
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    label_filter_behavior: _resources_pb2.LabelFilterBehavior
    service_account: ServiceAccountCredentials
    include_drafts: bool
    backfill: BackfillRequest
    def __init__(self, email_addresses: _Optional[_Iterable[str]] = ..., label_ids: _Optional[_Iterable[str]] = ..., label_filter_behavior: _Optional[_Union[_resources_pb2.LabelFilterBehavior, str]] = ..., service_account: _Optional[_Union[ServiceAccountCredentials, _Mapping]] = ..., include_drafts: _Optional[bool] = ..., backfill: _Optional[_Union[BackfillRequest, _Mapping]] = ...) -> None: ...

class BatchRegisterMailboxesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[MailboxRegistrationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[MailboxRegistrationResult, _Mapping]]] = ...) -> None: ...

class MailboxRegistrationResult(_message.Message):
    __slots__ = ("email_address", "status", "mailbox")
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    email_address: str
    status: _status_pb2.Status
    mailbox: _resources_pb2.Mailbox
    def __init__(self, email_address: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., mailbox: _Optional[_Union[_resources_pb2.Mailbox, _Mapping]] = ...) -> None: ...

class ServiceAccountCredentials(_message.Message):
    __slots__ = ("json_key", "subject")
    JSON_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    json_key: str
    subject: str
    def __init__(self, json_key: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class OAuthCredentials(_message.Message):
    __slots__ = ("client_id", "client_secret", "refresh_token")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_secret: str
    refresh_token: str
    def __init__(self, client_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., refresh_token: _Optional[str] = ...) -> None: ...

class StopMailboxRequest(_message.Message):
    __slots__ = ("mailbox_id",)
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    def __init__(self, mailbox_id: _Optional[str] = ...) -> None: ...

class GetMailboxRequest(_message.Message):
    __slots__ = ("mailbox_id",)
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    def __init__(self, mailbox_id: _Optional[str] = ...) -> None: ...

class ListMailboxesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_resources_pb2.MailboxState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_resources_pb2.MailboxState, str]]] = ...) -> None: ...

class ListMailboxesResponse(_message.Message):
    __slots__ = ("mailboxes", "next_page_token")
    MAILBOXES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    mailboxes: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Mailbox]
    next_page_token: str
    def __init__(self, mailboxes: _Optional[_Iterable[_Union[_resources_pb2.Mailbox, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamChangesRequest(_message.Message):
    __slots__ = ("mailbox_ids", "event_types", "cursor", "start_position", "max_batch_size", "heartbeat_interval", "partition")
    MAILBOX_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    mailbox_ids: _containers.RepeatedScalarFieldContainer[str]
    event_types: _containers.RepeatedScalarFieldContainer[_resources_pb2.EventType]
    cursor: bytes
    start_position: StartPosition
    max_batch_size: int
    heartbeat_interval: _duration_pb2.Duration
    partition: StreamPartition
    def __init__(self, mailbox_ids: _Optional[_Iterable[str]] = ..., event_types: _Optional[_Iterable[_Union[_resources_pb2.EventType, str]]] = ..., cursor: _Optional[bytes] = ..., start_position: _Optional[_Union[StartPosition, str]] = ..., max_batch_size: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., partition: _Optional[_Union[StreamPartition, _Mapping]] = ...) -> None: ...

class StreamPartition(_message.Message):
    __slots__ = ("index", "count")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class StreamChangesResponse(_message.Message):
    __slots__ = ("events", "heartbeat")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_resources_pb2.ChangeEvent]
    heartbeat: Heartbeat
    def __init__(self, events: _Optional[_Iterable[_Union[_resources_pb2.ChangeEvent, _Mapping]]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("server_time", "cursor")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    cursor: bytes
    def __init__(self, server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[bytes] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ("mailbox_id", "message_id", "format", "metadata_headers")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    METADATA_HEADERS_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    message_id: str
    format: MessageFormat
    metadata_headers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mailbox_id: _Optional[str] = ..., message_id: _Optional[str] = ..., format: _Optional[_Union[MessageFormat, str]] = ..., metadata_headers: _Optional[_Iterable[str]] = ...) -> None: ...

class GetMessageResponse(_message.Message):
    __slots__ = ("message", "part_chunk", "raw_chunk")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PART_CHUNK_FIELD_NUMBER: _ClassVar[int]
    RAW_CHUNK_FIELD_NUMBER: _ClassVar[int]
    message: Message
    part_chunk: PartChunk
    raw_chunk: bytes
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., part_chunk: _Optional[_Union[PartChunk, _Mapping]] = ..., raw_chunk: _Optional[bytes] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "thread_id", "label_ids", "metadata", "payload", "raw_size")
    ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    thread_id: str
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    metadata: _resources_pb2.MessageMetadata
    payload: MessagePart
    raw_size: int
    def __init__(self, id: _Optional[str] = ..., thread_id: _Optional[str] = ..., label_ids: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_resources_pb2.MessageMetadata, _Mapping]] = ..., payload: _Optional[_Union[MessagePart, _Mapping]] = ..., raw_size: _Optional[int] = ...) -> None: ...

class MessagePart(_message.Message):
    __slots__ = ("part_id", "mime_type", "filename", "headers", "body_size", "attachment_id", "parts")
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_SIZE_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    part_id: str
    mime_type: str
    filename: str
    headers: _containers.RepeatedCompositeFieldContainer[_resources_pb2.MessageHeader]
    body_size: int
    attachment_id: str
    parts: _containers.RepeatedCompositeFieldContainer[MessagePart]
    def __init__(self, part_id: _Optional[str] = ..., mime_type: _Optional[str] = ..., filename: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[_resources_pb2.MessageHeader, _Mapping]]] = ..., body_size: _Optional[int] = ..., attachment_id: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[MessagePart, _Mapping]]] = ...) -> None: ...

class PartChunk(_message.Message):
    __slots__ = ("part_id", "data")
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    part_id: str
    data: bytes
    def __init__(self, part_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("mailbox_id", "label_ids", "query", "page_size", "page_token", "include_labels", "include_spam_trash")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SPAM_TRASH_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    page_size: int
    page_token: str
    include_labels: bool
    include_spam_trash: bool
    def __init__(self, mailbox_id: _Optional[str] = ..., label_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_labels: _Optional[bool] = ..., include_spam_trash: _Optional[bool] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token", "result_size_estimate")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    result_size_estimate: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., result_size_estimate: _Optional[int] = ...) -> None: ...

class GetAttachmentRequest(_message.Message):
    __slots__ = ("mailbox_id", "message_id", "attachment_id")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    message_id: str
    attachment_id: str
    def __init__(self, mailbox_id: _Optional[str] = ..., message_id: _Optional[str] = ..., attachment_id: _Optional[str] = ...) -> None: ...

class GetAttachmentResponse(_message.Message):
    __slots__ = ("size", "data")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    size: int
    data: bytes
    def __init__(self, size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SendTestEventRequest(_message.Message):
    __slots__ = ("mailbox_id", "note")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: str
    note: str
    def __init__(self, mailbox_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class GetGoogleSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
