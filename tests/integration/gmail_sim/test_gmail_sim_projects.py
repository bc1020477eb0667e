"""Gmail's developer-project rules: the watch topic lives in the caller's project, and one push
client per user per project (same topic replaces the filter, another topic is refused until stop,
stop ends the project's watch for every caller) — through the real client."""

from __future__ import annotations

import json

import pytest
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, READONLY

pytestmark = pytest.mark.integration

ONE_CLIENT = "Only one user push notification client allowed per developer (call /stop then try again)"


def _error(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


def _sa_service(gmail, control, project: str, email: str = ALICE):
    key = control.create_service_account_key(project_id=project, delegate_domains=[email.rpartition("@")[2]])
    creds = service_account.Credentials.from_service_account_info(key, scopes=[READONLY], subject=email)
    return gmail.service(creds)


def _oauth_service(gmail, control, project: str, email: str = ALICE):
    client = control.create_oauth_client(project_id=project)
    refresh = control.issue_refresh_token(client["clientId"], email)
    creds = user_credentials.Credentials(token=None, refresh_token=refresh, client_id=client["clientId"],
                                         client_secret=client["clientSecret"], token_uri=control.token_uri)
    return gmail.service(creds)


def _watch(service, topic: str, **body):
    return service.users().watch(userId="me", body={"topicName": topic, **body}).execute()


@pytest.fixture
def mailbox(control):
    control.create_mailbox(ALICE)
    return ALICE


@pytest.mark.parametrize("make", [_sa_service, _oauth_service], ids=["service-account", "oauth-client"])
def test_topic_of_another_project_is_refused(gmail, control, mailbox, make):
    service = make(gmail, control, "tenant-a")
    with pytest.raises(HttpError) as refused:
        _watch(service, "projects/operator/topics/gmail")
    error = _error(refused.value)
    assert (error["code"], error["errors"][0]["reason"]) == (400, "invalidArgument")
    assert error["message"] == "Invalid topicName does not match projects/tenant-a/topics/*"
    assert control.mailbox(ALICE)["watches"] == []
    assert _watch(service, "projects/tenant-a/topics/gmail")["historyId"]


def test_same_topic_replaces_the_filter_another_topic_is_refused_until_stop(gmail, control, mailbox):
    service = _sa_service(gmail, control, "acme")
    _watch(service, "projects/acme/topics/one", labelIds=["INBOX"])
    _watch(service, "projects/acme/topics/one", labelIds=["STARRED"])
    assert [(w["topicName"], w["labelIds"]) for w in control.mailbox(ALICE)["watches"]] == [
        ("projects/acme/topics/one", ["STARRED"])]

    with pytest.raises(HttpError) as refused:
        _watch(service, "projects/acme/topics/two")
    error = _error(refused.value)
    assert (error["code"], error["message"]) == (400, ONE_CLIENT)
    assert control.mailbox(ALICE)["watch"]["topicName"] == "projects/acme/topics/one"

    service.users().stop(userId="me").execute()
    _watch(service, "projects/acme/topics/two")
    assert control.mailbox(ALICE)["watch"]["topicName"] == "projects/acme/topics/two"


def test_an_expired_watch_does_not_block_another_topic(gmail, control, mailbox):
    service = _sa_service(gmail, control, "acme")
    _watch(service, "projects/acme/topics/one")
    control.advance_clock(7 * 24 * 3600 + 1)
    service = _sa_service(gmail, control, "acme")  # a fresh token: the old one expired with the clock
    assert _watch(service, "projects/acme/topics/two")


def test_stop_ends_the_watch_for_every_caller_of_the_project_only(gmail, control, mailbox):
    first = _sa_service(gmail, control, "acme")
    second = _oauth_service(gmail, control, "acme")  # another credential of the same project
    other = _sa_service(gmail, control, "globex")
    _watch(first, "projects/acme/topics/gmail")
    _watch(other, "projects/globex/topics/gmail")
    # The same project's second caller meets the first caller's push client.
    with pytest.raises(HttpError) as refused:
        _watch(second, "projects/acme/topics/elsewhere")
    assert _error(refused.value)["message"] == ONE_CLIENT

    second.users().stop(userId="me").execute()
    assert [w["projectId"] for w in control.mailbox(ALICE)["watches"]] == ["globex"]
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert [n["topic"] for n in control.notifications(ALICE)][-1] == "projects/globex/topics/gmail"


def test_watches_of_two_projects_coexist_each_with_its_filter_and_budget(gmail, control, mailbox):
    acme = _sa_service(gmail, control, "acme")
    globex = _sa_service(gmail, control, "globex")
    _watch(acme, "projects/acme/topics/gmail", labelIds=["INBOX"])
    _watch(globex, "projects/globex/topics/gmail", labelIds=["STARRED"])
    control.advance_clock(2)
    control.insert_message(ALICE, label_ids=["INBOX"])
    control.advance_clock(2)
    control.insert_message(ALICE, label_ids=["INBOX", "STARRED"])  # both filters match, same second
    assert control.flush_notifications()  # statuses are set by the publisher thread
    topics = [(n["topic"], n["status"]) for n in control.notifications(ALICE)]
    assert topics == [
        ("projects/acme/topics/gmail", "unpublished"),  # each watch's own first notification
        ("projects/globex/topics/gmail", "unpublished"),
        ("projects/acme/topics/gmail", "unpublished"),
        ("projects/acme/topics/gmail", "unpublished"),
        ("projects/globex/topics/gmail", "unpublished"),  # not eaten by acme's 1/s budget
    ]
