"""Tenant Google settings: default credentials + the tenant's own topic, through AdminService,
MailboxService and the CLI, against the simulator's project rules and the Pub/Sub emulator."""

from __future__ import annotations

import json

import grpc
import pytest

from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2, resources_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.rpc import ACTIVE, error_details, tenant_topic

pytestmark = pytest.mark.integration

OPERATOR = [("authorization", f"Bearer {OPERATOR_TOKEN}")]


async def set_sa_settings(service, tenant_id: str, project: str, names: dict) -> tuple[dict, resources_pb2.GoogleSettings]:
    key = service.sim.create_service_account_key(project_id=project)
    settings = await service.admin.SetTenantGoogleSettings(
        admin_service_pb2.SetTenantGoogleSettingsRequest(
            tenant_id=tenant_id,
            service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
            pubsub_topic=names["topic"], pubsub_subscription=names["subscription"],
        ),
        metadata=OPERATOR,
    )
    return key, settings


async def _failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_register_with_only_an_address_uses_the_tenants_key_and_topic(service):
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic("tenant-a-proj")
    key, settings = await set_sa_settings(service, tenant_id, "tenant-a-proj", names)
    assert (settings.project_id, settings.credential_id) == ("tenant-a-proj", key["client_email"])
    assert settings.credential_kind == resources_pb2.CREDENTIAL_KIND_SERVICE_ACCOUNT
    assert key["private_key"] not in str(settings)

    service.sim.create_mailbox("ann@tenant-a.test")
    mailbox = await service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="ann@tenant-a.test"), metadata=auth)
    assert mailbox.state == ACTIVE and mailbox.watch_topic == names["topic"]
    assert mailbox.credential_kind == resources_pb2.CREDENTIAL_KIND_SERVICE_ACCOUNT
    assert service.sim.mailbox("ann@tenant-a.test")["watch"]["topicName"] == names["topic"]

    # The tenant reads its own settings (no secret); another tenant has none and learns nothing.
    own = await service.mailboxes.GetGoogleSettings(mailbox_service_pb2.GetGoogleSettingsRequest(), metadata=auth)
    assert own.pubsub_topic == names["topic"] and own.subscription_status.subscription == names["subscription"]
    _, other = await service.new_tenant()
    refused = await _failure(service.mailboxes.GetGoogleSettings(mailbox_service_pb2.GetGoogleSettingsRequest(),
                                                                 metadata=other))
    assert refused.code() == grpc.StatusCode.NOT_FOUND


async def test_a_key_override_from_the_operators_project_uses_the_deployment_topic(service):
    tenant_id, auth = await service.new_tenant()
    await set_sa_settings(service, tenant_id, "tenant-b-proj", tenant_topic("tenant-b-proj"))
    service.sim.create_mailbox("bo@example.com")
    key = service.sim.create_service_account_key(project_id=TEST_PROJECT)
    mailbox = await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
        email_address="bo@example.com",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key))), metadata=auth)
    assert mailbox.watch_topic == service.topic

    stray = service.sim.create_service_account_key(project_id="stray-project")
    refused = await _failure(service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
        email_address="bo@example.com",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(stray))), metadata=auth))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused)[0].reason == "TOPIC_PROJECT_MISMATCH"


async def test_oauth_client_defaults_need_only_a_refresh_token(service):
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic("tenant-c-proj")
    client = service.sim.create_oauth_client(project_id="tenant-c-proj")
    settings = await service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, project_id="tenant-c-proj", pubsub_topic=names["topic"],
        oauth_client=mailbox_service_pb2.OAuthCredentials(client_id=client["clientId"],
                                                          client_secret=client["clientSecret"]),
    ), metadata=OPERATOR)
    assert settings.credential_id == client["clientId"] and settings.pubsub_subscription == ""
    fetched = await service.admin.GetTenantGoogleSettings(
        admin_service_pb2.GetTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR)
    assert client["clientSecret"] not in str(fetched) and fetched.project_id == "tenant-c-proj"

    service.sim.create_mailbox("cy@example.com")
    token = service.sim.issue_refresh_token(client["clientId"], "cy@example.com")
    mailbox = await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
        email_address="cy@example.com", oauth=mailbox_service_pb2.OAuthCredentials(refresh_token=token)),
        metadata=auth)
    assert mailbox.credential_kind == resources_pb2.CREDENTIAL_KIND_OAUTH and mailbox.watch_topic == names["topic"]

    missing = await _failure(service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="cy@example.com"), metadata=auth))
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(missing)[1].field_violations[0].field == "oauth.refresh_token"


async def test_without_defaults_a_bare_registration_is_refused_clearly(service):
    _, auth = await service.new_tenant()
    service.sim.create_mailbox("dee@example.com")
    refused = await _failure(service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="dee@example.com"), metadata=auth))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused)[0].reason == "NO_DEFAULT_CREDENTIALS"


async def test_settings_whose_topic_is_outside_the_credentials_project_are_refused(service):
    tenant_id, _ = await service.new_tenant()
    key = service.sim.create_service_account_key(project_id="tenant-e-proj")
    refused = await _failure(service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, pubsub_topic="projects/operator-proj/topics/gmail",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    ), metadata=OPERATOR))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = {v.field: v.description for v in error_details(refused)[1].field_violations}
    assert "tenant-e-proj" in violations["pubsub_topic"]
    missing = await _failure(service.admin.GetTenantGoogleSettings(
        admin_service_pb2.GetTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_the_subscription_may_be_in_another_project_than_the_topic(service):
    """Gmail's rule binds the topic to the credentials' project; the subscription reading it may
    live anywhere (here the operator's project), as the rpc's documentation says."""
    tenant_id, _ = await service.new_tenant()
    key = service.sim.create_service_account_key(project_id="tenant-g-proj")
    settings = await service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, pubsub_topic="projects/tenant-g-proj/topics/gmail",
        pubsub_subscription=f"projects/{TEST_PROJECT}/subscriptions/tenant-g-reader",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    ), metadata=OPERATOR)
    assert (settings.pubsub_topic, settings.pubsub_subscription) == (
        "projects/tenant-g-proj/topics/gmail", f"projects/{TEST_PROJECT}/subscriptions/tenant-g-reader")
    # The topic, though, must be the credentials' project's, wherever the subscription is.
    refused = await _failure(service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, pubsub_topic=f"projects/{TEST_PROJECT}/topics/gmail",
        pubsub_subscription="projects/tenant-g-proj/subscriptions/mailwatch",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    ), metadata=OPERATOR))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(refused)[1].field_violations] == ["pubsub_topic"]


async def test_clear_returns_the_tenant_to_the_deployment_topic(service):
    tenant_id, auth = await service.new_tenant()
    await set_sa_settings(service, tenant_id, "tenant-f-proj", tenant_topic("tenant-f-proj"))
    cleared = await service.admin.ClearTenantGoogleSettings(
        admin_service_pb2.ClearTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR)
    again = await service.admin.ClearTenantGoogleSettings(
        admin_service_pb2.ClearTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR)
    assert (cleared.cleared, again.cleared) == (True, False)
    refused = await _failure(service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="fay@example.com"), metadata=auth))
    assert error_details(refused)[0].reason == "NO_DEFAULT_CREDENTIALS"


async def test_a_tenant_without_settings_reads_not_found_from_both_apis(service):
    """Never set, and set then cleared: the tenant's own GetGoogleSettings and the operator's
    GetTenantGoogleSettings both answer NOT_FOUND (reason NOT_FOUND), never an empty GoogleSettings."""
    never_id, never_auth = await service.new_tenant()
    cleared_id, cleared_auth = await service.new_tenant()
    await set_sa_settings(service, cleared_id, "tenant-h-proj", tenant_topic("tenant-h-proj"))
    await service.admin.ClearTenantGoogleSettings(
        admin_service_pb2.ClearTenantGoogleSettingsRequest(tenant_id=cleared_id), metadata=OPERATOR)

    for tenant_id, auth in ((never_id, never_auth), (cleared_id, cleared_auth)):
        own = await _failure(service.mailboxes.GetGoogleSettings(mailbox_service_pb2.GetGoogleSettingsRequest(),
                                                                 metadata=auth))
        operator = await _failure(service.admin.GetTenantGoogleSettings(
            admin_service_pb2.GetTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR))
        for refused in (own, operator):
            assert refused.code() == grpc.StatusCode.NOT_FOUND, refused
            assert error_details(refused)[0].reason == "NOT_FOUND"
