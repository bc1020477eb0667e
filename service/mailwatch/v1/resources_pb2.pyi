import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackfillState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKFILL_STATE_UNSPECIFIED: _ClassVar[BackfillState]
    BACKFILL_STATE_LISTING: _ClassVar[BackfillState]
    BACKFILL_STATE_DELIVERING: _ClassVar[BackfillState]
    BACKFILL_STATE_COMPLETED: _ClassVar[BackfillState]
    BACKFILL_STATE_FAILED: _ClassVar[BackfillState]

class MailboxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAILBOX_STATE_UNSPECIFIED: _ClassVar[MailboxState]
    MAILBOX_STATE_ACTIVE: _ClassVar[MailboxState]
    MAILBOX_STATE_AUTH_FAILED: _ClassVar[MailboxState]
    MAILBOX_STATE_STOPPED: _ClassVar[MailboxState]
    MAILBOX_STATE_ACCESS_REFUSED: _ClassVar[MailboxState]

class LabelFilterBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_FILTER_BEHAVIOR_UNSPECIFIED: _ClassVar[LabelFilterBehavior]
    LABEL_FILTER_BEHAVIOR_INCLUDE: _ClassVar[LabelFilterBehavior]
    LABEL_FILTER_BEHAVIOR_EXCLUDE: _ClassVar[LabelFilterBehavior]

class CredentialKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_KIND_UNSPECIFIED: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_SERVICE_ACCOUNT: _ClassVar[CredentialKind]
    CREDENTIAL_KIND_OAUTH: _ClassVar[CredentialKind]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_MESSAGE_ADDED: _ClassVar[EventType]
    EVENT_TYPE_MESSAGE_DELETED: _ClassVar[EventType]
    EVENT_TYPE_LABELS_ADDED: _ClassVar[EventType]
    EVENT_TYPE_LABELS_REMOVED: _ClassVar[EventType]
    EVENT_TYPE_WATCH_STARTED: _ClassVar[EventType]
    EVENT_TYPE_WATCH_RENEWED: _ClassVar[EventType]
    EVENT_TYPE_WATCH_EXPIRED: _ClassVar[EventType]
    EVENT_TYPE_RESYNC_REQUIRED: _ClassVar[EventType]
    EVENT_TYPE_RESYNCED: _ClassVar[EventType]
    EVENT_TYPE_AUTH_FAILED: _ClassVar[EventType]
    EVENT_TYPE_MAILBOX_STOPPED: _ClassVar[EventType]
    EVENT_TYPE_WATCH_EXPIRING: _ClassVar[EventType]
    EVENT_TYPE_NOTIFICATIONS_MISSED: _ClassVar[EventType]
    EVENT_TYPE_TEST: _ClassVar[EventType]
    EVENT_TYPE_ACCESS_REFUSED: _ClassVar[EventType]
    EVENT_TYPE_HISTORY_SKIPPED: _ClassVar[EventType]
    EVENT_TYPE_MESSAGE_EXISTING: _ClassVar[EventType]
    EVENT_TYPE_BACKFILL_COMPLETED: _ClassVar[EventType]

class SubscriptionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_STATE_UNSPECIFIED: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_OK: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_FAILING: _ClassVar[SubscriptionState]
BACKFILL_STATE_UNSPECIFIED: BackfillState
BACKFILL_STATE_LISTING: BackfillState
BACKFILL_STATE_DELIVERING: BackfillState
BACKFILL_STATE_COMPLETED: BackfillState
BACKFILL_STATE_FAILED: BackfillState
MAILBOX_STATE_UNSPECIFIED: MailboxState
MAILBOX_STATE_ACTIVE: MailboxState
MAILBOX_STATE_AUTH_FAILED: MailboxState
MAILBOX_STATE_STOPPED: MailboxState
MAILBOX_STATE_ACCESS_REFUSED: MailboxState
LABEL_FILTER_BEHAVIOR_UNSPECIFIED: LabelFilterBehavior
LABEL_FILTER_BEHAVIOR_INCLUDE: LabelFilterBehavior
LABEL_FILTER_BEHAVIOR_EXCLUDE: LabelFilterBehavior
CREDENTIAL_KIND_UNSPECIFIED: CredentialKind
CREDENTIAL_KIND_SERVICE_ACCOUNT: CredentialKind
CREDENTIAL_KIND_OAUTH: CredentialKind
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_MESSAGE_ADDED: EventType
EVENT_TYPE_MESSAGE_DELETED: EventType
EVENT_TYPE_LABELS_ADDED: EventType
EVENT_TYPE_LABELS_REMOVED: EventType
EVENT_TYPE_WATCH_STARTED: EventType
EVENT_TYPE_WATCH_RENEWED: EventType
EVENT_TYPE_WATCH_EXPIRED: EventType
EVENT_TYPE_RESYNC_REQUIRED: EventType
EVENT_TYPE_RESYNCED: EventType
EVENT_TYPE_AUTH_FAILED: EventType
EVENT_TYPE_MAILBOX_STOPPED: EventType
EVENT_TYPE_WATCH_EXPIRING: EventType
EVENT_TYPE_NOTIFICATIONS_MISSED: EventType
EVENT_TYPE_TEST: EventType
EVENT_TYPE_ACCESS_REFUSED: EventType
EVENT_TYPE_HISTORY_SKIPPED: EventType
EVENT_TYPE_MESSAGE_EXISTING: EventType
EVENT_TYPE_BACKFILL_COMPLETED: EventType
SUBSCRIPTION_STATE_UNSPECIFIED: SubscriptionState
SUBSCRIPTION_STATE_OK: SubscriptionState
SUBSCRIPTION_STATE_FAILING: SubscriptionState

class Mailbox(_message.Message):
    __slots__ = ("id", "email_address", "state", "label_filter", "credential_kind", "history_id", "notified_history_id", "watch_expire_time", "next_renew_time", "last_notification_time", "last_sync_time", "last_error", "create_time", "update_time", "metadata", "include_drafts", "watch_topic", "next_attempt_time", "backfill")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_KIND_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ID_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_HISTORY_ID_FIELD_NUMBER: _ClassVar[int]
    WATCH_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_RENEW_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_NOTIFICATION_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DRAFTS_FIELD_NUMBER: _ClassVar[int]
    WATCH_TOPIC_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    id: str
    email_address: str
    state: MailboxState
    label_filter: LabelFilter
    credential_kind: CredentialKind
    history_id: int
    notified_history_id: int
    watch_expire_time: _timestamp_pb2.Timestamp
    next_renew_time: _timestamp_pb2.Timestamp
    last_notification_time: _timestamp_pb2.Timestamp
    last_sync_time: _timestamp_pb2.Timestamp
    last_error: MailboxError
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    metadata: MetadataOptions
    include_drafts: bool
    watch_topic: str
    next_attempt_time: _timestamp_pb2.Timestamp
    backfill: MailboxBackfill
    def __init__(self, id: _Optional[str] = ..., email_address: _Optional[str] = ..., state: _Optional[_Union[MailboxState, str]] = ..., label_filter: _Optional[_Union[LabelFilter, _Mapping]] = ..., credential_kind: _Optional[_Union[CredentialKind, str]] = ..., history_id: _Optional[int] = ..., notified_history_id: _Optional[int] = ..., watch_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_renew_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_notification_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sync_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[_Union[MailboxError, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[MetadataOptions, _Mapping]] = ..., include_drafts: _Optional[bool] = ..., watch_topic: _Optional[str] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backfill: _Optional[_Union[MailboxBackfill, _Mapping]] = ...) -> None: ...

class MailboxBackfill(_message.Message):
    __slots__ = ("state", "listed_count", "delivered_count", "skipped_count", "create_time", "complete_time", "last_error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LISTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    state: BackfillState
    listed_count: int
    delivered_count: int
    skipped_count: int
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    last_error: MailboxError
    def __init__(self, state: _Optional[_Union[BackfillState, str]] = ..., listed_count: _Optional[int] = ..., delivered_count: _Optional[int] = ..., skipped_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[_Union[MailboxError, _Mapping]] = ...) -> None: ...

class LabelFilter(_message.Message):
    __slots__ = ("label_ids", "behavior")
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    behavior: LabelFilterBehavior
    def __init__(self, label_ids: _Optional[_Iterable[str]] = ..., behavior: _Optional[_Union[LabelFilterBehavior, str]] = ...) -> None: ...

class MailboxError(_message.Message):
    __slots__ = ("message", "time", "reason")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    message: str
    time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("id", "cursor", "type", "mailbox_id", "email_address", "observe_time", "history_id", "message_id", "thread_id", "label_ids", "attributes", "metadata")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    cursor: bytes
    type: EventType
    mailbox_id: str
    email_address: str
    observe_time: _timestamp_pb2.Timestamp
    history_id: int
    message_id: str
    thread_id: str
    label_ids: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    metadata: MessageMetadata
    def __init__(self, id: _Optional[str] = ..., cursor: _Optional[bytes] = ..., type: _Optional[_Union[EventType, str]] = ..., mailbox_id: _Optional[str] = ..., email_address: _Optional[str] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history_id: _Optional[int] = ..., message_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., label_ids: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., metadata: _Optional[_Union[MessageMetadata, _Mapping]] = ...) -> None: ...

class MessageMetadata(_message.Message):
    __slots__ = ("headers", "snippet", "size_estimate", "internal_time", "missing")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SIZE_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_TIME_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    headers: _containers.RepeatedCompositeFieldContainer[MessageHeader]
    snippet: str
    size_estimate: int
    internal_time: _timestamp_pb2.Timestamp
    missing: bool
    def __init__(self, headers: _Optional[_Iterable[_Union[MessageHeader, _Mapping]]] = ..., snippet: _Optional[str] = ..., size_estimate: _Optional[int] = ..., internal_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., missing: _Optional[bool] = ...) -> None: ...

class MessageHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MetadataOptions(_message.Message):
    __slots__ = ("enabled", "headers")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    headers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, enabled: _Optional[bool] = ..., headers: _Optional[_Iterable[str]] = ...) -> None: ...

class GoogleSettings(_message.Message):
    __slots__ = ("tenant_id", "project_id", "credential_kind", "credential_id", "pubsub_topic", "pubsub_subscription", "push_audience", "subscription_status", "update_time", "gmail_units_per_minute")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_KIND_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_TOPIC_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUSH_AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    GMAIL_UNITS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    project_id: str
    credential_kind: CredentialKind
    credential_id: str
    pubsub_topic: str
    pubsub_subscription: str
    push_audience: str
    subscription_status: SubscriptionStatus
    update_time: _timestamp_pb2.Timestamp
    gmail_units_per_minute: int
    def __init__(self, tenant_id: _Optional[str] = ..., project_id: _Optional[str] = ..., credential_kind: _Optional[_Union[CredentialKind, str]] = ..., credential_id: _Optional[str] = ..., pubsub_topic: _Optional[str] = ..., pubsub_subscription: _Optional[str] = ..., push_audience: _Optional[str] = ..., subscription_status: _Optional[_Union[SubscriptionStatus, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gmail_units_per_minute: _Optional[int] = ...) -> None: ...

class SubscriptionStatus(_message.Message):
    __slots__ = ("subscription", "state", "last_error", "last_error_time", "last_success_time", "consecutive_failures")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    subscription: str
    state: SubscriptionState
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    last_success_time: _timestamp_pb2.Timestamp
    consecutive_failures: int
    def __init__(self, subscription: _Optional[str] = ..., state: _Optional[_Union[SubscriptionState, str]] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...
