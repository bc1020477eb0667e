"""`mailwatch pubsub ensure` against the Pub/Sub emulator: idempotent, repairs drifted settings,
reports honestly that the emulator has no IAM, refuses a subscription of another topic."""

from __future__ import annotations

import uuid

import pytest
from google.cloud import pubsub_v1

from mailwatch.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def names(pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    suffix = uuid.uuid4().hex[:8]
    return f"projects/ensure-proj/topics/gmail-{suffix}", f"projects/ensure-proj/subscriptions/mailwatch-{suffix}"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["pubsub", "ensure", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ensure_is_idempotent_and_reports_what_it_changed(names, capsys):
    topic, subscription = names
    code, out, _ = run(capsys, "--topic", topic, "--subscription", subscription)
    assert code == 0
    assert f"topic: created ({topic})" in out and "subscription: created" in out
    assert "publisher grant: unsupported" in out and "gmail-api-push@system.gserviceaccount.com" in out
    assert "2 change(s)" in out
    with pubsub_v1.SubscriberClient() as subscriber:
        made = subscriber.get_subscription(subscription=subscription)
    assert (made.topic, made.ack_deadline_seconds) == (topic, 60)
    assert made.message_retention_duration.total_seconds() == 7 * 24 * 3600

    code, out, _ = run(capsys, "--topic", topic, "--subscription", subscription)
    assert code == 0
    assert "topic: exists" in out and "subscription: unchanged" in out
    assert "0 change(s): everything was already in place" in out


def test_drifted_settings_are_repaired(names, capsys):
    topic, subscription = names
    with pubsub_v1.PublisherClient() as publisher:
        publisher.create_topic(name=topic)
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)
    code, out, _ = run(capsys, "--topic", topic, "--subscription", subscription)
    assert code == 0 and "subscription: updated" in out and "ack_deadline_seconds 10 -> 60" in out
    with pubsub_v1.SubscriberClient() as subscriber:
        assert subscriber.get_subscription(subscription=subscription).ack_deadline_seconds == 60


def test_a_subscription_of_another_topic_is_refused_untouched(names, capsys):
    topic, subscription = names
    other = topic + "-other"
    with pubsub_v1.PublisherClient() as publisher:
        publisher.create_topic(name=other)
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=subscription, topic=other)
    code, _, err = run(capsys, "--topic", topic, "--subscription", subscription)
    assert code == 1 and f"reads {other}" in err
    with pubsub_v1.SubscriberClient() as subscriber:
        assert subscriber.get_subscription(subscription=subscription).topic == other


def test_the_topic_defaults_from_the_environment(names, capsys, monkeypatch):
    topic, subscription = names
    monkeypatch.setenv("MAILWATCH_PUBSUB_TOPIC", topic)
    monkeypatch.setenv("MAILWATCH_PUBSUB_SUBSCRIPTIONS", subscription)
    code, out, _ = run(capsys)
    assert code == 0 and topic in out and subscription in out
    code, _, err = run(capsys, "--topic", "not-a-topic")
    assert code == 2 and "projects/<project>/topics/<name>" in err
