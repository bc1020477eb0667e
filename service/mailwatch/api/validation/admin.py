"""AdminService request validation: proto request -> checked, normalised values
(the shared field checks and the collector are in `fields`)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from mailwatch.api.validation import fields
from mailwatch.domain.models import Credential, OAuthCredential, TenantLimits
from mailwatch.lifecycle.google_settings import GoogleSettingsInput
from mailwatch.v1 import admin_service_pb2

MAX_SETTING_CHARS = 1024  # topic / subscription paths, project ids, audiences
_TENANT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class TenantRef:
    tenant_id: uuid.UUID | None = None
    tenant_name: str | None = None


def tenant_name(value: str, problems: fields.Violations, field: str = "name") -> str:
    if not value:
        problems.add(field, "required")
    elif not _TENANT_NAME_RE.fullmatch(value):
        problems.add(
            field,
            "must be 1-63 characters among ASCII letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
    return value


def validate_create_tenant(request: admin_service_pb2.CreateTenantRequest) -> str:
    problems = fields.Violations()
    name = tenant_name(request.name, problems)
    problems.raise_if_any()
    return name


def _tenant_ref(request, problems: fields.Violations) -> TenantRef:
    which = request.WhichOneof("tenant")
    if which == "tenant_id":
        return TenantRef(tenant_id=fields.parse_uuid(request.tenant_id, "tenant_id", problems))
    if which == "tenant_name":
        return TenantRef(tenant_name=tenant_name(request.tenant_name, problems, "tenant_name"))
    problems.add("tenant", "required: set tenant_id or tenant_name")
    return TenantRef()


def validate_create_api_key(request: admin_service_pb2.CreateApiKeyRequest) -> TenantRef:
    problems = fields.Violations()
    ref = _tenant_ref(request, problems)
    problems.raise_if_any()
    return ref


def validate_list_api_keys(request: admin_service_pb2.ListApiKeysRequest) -> tuple[TenantRef, fields.PageRequest]:
    problems = fields.Violations()
    ref = _tenant_ref(request, problems)
    page = fields.page_request(
        request.page_size,
        request.page_token,
        problems,
        "ListApiKeys",
        str(ref.tenant_id) if ref.tenant_id else None,
        ref.tenant_name,
    )
    problems.raise_if_any()
    return ref, page


def validate_list_tenants(request: admin_service_pb2.ListTenantsRequest) -> fields.PageRequest:
    problems = fields.Violations()
    page = fields.page_request(request.page_size, request.page_token, problems, "ListTenants")
    problems.raise_if_any()
    return page


def validate_revoke_api_key(request: admin_service_pb2.RevokeApiKeyRequest) -> uuid.UUID:
    return fields.validate_uuid(request.api_key_id, "api_key_id")


def validate_set_google_settings(
    request: admin_service_pb2.SetTenantGoogleSettingsRequest,
) -> tuple[TenantRef, GoogleSettingsInput]:
    problems = fields.Violations()
    ref = _tenant_ref(request, problems)
    credential: Credential | None = None
    kind = request.WhichOneof("credentials")
    if kind == "service_account":
        if request.service_account.subject:
            problems.add("service_account.subject", "must be empty: each mailbox is impersonated by its own address")
        credential = fields.service_account(request.service_account, "", problems)
    elif kind == "oauth_client":
        client = request.oauth_client
        if client.refresh_token:
            problems.add("oauth_client.refresh_token", "must be empty: each mailbox brings its own refresh token")
        credential = OAuthCredential(
            client_id=fields.secret(client.client_id, "oauth_client.client_id", problems),
            client_secret=fields.secret(client.client_secret, "oauth_client.client_secret", problems),
            refresh_token="",
        )
    else:
        problems.add("credentials", "required: set service_account or oauth_client")
    for field in ("project_id", "pubsub_topic", "pubsub_subscription", "push_audience"):
        value = getattr(request, field)
        if len(value) > MAX_SETTING_CHARS or value != value.strip() or any(ord(c) < 32 for c in value):
            problems.add(field, f"must be at most {MAX_SETTING_CHARS} characters, without spaces around or controls")
    if not request.pubsub_topic:
        problems.add("pubsub_topic", "required: projects/<project>/topics/<name>")
    budget = request.gmail_units_per_minute if request.HasField("gmail_units_per_minute") else None
    if budget is not None and budget < 0:
        problems.add("gmail_units_per_minute", "must not be negative (0: no budget; unset: the deployment's)")
    problems.raise_if_any()
    assert credential is not None
    return ref, GoogleSettingsInput(
        credential=credential, pubsub_topic=request.pubsub_topic, project_id=request.project_id,
        pubsub_subscription=request.pubsub_subscription, push_audience=request.push_audience,
        gmail_units_per_minute=budget,
    )


def validate_set_tenant_limits(request: admin_service_pb2.SetTenantLimitsRequest) -> tuple[TenantRef, TenantLimits]:
    problems = fields.Violations()
    ref = _tenant_ref(request, problems)
    values: dict[str, int | None] = {}
    for field in ("streams", "rpcs_per_second", "registrations_per_minute"):
        value = getattr(request, field) if request.HasField(field) else None
        if value is not None and value < 0:
            problems.add(field, "must not be negative (0: no limit; unset: the deployment's)")
        values[field] = value
    problems.raise_if_any()
    return ref, TenantLimits(**values)


def validate_tenant_ref(request) -> TenantRef:
    problems = fields.Violations()
    ref = _tenant_ref(request, problems)
    problems.raise_if_any()
    return ref
