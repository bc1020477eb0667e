"""Which Google project a topic and a credential belong to; which topic a registration watches with."""

import uuid

import pytest

from mailwatch.domain.errors import GmailTopicNotPublishable, InvalidArgument, NoDefaultCredentials, \
    TopicProjectMismatch
from mailwatch.domain.models import CredentialKind, GoogleSettings, OAuthCredential, ServiceAccountCredential, \
    TenantDefaultCredential
from mailwatch.domain.projects import credential_project, quota_project, resolve_credential, topic_project, \
    watch_topic_for

OPERATOR_TOPIC = "projects/operator/topics/gmail"
TENANT_TOPIC = "projects/tenant-a/topics/gmail"
OAUTH = OAuthCredential("id", "secret", "refresh")


def key_of(project, subject="a@b.c"):
    return ServiceAccountCredential(info={"project_id": project, "client_email": "x@y"}, subject=subject)


def settings_with(credential, project="tenant-a", topic=TENANT_TOPIC):
    kind = CredentialKind.SERVICE_ACCOUNT if isinstance(credential, ServiceAccountCredential) else CredentialKind.OAUTH
    return GoogleSettings(uuid.uuid4(), project, kind, "id", topic, credential=credential)


def test_topic_project():
    assert topic_project("projects/acme/topics/gmail") == "acme"
    assert topic_project("projects/acme/subscriptions/gmail") is None
    assert topic_project("gmail") is None


def test_credential_project_is_known_for_keys_only():
    assert credential_project(key_of("acme")) == "acme"
    assert credential_project(key_of("")) is None
    assert credential_project(OAUTH) is None


def test_quota_project_is_a_keys_project_id_or_an_oauth_clients_project_number():
    assert quota_project(key_of("acme")) == "acme"
    assert quota_project(key_of("")) is None
    client = "123456789012-abc123def.apps.googleusercontent.com"
    assert quota_project(OAuthCredential(client, "secret", "refresh")) == "123456789012"
    assert quota_project(OAUTH) is None  # not in Google's form: no project to name
    assert quota_project(OAuthCredential("12-x.apps.googleusercontent.com.evil", "s", "r")) is None
    assert quota_project(OAuthCredential("abc-x.apps.googleusercontent.com", "s", "r")) is None


def test_a_key_watches_with_the_topic_of_its_own_project():
    tenant = settings_with(key_of("tenant-a", subject=""))
    assert watch_topic_for(key_of("tenant-a"), from_tenant_defaults=True, settings=tenant,
                           deployment_topic=OPERATOR_TOPIC) == TENANT_TOPIC
    assert watch_topic_for(key_of("operator"), from_tenant_defaults=False, settings=tenant,
                           deployment_topic=OPERATOR_TOPIC) == OPERATOR_TOPIC
    assert watch_topic_for(key_of("operator"), from_tenant_defaults=False, settings=None,
                           deployment_topic=OPERATOR_TOPIC) == OPERATOR_TOPIC


def test_mismatch_names_both_projects():
    with pytest.raises(TopicProjectMismatch) as refused:
        watch_topic_for(key_of("elsewhere"), from_tenant_defaults=False, settings=None, deployment_topic=OPERATOR_TOPIC)
    assert refused.value.metadata == {"topic": OPERATOR_TOPIC, "topic_project": "operator",
                                      "credentials_project": "elsewhere"}
    assert "'operator'" in refused.value.message and "'elsewhere'" in refused.value.message


def test_an_oauth_default_client_uses_the_declared_project_an_override_the_first_topic():
    tenant = settings_with(OAuthCredential("id", "secret", ""))
    assert watch_topic_for(OAUTH, from_tenant_defaults=True, settings=tenant,
                           deployment_topic=OPERATOR_TOPIC) == TENANT_TOPIC
    assert watch_topic_for(OAUTH, from_tenant_defaults=False, settings=None,
                           deployment_topic=OPERATOR_TOPIC) == OPERATOR_TOPIC


def test_no_topic_anywhere():
    with pytest.raises(GmailTopicNotPublishable):
        watch_topic_for(OAUTH, from_tenant_defaults=False, settings=None, deployment_topic="")


def test_resolving_the_tenants_defaults():
    sa = settings_with(key_of("tenant-a", subject=""))
    assert resolve_credential(TenantDefaultCredential(), sa, "ann@a.test").subject == "ann@a.test"
    oauth = settings_with(OAuthCredential("id", "secret", ""))
    assert resolve_credential(TenantDefaultCredential("rt"), oauth, "x@a.test") == OAuthCredential("id", "secret", "rt")
    assert resolve_credential(OAUTH, None, "x@a.test") is OAUTH
    with pytest.raises(NoDefaultCredentials):
        resolve_credential(TenantDefaultCredential(), None, "x@a.test")
    with pytest.raises(InvalidArgument):
        resolve_credential(TenantDefaultCredential(), oauth, "x@a.test")
    with pytest.raises(InvalidArgument):
        resolve_credential(TenantDefaultCredential("rt"), sa, "x@a.test")


def test_union_filter_is_never_narrower_than_any_registration():
    from mailwatch.domain.models import LabelFilter, LabelFilterBehavior
    from mailwatch.domain.projects import union_filter

    inc, exc = LabelFilterBehavior.INCLUDE, LabelFilterBehavior.EXCLUDE
    assert union_filter([LabelFilter(("INBOX",), inc), LabelFilter(("SENT", "INBOX"), inc)]) == \
        LabelFilter(("INBOX", "SENT"), inc)
    assert union_filter([LabelFilter(("INBOX",), inc), LabelFilter()]) == LabelFilter()  # one wants everything
    assert union_filter([LabelFilter(("SPAM", "TRASH"), exc), LabelFilter(("SPAM",), exc)]) == \
        LabelFilter(("SPAM",), exc)
    assert union_filter([LabelFilter(("SPAM",), exc), LabelFilter(("TRASH",), exc)]) == LabelFilter()
    assert union_filter([LabelFilter(("INBOX",), inc), LabelFilter(("SPAM",), exc)]) == LabelFilter()  # mixed
