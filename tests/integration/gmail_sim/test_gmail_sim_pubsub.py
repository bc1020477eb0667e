"""Watch notifications delivered through the real Pub/Sub emulator to a google-cloud-pubsub subscriber."""

from __future__ import annotations

import json
import time

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(pubsub_names):
    with pubsub_v1.PublisherClient() as publisher:
        publisher.create_topic(name=pubsub_names["topic"])
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=pubsub_names["subscription"], topic=pubsub_names["topic"])
    return pubsub_names["topic"]


@pytest.fixture
def subscriber():
    with pubsub_v1.SubscriberClient() as client:
        yield client


class Pull:
    def __init__(self, subscriber, subscription):
        self.subscriber = subscriber
        self.subscription = subscription

    def _once(self, timeout: float) -> list:
        try:
            response = self.subscriber.pull(subscription=self.subscription, max_messages=100, timeout=timeout)
        except exceptions.DeadlineExceeded:
            return []
        if response.received_messages:
            self.subscriber.acknowledge(subscription=self.subscription,
                                        ack_ids=[m.ack_id for m in response.received_messages])
        return [m.message for m in response.received_messages]

    def exactly(self, count: int, timeout: float = 15.0) -> list:
        """Poll until `count` messages arrived (fail on timeout), then check nothing more is there."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += self._once(timeout=2.0)
        assert len(got) >= count, f"only {len(got)} of {count} notifications arrived"
        got += self._once(timeout=1.0)
        assert len(got) == count, [m.data for m in got]
        return got


@pytest.fixture
def pull(subscriber, pubsub_names, topic):
    return Pull(subscriber, pubsub_names["subscription"])


@pytest.fixture
def alice(pubsub_sim, pubsub_gmail):
    pubsub_gmail.control.create_mailboxes([ALICE, BOB])
    return pubsub_gmail.for_user(ALICE)


def test_notification_arrives_with_gmails_exact_payload(pubsub_gmail, alice, topic, pull):
    control = pubsub_gmail.control
    watch = alice.users().watch(userId="me", body={"topicName": topic}).execute()
    (first,) = pull.exactly(1)
    assert first.data == json.dumps({"emailAddress": ALICE, "historyId": int(watch["historyId"])},
                                    separators=(",", ":")).encode()
    assert dict(first.attributes) == {}
    control.advance_clock(1.5)
    message = control.insert_message(ALICE)
    (second,) = pull.exactly(1)
    payload = json.loads(second.data)
    assert payload == {"emailAddress": ALICE, "historyId": message["historyId"]}
    assert isinstance(payload["historyId"], int)
    # What the notification points at is what history.list returns.
    history = alice.users().history().list(userId="me", startHistoryId=watch["historyId"]).execute()
    assert history["historyId"] == str(payload["historyId"])
    assert control.notification_counts() == {"published": 2}


def test_history_id_as_string_option(pubsub_gmail, alice, topic, pull):
    pubsub_gmail.control.configure(notification_history_id_type="string")
    watch = alice.users().watch(userId="me", body={"topicName": topic}).execute()
    (message,) = pull.exactly(1)
    assert json.loads(message.data) == {"emailAddress": ALICE, "historyId": watch["historyId"]}


def test_at_most_one_notification_per_second_per_user(pubsub_gmail, alice, topic, pull):
    control = pubsub_gmail.control
    bob = pubsub_gmail.for_user(BOB)
    alice.users().watch(userId="me", body={"topicName": topic}).execute()
    bob.users().watch(userId="me", body={"topicName": topic}).execute()  # other users have their own budget
    burst = control.insert_messages([{"emailAddress": ALICE} for _ in range(5)])  # same simulated second
    control.advance_clock(1.0)
    last = control.insert_message(ALICE)
    assert control.flush_notifications()
    messages = pull.exactly(3)
    alice_ids = sorted(json.loads(m.data)["historyId"] for m in messages
                       if json.loads(m.data)["emailAddress"] == ALICE)
    assert len(alice_ids) == 2 and alice_ids[-1] == last["historyId"]
    assert burst[-1]["historyId"] not in alice_ids
    statuses = [n["status"] for n in control.notifications(ALICE)]
    assert statuses == ["published"] + ["dropped_rate_limit"] * 5 + ["published"]


def test_stop_ends_notifications(pubsub_gmail, alice, topic, pull):
    control = pubsub_gmail.control
    alice.users().watch(userId="me", body={"topicName": topic}).execute()
    pull.exactly(1)
    alice.users().stop(userId="me").execute()
    control.advance_clock(5)
    control.insert_message(ALICE)
    assert control.flush_notifications()
    pull.exactly(0)


def test_label_filter_decides_which_changes_notify(pubsub_gmail, alice, topic, pull):
    control = pubsub_gmail.control
    alice.users().watch(userId="me", body={"topicName": topic, "labelIds": ["INBOX"],
                                           "labelFilterBehavior": "include"}).execute()
    pull.exactly(1)
    control.advance_clock(2)
    sent = control.insert_message(ALICE, label_ids=["SENT"])  # not INBOX: silent
    control.advance_clock(2)
    inbox = control.insert_message(ALICE, label_ids=["INBOX"])
    control.advance_clock(2)
    moved = control.add_labels(ALICE, sent["id"], ["INBOX"])  # a change relating to INBOX
    assert control.flush_notifications()
    got = [json.loads(m.data)["historyId"] for m in pull.exactly(2)]
    assert sorted(got) == [inbox["historyId"], moved]

    control.advance_clock(2)  # the re-watch's own notification counts against the 1/s limit too
    alice.users().watch(userId="me", body={"topicName": topic, "labelIds": ["INBOX"],
                                           "labelFilterBehavior": "exclude"}).execute()
    pull.exactly(1)
    control.advance_clock(2)
    control.insert_message(ALICE, label_ids=["INBOX"])  # excluded
    control.advance_clock(2)
    other = control.insert_message(ALICE, label_ids=["SENT"])
    assert control.flush_notifications()
    assert [json.loads(m.data)["historyId"] for m in pull.exactly(1)] == [other["historyId"]]


def test_delayed_and_dropped_notifications(pubsub_gmail, alice, topic, pull):
    control = pubsub_gmail.control
    control.set_notification_faults(delay_seconds=0.5)
    started = time.monotonic()
    alice.users().watch(userId="me", body={"topicName": topic}).execute()
    assert control.notifications(ALICE)[0]["status"] == "queued"
    pull.exactly(1)
    assert time.monotonic() - started >= 0.5
    control.set_notification_faults(delay_seconds=0, drop_fraction=1.0)
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert control.flush_notifications()
    pull.exactly(0)
    assert control.notifications(ALICE)[-1]["status"] == "dropped_fault"


def test_watch_on_missing_topic_answers_like_gmail(pubsub_names, alice):
    with pytest.raises(HttpError) as missing:
        alice.users().watch(userId="me", body={"topicName": pubsub_names["topic"]}).execute()
    assert missing.value.resp.status == 404
    assert json.loads(missing.value.content)["error"]["errors"][0]["reason"] == "notFound"


def test_many_users_notified_at_once_each_arrive_once_with_their_publish_delay(pubsub_gmail, topic, pull):
    """Everything due is published to the emulator together (one call per topic): each notification
    still arrives exactly once with its own payload, and the log says how long it waited."""
    control = pubsub_gmail.control
    users = [f"user{i:03d}@example.com" for i in range(120)]
    control.create_mailboxes(users)
    control.set_notification_faults(delay_seconds=0.3)  # the watches' notifications become due together
    expected = []
    for user in users:
        watch = pubsub_gmail.for_user(user).users().watch(userId="me", body={"topicName": topic}).execute()
        expected.append((user, int(watch["historyId"])))
    control.set_notification_faults(delay_seconds=0)
    control.advance_clock(1.5)
    changed = control.insert_messages([{"emailAddress": user} for user in users])  # one moment, 120 users
    expected += [(c["emailAddress"], c["historyId"]) for c in changed]
    assert control.flush_notifications()
    got = [json.loads(m.data) for m in pull.exactly(2 * len(users), timeout=60)]
    assert sorted((p["emailAddress"], p["historyId"]) for p in got) == sorted(expected)
    log = control.notifications()
    assert [n["status"] for n in log] == ["published"] * (2 * len(users))
    assert all(n["publishedAfterSeconds"] >= 0 for n in log)
