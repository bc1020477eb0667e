"""Pub/Sub push delivery by the simulator itself (no emulator, no Java).

A local aiohttp receiver plays the push endpoint; the requests it gets are
checked against Pub/Sub's push format, and their ID tokens are verified with
google-auth against the simulator's published keys, as a real receiver would.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from google.auth import jwt as google_jwt
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from mailwatch_devstack.gmail_sim import SimulatorControlError
from tests.fixtures.waiting import eventually_sync
from tests.integration.gmail_sim.support import ALICE

pytestmark = pytest.mark.integration

TOPIC = "projects/sim-project/topics/gmail"
SUBSCRIPTION = "projects/sim-project/subscriptions/mailwatch-push"
PUSHER = "pubsub-push@sim-project.iam.gserviceaccount.com"
AUDIENCE = "https://mailwatch.test/pubsub/push"


class Receiver:
    """A push endpoint (stdlib HTTP server in a thread); answers the statuses queued in `answers`, then 204."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/push":
                    receiver.requests.append({"headers": dict(self.headers), "body": body})
                    status = receiver.answers.pop(0) if receiver.answers else 204
                else:
                    status = 404
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/push"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(30)


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def watch(gmail, topic: str = TOPIC):
    service = gmail.service(gmail.sa_credentials(ALICE))
    return service.users().watch(userId="me", body={"topicName": topic}).execute()


def test_notifications_arrive_in_pubsub_push_format_with_a_verifiable_token(control, gmail, receiver):
    control.create_mailbox(ALICE)
    created = control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url,
                                               service_account_email=PUSHER, audience=AUDIENCE)
    assert created["pushConfig"] == {"pushEndpoint": receiver.url,
                                     "oidcToken": {"serviceAccountEmail": PUSHER, "audience": AUDIENCE}}
    watched = watch(gmail)
    control.advance_clock(2)  # past Gmail's one notification per second per user
    inserted = control.insert_message(ALICE, label_ids=["INBOX"])
    eventually_sync(lambda: len(receiver.requests) >= 2)

    first, second = receiver.requests[:2]
    assert first["body"]["subscription"] == SUBSCRIPTION
    message = second["body"]["message"]
    assert json.loads(base64.b64decode(message["data"])) == {"emailAddress": ALICE,
                                                             "historyId": inserted["historyId"]}
    assert json.loads(base64.b64decode(first["body"]["message"]["data"]))["historyId"] == int(watched["historyId"])
    assert message["messageId"] == message["message_id"] != first["body"]["message"]["messageId"]
    assert message["publishTime"] == message["publish_time"] and message["publishTime"].endswith("Z")

    oidc = control.oidc()
    assert oidc["issuer"] == control.url
    scheme, _, token = second["headers"]["Authorization"].partition(" ")
    assert scheme == "Bearer"
    with requests.Session() as session:
        claims = id_token.verify_token(token, Request(session=session), audience=AUDIENCE,
                                       certs_url=oidc["certsUri"])
    assert (claims["iss"], claims["email"], claims["email_verified"]) == (control.url, PUSHER, True)
    assert claims["exp"] - claims["iat"] == 3600 and claims["sub"].isdigit()
    assert control.notification_counts() == {"pushed": 2}


def test_the_jwks_and_the_certificates_publish_the_same_signing_key(control, gmail, receiver):
    control.create_mailbox(ALICE)
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url, service_account_email=PUSHER)
    watch(gmail)
    eventually_sync(lambda: receiver.requests)
    token = receiver.requests[0]["headers"]["Authorization"].split(" ", 1)[1]
    header = google_jwt.decode_header(token)
    with requests.Session() as session:
        jwks = session.get(control.oidc()["jwksUri"], timeout=10).json()
        discovery = session.get(f"{control.url}/.well-known/openid-configuration", timeout=10).json()
    (key,) = jwks["keys"]
    assert (key["kid"], key["alg"], header["alg"]) == (header["kid"], "RS256", "RS256")
    number = lambda field: int.from_bytes(base64.urlsafe_b64decode(key[field] + "=="), "big")  # noqa: E731
    public_key = RSAPublicNumbers(number("e"), number("n")).public_key()
    from google.auth.crypt import RSAVerifier

    signed, _, signature = token.rpartition(".")
    assert RSAVerifier(public_key).verify(signed.encode(), base64.urlsafe_b64decode(signature + "=="))
    assert discovery["issuer"] == control.url and discovery["jwks_uri"] == control.oidc()["jwksUri"]
    # Without an audience of its own, the token's is the endpoint, as Pub/Sub defaults it.
    assert google_jwt.decode(token, verify=False)["aud"] == receiver.url


def test_refused_pushes_are_retried_with_backoff_until_acknowledged(control, gmail, receiver):
    control.create_mailbox(ALICE)
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url)
    receiver.answers = [503, 500]
    watch(gmail)
    assert control.flush_notifications(timeout=30)
    (entry,) = control.notifications(ALICE)
    assert (entry["status"], entry["attempts"], entry["lastError"]) == ("pushed", 3, "HTTP 500")
    assert len({r["body"]["message"]["messageId"] for r in receiver.requests}) == 1  # the same message redelivered
    assert all("Authorization" not in r["headers"] for r in receiver.requests)  # no oidcToken configured


def test_an_unreachable_endpoint_is_retried_and_the_message_kept_queued(control, gmail, receiver):
    control.create_mailbox(ALICE)
    dead = receiver.url.replace("/push", "/nowhere")  # 404 from the receiver: not an acknowledgement
    control.create_push_subscription(SUBSCRIPTION, TOPIC, dead)
    watch(gmail)
    eventually_sync(lambda: control.notifications(ALICE)[0].get("attempts", 0) >= 2)
    entry = control.notifications(ALICE)[0]
    assert entry["status"] == "queued" and entry["lastError"] == "HTTP 404"


def test_an_unacknowledged_push_is_retried_for_the_subscriptions_retention(control, gmail, receiver):
    control.create_mailbox(ALICE)
    dead = receiver.url.replace("/push", "/nowhere")
    control.create_push_subscription(SUBSCRIPTION, TOPIC, dead, message_retention_duration="3600s")
    watch(gmail)

    def attempts() -> int:
        return control.notifications(ALICE)[0].get("attempts", 0)

    eventually_sync(lambda: attempts() >= 1)
    control.advance_clock(11 * 60)  # past ten minutes: Pub/Sub keeps retrying within the retention
    tried = attempts()
    eventually_sync(lambda: attempts() > tried)
    assert control.notifications(ALICE)[0]["status"] == "queued"
    control.advance_clock(3600)  # past the retention: the next failure is the last
    eventually_sync(lambda: control.notifications(ALICE)[0]["status"] == "failed")
    assert control.notifications(ALICE)[0]["error"].endswith("HTTP 404")


def test_push_retention_defaults_to_pubsubs_seven_days_and_is_validated(control, receiver):
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url)
    assert control.push_subscriptions()[0]["messageRetentionDuration"] == "604800s"
    for bad in ("599s", "604801s", "7d", 3600):
        with pytest.raises(SimulatorControlError) as error:
            control._call("POST", "/_sim/push-subscriptions", {
                "name": SUBSCRIPTION, "topic": TOPIC, "pushConfig": {"pushEndpoint": receiver.url},
                "messageRetentionDuration": bad})
        assert error.value.status == 400 and "messageRetentionDuration" in str(error.value)


def test_a_retry_follows_the_subscription_to_its_new_endpoint(control, gmail, receiver):
    control.create_mailbox(ALICE)
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url.replace("/push", "/old"))
    watch(gmail)
    eventually_sync(lambda: control.notifications(ALICE)[0].get("attempts", 0) >= 1)
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url)  # re-pointed, as after a restart
    assert control.flush_notifications(timeout=30)
    assert control.notifications(ALICE)[0]["status"] == "pushed"
    assert len(receiver.requests) == 1


def test_watch_needs_a_topic_with_a_push_subscription_once_pushing(control, gmail, receiver):
    control.create_mailbox(ALICE)
    control.create_push_subscription(SUBSCRIPTION, TOPIC, receiver.url)
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as error:
        watch(gmail, topic="projects/sim-project/topics/nobody-subscribed")
    assert error.value.resp.status == 404
    assert watch(gmail)["historyId"]


@pytest.mark.parametrize("body, message", [
    ({"name": "subs/x", "topic": TOPIC, "pushConfig": {"pushEndpoint": "http://127.0.0.1/"}}, "'name'"),
    ({"name": SUBSCRIPTION, "topic": "gmail", "pushConfig": {"pushEndpoint": "http://127.0.0.1/"}}, "'topic'"),
    ({"name": SUBSCRIPTION, "topic": TOPIC, "pushConfig": {"pushEndpoint": "ftp://x/"}}, "pushEndpoint"),
    ({"name": SUBSCRIPTION, "topic": TOPIC, "pushConfig": {"pushEndpoint": "http://127.0.0.1/",
                                                           "oidcToken": {"serviceAccountEmail": "nobody"}}},
     "serviceAccountEmail"),
])
def test_a_malformed_push_subscription_is_refused(control, body, message):
    with pytest.raises(SimulatorControlError) as error:
        control._call("POST", "/_sim/push-subscriptions", body)
    assert error.value.status == 400 and message in str(error.value)
    assert control.push_subscriptions() == []
