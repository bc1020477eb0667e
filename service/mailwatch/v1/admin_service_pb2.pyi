import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mailwatch.v1 import mailbox_service_pb2 as _mailbox_service_pb2
from mailwatch.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tenant(_message.Message):
    __slots__ = ("id", "name", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "tenant_id", "prefix", "create_time", "revoke_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    prefix: str
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "next_page_token")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    next_page_token: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    key: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("api_key_id",)
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    api_key_id: str
    def __init__(self, api_key_id: _Optional[str] = ...) -> None: ...

class SetTenantGoogleSettingsRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name", "service_account", "oauth_client", "project_id", "pubsub_topic", "pubsub_subscription", "push_audience", "gmail_units_per_minute")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    OAUTH_CLIENT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_TOPIC_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUSH_AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    GMAIL_UNITS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    service_account: _mailbox_service_pb2.ServiceAccountCredentials
    oauth_client: _mailbox_service_pb2.OAuthCredentials
    project_id: str
    pubsub_topic: str
    pubsub_subscription: str
    push_audience: str
    gmail_units_per_minute: int
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ..., service_account: _Optional[_Union[_mailbox_service_pb2.ServiceAccountCredentials, _Mapping]] = ..., oauth_client: _Optional[_Union[_mailbox_service_pb2.OAuthCredentials, _Mapping]] = ..., project_id: _Optional[str] = ..., pubsub_topic: _Optional[str] = ..., pubsub_subscription: _Optional[str] = ..., push_audience: _Optional[str] = ..., gmail_units_per_minute: _Optional[int] = ...) -> None: ...

class GetTenantGoogleSettingsRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ...) -> None: ...

class ClearTenantGoogleSettingsRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ...) -> None: ...

class ClearTenantGoogleSettingsResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: bool
    def __init__(self, cleared: _Optional[bool] = ...) -> None: ...

class ListSubscriptionStatusesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSubscriptionStatusesResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[TenantSubscriptionStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[TenantSubscriptionStatus, _Mapping]]] = ...) -> None: ...

class TenantSubscriptionStatus(_message.Message):
    __slots__ = ("tenant_id", "status")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    status: _resources_pb2.SubscriptionStatus
    def __init__(self, tenant_id: _Optional[str] = ..., status: _Optional[_Union[_resources_pb2.SubscriptionStatus, _Mapping]] = ...) -> None: ...

class SetTenantLimitsRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name", "streams", "rpcs_per_second", "registrations_per_minute")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    RPCS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    streams: int
    rpcs_per_second: int
    registrations_per_minute: int
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ..., streams: _Optional[int] = ..., rpcs_per_second: _Optional[int] = ..., registrations_per_minute: _Optional[int] = ...) -> None: ...

class GetTenantLimitsRequest(_message.Message):
    __slots__ = ("tenant_id", "tenant_name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    tenant_name: str
    def __init__(self, tenant_id: _Optional[str] = ..., tenant_name: _Optional[str] = ...) -> None: ...

class TenantLimits(_message.Message):
    __slots__ = ("tenant_id", "streams", "rpcs_per_second", "registrations_per_minute", "own_fields")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    RPCS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    OWN_FIELDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    streams: int
    rpcs_per_second: int
    registrations_per_minute: int
    own_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., streams: _Optional[int] = ..., rpcs_per_second: _Optional[int] = ..., registrations_per_minute: _Optional[int] = ..., own_fields: _Optional[_Iterable[str]] = ...) -> None: ...
