"""The publisher grant on real Pub/Sub (the emulator has no IAM, so its policy calls are played
here with Google's own IAM policy messages): added once, kept when present, etag passed back."""

from google.api_core import exceptions
from google.iam.v1 import policy_pb2

from mailwatch.pubsub_setup import GMAIL_PUBLISHER, PUBLISHER_ROLE, _ensure_grant


class PolicyHolder:
    def __init__(self, policy):
        self.policy = policy
        self.set_calls = []

    def get_iam_policy(self, request):
        copy = policy_pb2.Policy()
        copy.CopyFrom(self.policy)
        return copy

    def set_iam_policy(self, request):
        assert request["policy"].etag == self.policy.etag  # read-modify-write with the etag
        self.set_calls.append(request)
        self.policy = request["policy"]
        return self.policy


def test_grant_added_once_next_to_other_publishers():
    holder = PolicyHolder(policy_pb2.Policy(etag=b"e1", bindings=[
        policy_pb2.Binding(role=PUBLISHER_ROLE, members=["user:ops@example.com"]),
        policy_pb2.Binding(role="roles/pubsub.viewer", members=["user:ops@example.com"]),
    ]))
    assert _ensure_grant(holder, "projects/p/topics/t").outcome == "granted"
    publishers = [b for b in holder.policy.bindings if b.role == PUBLISHER_ROLE]
    assert len(publishers) == 1 and list(publishers[0].members) == ["user:ops@example.com", GMAIL_PUBLISHER]
    assert _ensure_grant(holder, "projects/p/topics/t").outcome == "exists"
    assert len(holder.set_calls) == 1


def test_grant_on_an_empty_policy():
    holder = PolicyHolder(policy_pb2.Policy(etag=b"e0"))
    assert _ensure_grant(holder, "projects/p/topics/t").outcome == "granted"
    assert [(b.role, list(b.members)) for b in holder.policy.bindings] == [(PUBLISHER_ROLE, [GMAIL_PUBLISHER])]


def test_no_iam_is_reported_not_pretended():
    class NoIam:
        def get_iam_policy(self, request):
            raise exceptions.MethodNotImplemented("IAM is not supported")

    step = _ensure_grant(NoIam(), "projects/p/topics/t")
    assert step.outcome == "unsupported" and "gmail-api-push@system.gserviceaccount.com" in step.detail
