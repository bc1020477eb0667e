"""`mailwatch pubsub ensure`: the Pub/Sub topic and pull subscription Gmail notifications need.

Idempotent: what exists and is right is left alone, what is missing is
created, settings that differ are updated, and every step is reported. Gmail
publishes as gmail-api-push@system.gserviceaccount.com, which needs the
publisher role on the topic. The Pub/Sub emulator has no IAM: that step is
then reported as not possible there (not as done), and the rest still runs.

Subscription settings (why): ack deadline 60 s (a batch is written to
Postgres before it is acked; redelivery is harmless but wasteful), message
retention 7 days (the maximum: an outage of mailwatch loses no
notification), and no expiry (Pub/Sub deletes a subscription idle for 31
days by default, which would silently cut a quiet deployment off).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from google.api_core import exceptions as google_exceptions

GMAIL_PUBLISHER = "serviceAccount:gmail-api-push@system.gserviceaccount.com"
PUBLISHER_ROLE = "roles/pubsub.publisher"
ACK_DEADLINE_SECONDS = 60
MESSAGE_RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class Step:
    subject: str  # "topic", "publisher grant", "subscription"
    outcome: str  # created | exists | granted | updated | unchanged | unsupported
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.subject}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")


class EnsureError(Exception):
    """A step that cannot be made right (e.g. the subscription belongs to another topic)."""


def ensure(topic: str, subscription: str, *, publisher, subscriber) -> list[Step]:
    """Make topic, Gmail's publisher grant and the pull subscription exist as described above."""
    steps = [_ensure_topic(publisher, topic), _ensure_grant(publisher, topic)]
    if subscription:
        steps.append(_ensure_subscription(subscriber, topic, subscription))
    return steps


def _ensure_topic(publisher, topic: str) -> Step:
    try:
        publisher.get_topic(request={"topic": topic})
        return Step("topic", "exists", topic)
    except google_exceptions.NotFound:
        pass
    try:
        publisher.create_topic(request={"name": topic})
    except google_exceptions.AlreadyExists:  # created meanwhile by someone else
        return Step("topic", "exists", topic)
    return Step("topic", "created", topic)


def _ensure_grant(publisher, topic: str) -> Step:
    try:
        policy = publisher.get_iam_policy(request={"resource": topic})
    except (google_exceptions.MethodNotImplemented, google_exceptions.NotFound) as exc:
        # The emulator answers IAM calls with UNIMPLEMENTED or NOT_FOUND: there is no IAM to set.
        return Step("publisher grant", "unsupported",
                    f"this Pub/Sub has no IAM ({type(exc).__name__}); on Google Cloud grant {PUBLISHER_ROLE} "
                    f"on the topic to {GMAIL_PUBLISHER.split(':', 1)[1]}")
    for binding in policy.bindings:
        if binding.role == PUBLISHER_ROLE and GMAIL_PUBLISHER in binding.members:
            return Step("publisher grant", "exists", f"{PUBLISHER_ROLE} for {GMAIL_PUBLISHER}")
    for binding in policy.bindings:
        if binding.role == PUBLISHER_ROLE:
            binding.members.append(GMAIL_PUBLISHER)
            break
    else:
        policy.bindings.add(role=PUBLISHER_ROLE, members=[GMAIL_PUBLISHER])
    # The policy carries its etag: a concurrent change makes this fail instead of being overwritten.
    publisher.set_iam_policy(request={"resource": topic, "policy": policy})
    return Step("publisher grant", "granted", f"{PUBLISHER_ROLE} for {GMAIL_PUBLISHER}")


def _wanted_fields(existing) -> dict[str, tuple[str, str]]:
    """field -> (current, wanted) for each setting that differs."""
    differences = {}
    if existing.ack_deadline_seconds != ACK_DEADLINE_SECONDS:
        differences["ack_deadline_seconds"] = (str(existing.ack_deadline_seconds), str(ACK_DEADLINE_SECONDS))
    retention = existing.message_retention_duration
    current = timedelta(seconds=retention.total_seconds()) if retention else timedelta(0)
    if current != MESSAGE_RETENTION:
        differences["message_retention_duration"] = (str(current), str(MESSAGE_RETENTION))
    ttl = existing.expiration_policy.ttl if existing.expiration_policy else None
    if ttl:  # a set TTL means the subscription expires when idle; empty means never
        differences["expiration_policy"] = (f"expires after {ttl} idle", "never expires")
    return differences


def _subscription_body(topic: str, subscription: str) -> dict:
    return {
        "name": subscription,
        "topic": topic,
        "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
        "message_retention_duration": MESSAGE_RETENTION,
        "expiration_policy": {},  # no ttl: never expires
    }


def _ensure_subscription(subscriber, topic: str, subscription: str) -> Step:
    try:
        existing = subscriber.get_subscription(request={"subscription": subscription})
    except google_exceptions.NotFound:
        try:
            subscriber.create_subscription(request=_subscription_body(topic, subscription))
        except google_exceptions.AlreadyExists:
            existing = subscriber.get_subscription(request={"subscription": subscription})
        else:
            return Step("subscription", "created", f"{subscription}: ack deadline {ACK_DEADLINE_SECONDS}s, "
                                                   f"retention {MESSAGE_RETENTION.days} days, never expires")
    if existing.topic != topic:
        raise EnsureError(f"subscription {subscription} exists but reads {existing.topic}, not {topic}: "
                          "delete it or name another subscription")
    differences = _wanted_fields(existing)
    if not differences:
        return Step("subscription", "unchanged", subscription)
    subscriber.update_subscription(request={
        "subscription": _subscription_body(topic, subscription),
        "update_mask": {"paths": sorted(differences)},
    })
    changed = ", ".join(f"{field} {old} -> {new}" for field, (old, new) in sorted(differences.items()))
    return Step("subscription", "updated", f"{subscription}: {changed}")


# --- the command line -------------------------------------------------------------


def add_parser(sub) -> None:
    import os

    pubsub = sub.add_parser("pubsub", help="Pub/Sub setup for Gmail notifications")
    actions = pubsub.add_subparsers(dest="pubsub_action", required=True)
    ensure_parser = actions.add_parser(
        "ensure", help="create (idempotently) the topic and pull subscription, grant Gmail publishing on the topic")
    subscriptions = [s for s in os.environ.get("MAILWATCH_PUBSUB_SUBSCRIPTIONS", "").split(",") if s.strip()]
    ensure_parser.add_argument("--topic", default=os.environ.get("MAILWATCH_PUBSUB_TOPIC", ""),
                               help="projects/<project>/topics/<name> (default: $MAILWATCH_PUBSUB_TOPIC)")
    ensure_parser.add_argument("--subscription", default=subscriptions[0].strip() if subscriptions else "",
                               help="projects/<project>/subscriptions/<name> (default: the first of "
                                    "$MAILWATCH_PUBSUB_SUBSCRIPTIONS; empty: topic and grant only, e.g. for push)")
    ensure_parser.set_defaults(func=cmd_pubsub)


def cmd_pubsub(args) -> int:
    import sys

    from google.cloud import pubsub_v1

    if not args.topic.startswith("projects/") or "/topics/" not in args.topic:
        print("mailwatch: --topic must be projects/<project>/topics/<name>", file=sys.stderr)
        return 2
    try:
        with pubsub_v1.PublisherClient() as publisher, pubsub_v1.SubscriberClient() as subscriber:
            steps = ensure(args.topic, args.subscription, publisher=publisher, subscriber=subscriber)
    except EnsureError as exc:
        print(f"mailwatch: {exc}", file=sys.stderr)
        return 1
    except google_exceptions.GoogleAPICallError as exc:
        print(f"mailwatch: Pub/Sub refused: {exc}", file=sys.stderr)
        return 1
    for step in steps:
        print(step)
    changed = [step for step in steps if step.outcome in ("created", "granted", "updated")]
    print(f"{len(changed)} change(s)" + ("" if changed else ": everything was already in place"))
    return 0
