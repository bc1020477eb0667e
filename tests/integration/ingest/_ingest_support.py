"""Helpers for the ingest integration tests (plain module; fixtures are in conftest.py)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select

from mailwatch.domain.models import CredentialKind, MailboxState
from mailwatch.store.models import mailboxes, malformed_notifications, tenants
from tests.fixtures.factory import fake_sealed_credential

ACK_DEADLINE_SECONDS = 10  # Pub/Sub's minimum


@dataclass
class Db:
    sessions: object

    async def tenant(self, name: str | None = None) -> uuid.UUID:
        async with self.sessions() as session, session.begin():
            return (
                await session.execute(
                    insert(tenants).values(name=name or f"t-{uuid.uuid4().hex[:8]}").returning(tenants.c.id)
                )
            ).scalar_one()

    async def mailbox(
        self,
        tenant_id: uuid.UUID,
        email: str,
        *,
        state: MailboxState = MailboxState.ACTIVE,
        history_id: int | None = 100,
        notified_history_id: int | None = None,
    ) -> uuid.UUID:
        async with self.sessions() as session, session.begin():
            return (
                await session.execute(
                    insert(mailboxes)
                    .values(
                        tenant_id=tenant_id,
                        email_address=email.lower(),
                        gmail_address=email.lower(),
                        state=state.value,
                        credential_kind=CredentialKind.OAUTH.value,
                        sealed_credential_id=await fake_sealed_credential(session, tenant_id),
                        history_id=history_id,
                        notified_history_id=notified_history_id,
                    )
                    .returning(mailboxes.c.id)
                )
            ).scalar_one()

    async def row(self, mailbox_id: uuid.UUID):
        async with self.sessions() as session:
            return (await session.execute(select(mailboxes).where(mailboxes.c.id == mailbox_id))).one()

    async def malformed(self):
        async with self.sessions() as session:
            return (
                await session.execute(select(malformed_notifications).order_by(malformed_notifications.c.received_at))
            ).all()


class PubSub:
    """Topic + subscription on the emulator, and a way to publish to it."""

    def __init__(self, names: dict) -> None:
        from google.cloud import pubsub_v1

        self.topic = names["topic"]
        self.subscription = names["subscription"]
        self._publisher = pubsub_v1.PublisherClient()
        self._subscriber = pubsub_v1.SubscriberClient()
        self._publisher.api.create_topic(request={"name": self.topic})
        self._subscriber.create_subscription(
            request={"name": self.subscription, "topic": self.topic, "ack_deadline_seconds": ACK_DEADLINE_SECONDS}
        )

    def publish(self, payloads: list[bytes | dict]) -> None:
        datas = [json.dumps(p).encode() if isinstance(p, dict) else p for p in payloads]
        for start in range(0, len(datas), 1000):
            self._publisher.api.publish(
                request={"topic": self.topic, "messages": [{"data": d} for d in datas[start:start + 1000]]}
            )

    def pull_all(self, timeout: float = 3.0) -> list:
        """Whatever is deliverable now (leased to the caller, not acked)."""
        from google.api_core import exceptions

        received = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                response = self._subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 1000}, timeout=1.0
                )
            except exceptions.DeadlineExceeded:
                response = None
            if response is not None and response.received_messages:
                received.extend(response.received_messages)
                deadline = time.monotonic() + 0.5  # keep draining while messages come
        return received

    def close(self) -> None:
        self._subscriber.close()
        self._publisher.api.transport.close()


def notification(email: str, history_id: int | str) -> dict:
    return {"emailAddress": email, "historyId": str(history_id) if isinstance(history_id, int) else history_id}
