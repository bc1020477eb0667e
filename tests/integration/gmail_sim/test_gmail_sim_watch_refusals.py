"""users.watch refuses as Gmail does: a topic Gmail may not publish to (no publisher role for
gmail-api-push@system.gserviceaccount.com), a label id the user does not have."""

from __future__ import annotations

import json

import pytest
from googleapiclient.errors import HttpError

from mailwatch_devstack.gmail_sim import SimulatorControlError
from tests.integration.gmail_sim.support import ALICE

pytestmark = pytest.mark.integration

TOPIC = "projects/sim-project/topics/gmail"
NOT_AUTHORIZED = f"Error sending test message to Cloud PubSub {TOPIC} : User not authorized to perform this action."


@pytest.fixture
def alice(control, gmail):
    control.create_mailbox(ALICE)
    return gmail.for_user(ALICE)


def refusal(call) -> tuple[int, dict]:
    with pytest.raises(HttpError) as refused:
        call.execute()
    return refused.value.resp.status, json.loads(refused.value.content)["error"]


def test_a_topic_without_gmails_publisher_grant_is_refused(control, alice):
    control.set_gmail_publisher(TOPIC, granted=False)
    status, error = refusal(alice.users().watch(userId="me", body={"topicName": TOPIC}))
    assert status == 403 and error["message"] == NOT_AUTHORIZED
    assert error["errors"][0]["reason"] == "forbidden" and error["status"] == "PERMISSION_DENIED"
    assert control.mailbox(ALICE)["watches"] == [] and control.notifications() == []
    # Another topic of the project is unaffected; granted again, the topic is watched.
    other = "projects/sim-project/topics/other"
    alice.users().watch(userId="me", body={"topicName": other}).execute()
    alice.users().stop(userId="me").execute()
    control.set_gmail_publisher(TOPIC, granted=True)
    assert alice.users().watch(userId="me", body={"topicName": TOPIC}).execute()["historyId"]
    assert control.mailbox(ALICE)["watch"]["topicName"] == TOPIC


def test_the_publisher_setting_is_validated(control):
    for body in ({"topic": "gmail", "granted": False}, {"topic": TOPIC, "granted": "no"}):
        with pytest.raises(SimulatorControlError) as rejected:
            control._call("POST", "/_sim/topics/gmail-publisher", body)
        assert rejected.value.status == 400


def test_a_label_id_the_user_does_not_have_is_refused(control, alice):
    label = control.create_label(ALICE, "Projects")
    status, error = refusal(alice.users().watch(
        userId="me", body={"topicName": TOPIC, "labelIds": ["INBOX", "Label_999"]}))
    assert status == 400 and error["message"] == "Invalid label: Label_999"
    assert error["errors"][0]["reason"] == "invalidArgument"
    # A label *name* is not an id either.
    status, error = refusal(alice.users().watch(userId="me", body={"topicName": TOPIC, "labelIds": ["Projects"]}))
    assert status == 400 and error["message"] == "Invalid label: Projects"
    assert control.mailbox(ALICE)["watches"] == []
    watched = alice.users().watch(userId="me", body={"topicName": TOPIC, "labelIds": [label, "INBOX"]}).execute()
    assert watched["historyId"] and control.mailbox(ALICE)["watch"]["labelIds"] == sorted([label, "INBOX"])
