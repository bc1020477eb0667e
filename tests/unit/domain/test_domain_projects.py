"""Which Google project a topic and a credential belong to, and the early mismatch check."""

import pytest

from mailwatch.domain.errors import TopicProjectMismatch
from mailwatch.domain.models import OAuthCredential, ServiceAccountCredential
from mailwatch.domain.projects import check_topic_project, credential_project, topic_project


def key_of(project):
    return ServiceAccountCredential(info={"project_id": project, "client_email": "x@y"}, subject="a@b.c")


def test_topic_project():
    assert topic_project("projects/acme/topics/gmail") == "acme"
    assert topic_project("projects/acme/subscriptions/gmail") is None
    assert topic_project("gmail") is None


def test_credential_project_is_known_for_keys_only():
    assert credential_project(key_of("acme")) == "acme"
    assert credential_project(key_of("")) is None
    assert credential_project(OAuthCredential("id", "secret", "refresh")) is None


def test_mismatch_names_both_projects():
    with pytest.raises(TopicProjectMismatch) as refused:
        check_topic_project("projects/operator/topics/gmail", key_of("tenant-a"))
    assert refused.value.metadata == {"topic": "projects/operator/topics/gmail", "topic_project": "operator",
                                      "credentials_project": "tenant-a"}
    assert "'operator'" in refused.value.message and "'tenant-a'" in refused.value.message


def test_no_refusal_when_a_project_is_unknown_or_they_agree():
    check_topic_project("projects/acme/topics/gmail", key_of("acme"))
    check_topic_project("projects/acme/topics/gmail", OAuthCredential("id", "secret", "refresh"))
