"""Helpers for pipeline tests: consume a stream until a condition holds, poll a condition."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime, timedelta, timezone

from google.cloud import pubsub_v1

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.factory import register_sa_mailbox  # noqa: F401 - the pipeline tests import it from here

ET = resources_pb2.EventType
DAY = 24 * 3600


def advance(service, clock, seconds: float) -> None:
    """Move the simulator's clock and the service's `OffsetClock` together."""
    service.sim.advance_clock(seconds)
    clock.advance(timedelta(seconds=seconds))


async def get_mailbox(service, auth, mailbox_id):
    return await service.mailboxes.GetMailbox(
        mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id), metadata=auth
    )


def timestamp(value) -> datetime:
    return value.ToDatetime(tzinfo=timezone.utc)


async def collect(service, auth, until, *, timeout: float = 30.0, **request_fields) -> list:
    """Events from StreamChanges (START_EARLIEST unless a cursor is given) until `until(events)`."""
    if "cursor" not in request_fields:
        request_fields.setdefault("start_position", mailbox_service_pb2.START_POSITION_EARLIEST)
    request = mailbox_service_pb2.StreamChangesRequest(**request_fields)
    events: list = []
    call = service.mailboxes.StreamChanges(request, metadata=auth)

    async def consume():
        async for response in call:
            events.extend(response.events)
            if until(events):
                return

    try:
        await asyncio.wait_for(consume(), timeout)
    except TimeoutError:
        raise AssertionError(f"stream condition not met in {timeout}s; got {[ET.Name(e.type) for e in events]}")
    finally:
        call.cancel()
    return events


def message_events(events) -> list[tuple[str, str, tuple[str, ...]]]:
    kinds = {ET.EVENT_TYPE_MESSAGE_ADDED, ET.EVENT_TYPE_MESSAGE_DELETED, ET.EVENT_TYPE_LABELS_ADDED,
             ET.EVENT_TYPE_LABELS_REMOVED}
    return [(ET.Name(e.type), e.message_id, tuple(e.label_ids)) for e in events if e.type in kinds]


def types(events) -> list[str]:
    return [ET.Name(e.type).removeprefix("EVENT_TYPE_") for e in events]


async def eventually(check, *, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = await check() if asyncio.iscoroutinefunction(check) else check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def claims_one(worker, *, timeout: float = 20.0) -> None:
    """Run a worker's claim until it takes the due mailbox. A claim skips rows another
    transaction holds at that moment (FOR UPDATE SKIP LOCKED), e.g. ingest recording a
    notification, so one round may find nothing under load."""

    async def claimed() -> bool:
        return await worker.run_once() >= 1

    await eventually(claimed, timeout=timeout)


def publish_raw(topic: str, payloads: list[bytes]) -> None:
    with pubsub_v1.PublisherClient() as publisher:  # type: ignore[attr-defined]
        futures = [publisher.publish(topic, data) for data in payloads]
        for future in futures:
            future.result(timeout=30)


def gmail_notification(email: str, history_id: int) -> bytes:
    """Exactly what Gmail publishes (data is the JSON; Pub/Sub base64-encodes on the wire)."""
    return json.dumps({"emailAddress": email, "historyId": history_id}).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
