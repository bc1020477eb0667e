"""How Gmail's notifications reach mailwatch in the dev stack: two interchangeable paths.

* **Pub/Sub emulator** (the default when the emulator and Java are found):
  the simulator publishes to a topic on the emulator; mailwatch pulls its
  subscription, as in production with pull.
* **Push from the simulator** (nothing but Python): the simulator delivers to
  mailwatch's push endpoint in Pub/Sub's push format with an ID token signed
  by its own issuer; mailwatch verifies it like Google's, with the issuer and
  certificates URL pointed at the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from mailwatch_devstack.pubsub_emulator import PubSubEmulator, find_emulator

PROJECT = "mailwatch-dev"
TOPIC = f"projects/{PROJECT}/topics/gmail"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/mailwatch"
PUSH_SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/mailwatch-push"
PUSHER = f"pubsub-push@{PROJECT}.iam.gserviceaccount.com"
PUSH_AUDIENCE = "mailwatch-dev/pubsub/push"


def _create_pubsub_resources() -> None:
    """What `mailwatch pubsub ensure` does for a real deployment (the emulator has no IAM)."""
    from google.cloud import pubsub_v1

    from mailwatch.pubsub_setup import ensure

    with pubsub_v1.PublisherClient() as publisher, pubsub_v1.SubscriberClient() as subscriber:
        ensure(TOPIC, SUBSCRIPTION, publisher=publisher, subscriber=subscriber)


class EmulatorPath:
    name = "Pub/Sub emulator (pull)"

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self.emulator_host: str | None = None

    async def start(self) -> None:
        emulator = PubSubEmulator().start()
        self._stack.callback(emulator.stop)
        self.emulator_host = emulator.host
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host  # google-cloud-pubsub clients read it
        await asyncio.to_thread(_create_pubsub_resources)

    def settings(self, sim_url: str) -> dict:
        return {"pubsub_topic": TOPIC, "pubsub_subscriptions": (SUBSCRIPTION,)}

    async def connect(self, control, http_port: int | None) -> None:
        pass


class PushPath:
    name = "push from the Gmail simulator (OIDC-verified)"
    emulator_host = None

    async def start(self) -> None:
        pass

    def settings(self, sim_url: str) -> dict:
        return {
            "pubsub_topic": TOPIC, "pubsub_subscriptions": (), "http_listen": "127.0.0.1:0",
            "push_enabled": True, "push_audience": PUSH_AUDIENCE, "push_service_account_email": PUSHER,
            "push_certs_url": f"{sim_url}/oauth2/v1/certs", "push_issuers": (sim_url,),
        }

    async def connect(self, control, http_port: int | None) -> None:
        """Point the simulator's push subscription at the endpoint mailwatch listens on."""
        await asyncio.to_thread(
            control.create_push_subscription, PUSH_SUBSCRIPTION, TOPIC,
            f"http://127.0.0.1:{http_port}/pubsub/push", service_account_email=PUSHER, audience=PUSH_AUDIENCE,
        )


def choose(stack: contextlib.ExitStack) -> EmulatorPath | PushPath:
    return EmulatorPath(stack) if find_emulator() else PushPath()
