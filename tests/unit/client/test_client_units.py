"""Client logic without a server: errors, retries, checkpoints, stream resumption."""

from __future__ import annotations

import os
import random

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from mailwatch_client import (
    AdminDisabledError,
    AsyncMailwatchClient,
    CursorExpiredError,
    FileCheckpointStore,
    InternalError,
    InvalidArgumentError,
    InvalidCursorError,
    MailwatchClient,
    MemoryCheckpointStore,
    NotFoundError,
    RateLimitedError,
    RetryConfig,
    RPCError,
    UnavailableError,
    cursor_from_str,
    cursor_to_str,
    from_rpc_error,
)
from mailwatch_client._proto.v1 import mailbox_service_pb2, resources_pb2
from mailwatch_client._stream import AsyncChangeStream, ChangeStream, _StreamState
from tests.unit.client.fakes import FakeRpcError, Opener, ScriptedCall, error_info

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
NO_WAIT = RetryConfig(initial_backoff=0, max_backoff=0, max_attempts=0)


# --- errors -------------------------------------------------------------------


def test_errors_are_typed_by_code_and_reason_with_details():
    bad = from_rpc_error(FakeRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, "page_size: must not be negative", error_info("INVALID_ARGUMENT"),
        error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="page_size", description="must not be negative")]),
        error_details_pb2.RequestInfo(request_id="req-1"),
    ))
    assert type(bad) is InvalidArgumentError and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.reason == "INVALID_ARGUMENT" and bad.domain == "mailwatch.dev" and bad.request_id == "req-1"
    assert [(v.field, v.description) for v in bad.field_violations] == [("page_size", "must not be negative")]
    assert "page_size" in str(bad)

    expired = from_rpc_error(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "old",
                                          error_info("CURSOR_EXPIRED", earliest_cursor="AQAAAAAAAAAF")))
    assert isinstance(expired, CursorExpiredError) and expired.earliest_cursor == b"AQAAAAAAAAAF"
    assert type(from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "x", error_info("INVALID_CURSOR")))) \
        is InvalidCursorError
    assert type(from_rpc_error(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "x", error_info("ADMIN_DISABLED")))) \
        is AdminDisabledError
    limited = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", error_info("GMAIL_RATE_LIMITED"),
                                          error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))))
    assert isinstance(limited, RateLimitedError) and limited.retry_delay == 2.5
    assert type(from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone"))) is NotFoundError
    assert type(from_rpc_error(FakeRpcError(grpc.StatusCode.UNKNOWN, "?"))) is InternalError
    plain = from_rpc_error(FakeRpcError(grpc.StatusCode.ABORTED, "no details"))
    assert type(plain) is RPCError and plain.reason is None and plain.field_violations == [] and plain.retry_delay is None


# --- retry policy -------------------------------------------------------------


def test_backoff_grows_exponentially_within_bounds():
    config = RetryConfig(initial_backoff=0.1, max_backoff=1.0, multiplier=2, jitter=0)
    assert [config.backoff(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    jittered = RetryConfig(initial_backoff=1.0, jitter=0.2)
    rng = random.Random(1)
    assert all(0.8 <= jittered.backoff(1, rng) <= 1.2 for _ in range(100))
    assert RetryConfig(max_attempts=3).allows(2) and not RetryConfig(max_attempts=3).allows(3)
    assert RetryConfig(max_attempts=0).allows(10**6)
    with pytest.raises(ValueError):
        RetryConfig(multiplier=0.5)


class FlakyMethod:
    def __init__(self, failures: int, code=UNAVAILABLE) -> None:
        self.failures, self.code, self.calls = failures, code, []

    def __call__(self, request, *, timeout, metadata):
        self.calls.append((timeout, metadata))
        if len(self.calls) <= self.failures:
            raise FakeRpcError(self.code, "try again")
        return "done"


def test_only_idempotent_calls_are_retried_and_only_on_unavailable():
    client = MailwatchClient("127.0.0.1:1", "key", retry=NO_WAIT)
    try:
        flaky = FlakyMethod(failures=3)
        assert client._call(flaky, None, auth=client._api_auth, timeout=5, metadata=(), retry=None,
                            idempotent=True) == "done"
        assert len(flaky.calls) == 4
        assert ("authorization", "Bearer key") in flaky.calls[0][1]
        assert all(0 < timeout <= 5 for timeout, _ in flaky.calls)  # one deadline shared by all attempts

        once = FlakyMethod(failures=1)
        with pytest.raises(UnavailableError):
            client._call(once, None, auth=(), timeout=5, metadata=(), retry=None, idempotent=False)
        assert len(once.calls) == 1

        wrong_code = FlakyMethod(failures=1, code=grpc.StatusCode.INTERNAL)
        with pytest.raises(InternalError):
            client._call(wrong_code, None, auth=(), timeout=5, metadata=(), retry=None, idempotent=True)
        assert len(wrong_code.calls) == 1

        limited = FlakyMethod(failures=10)
        with pytest.raises(UnavailableError):
            client._call(limited, None, auth=(), timeout=5, metadata=(), retry=RetryConfig(max_attempts=2,
                         initial_backoff=0), idempotent=True)
        assert len(limited.calls) == 2

        overridden = FlakyMethod(failures=0)
        client._call(overridden, None, auth=client._api_auth, timeout=None,
                     metadata=[("authorization", "Bearer other")], retry=None, idempotent=True)
        assert overridden.calls[0] == (None, [("authorization", "Bearer other")])
    finally:
        client.close()


async def test_async_client_retries_the_same_way():
    client = AsyncMailwatchClient("127.0.0.1:1", "key", retry=NO_WAIT)

    async def method(request, *, timeout, metadata):
        return flaky(request, timeout=timeout, metadata=metadata)

    flaky = FlakyMethod(failures=2)
    try:
        assert await client._call(method, None, auth=(), timeout=5, metadata=(), retry=None, idempotent=True) == "done"
        assert len(flaky.calls) == 3
    finally:
        await client.close()


# --- checkpoints --------------------------------------------------------------


def test_cursor_text_round_trip():
    for cursor in (b"AQAAAAAAAAAB", b"\x00\xff binary", b"x"):
        assert cursor_from_str(cursor_to_str(cursor)) == cursor
    with pytest.raises(ValueError):
        cursor_from_str("")


def test_file_checkpoint_store_round_trip_and_atomic_replace(tmp_path):
    store = FileCheckpointStore(tmp_path / "deep" / "cursor")
    assert store.load() is None
    store.save(b"first")
    store.save(b"second")
    assert FileCheckpointStore(store.path).load() == b"second"
    assert os.listdir(store.path.parent) == ["cursor"]  # no temporary file left behind

    class Boom(Exception):
        pass

    def failing_replace(src, dst):
        raise Boom

    original = os.replace
    os.replace = failing_replace
    try:
        with pytest.raises(Boom):
            store.save(b"third")
    finally:
        os.replace = original
    assert store.load() == b"second" and os.listdir(store.path.parent) == ["cursor"]
    assert FileCheckpointStore(tmp_path / "nofsync", fsync=False).load() is None


# --- streams ------------------------------------------------------------------


def event(n: int) -> resources_pb2.ChangeEvent:
    return resources_pb2.ChangeEvent(id=f"e{n}", cursor=f"c{n}".encode(), type=resources_pb2.EVENT_TYPE_MESSAGE_ADDED)


def batch(*numbers: int) -> mailbox_service_pb2.StreamChangesResponse:
    return mailbox_service_pb2.StreamChangesResponse(events=[event(n) for n in numbers])


def heartbeat(cursor: bytes) -> mailbox_service_pb2.StreamChangesResponse:
    return mailbox_service_pb2.StreamChangesResponse(heartbeat=mailbox_service_pb2.Heartbeat(cursor=cursor))


def state(**overrides) -> _StreamState:
    values = dict(mailbox_ids=(), event_types=(), start="earliest", checkpoint=None, max_batch_size=0,
                  heartbeat_interval=None, retry=NO_WAIT, idle_timeout=None)
    values.update(overrides)
    return _StreamState(**values)


def test_stream_resumes_after_its_position_and_never_repeats_an_event():
    store = MemoryCheckpointStore()
    opener = Opener(
        ScriptedCall([batch(1, 2)], FakeRpcError(UNAVAILABLE, "restart")),
        # A misbehaving server resends e2: skipped.
        ScriptedCall([batch(2, 3), heartbeat(b"c5")], FakeRpcError(UNAVAILABLE, "again")),
        ScriptedCall([batch(6)], FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no")),
    )
    stream = ChangeStream(opener, state(checkpoint=store))
    seen = []
    with pytest.raises(RPCError) as caught:
        for item in stream:
            seen.append(item.id)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED  # not transient: ends the iteration
    assert seen == ["e1", "e2", "e3", "e6"]
    assert opener.requests[0].start_position == mailbox_service_pb2.START_POSITION_EARLIEST
    assert [r.cursor for r in opener.requests[1:]] == [b"c2", b"c5"]  # heartbeats move the position
    assert stream.reconnects == 2 and stream.cursor == b"c6" and store.load() == b"c6"


def test_stream_position_is_what_the_consumer_moved_past():
    store = MemoryCheckpointStore(b"c0")
    opener = Opener(ScriptedCall([batch(1, 2, 3)]))
    stream = ChangeStream(opener, state(checkpoint=store, start="now"))
    assert next(stream).id == "e1"
    assert stream.cursor == b"c0"  # still handling e1
    assert next(stream).id == "e2" and stream.cursor == b"c1"
    stream.close()  # breaking out while holding e2: it comes again next run
    assert store.load() == b"c1"
    assert opener.requests[0].cursor == b"c0"  # the checkpoint beats `start`
    with pytest.raises(StopIteration):
        next(stream)


def test_cursor_expired_is_raised_not_retried():
    opener = Opener(ScriptedCall([], FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "expired",
                                                   error_info("CURSOR_EXPIRED", earliest_cursor="AQ"))))
    with pytest.raises(CursorExpiredError) as caught:
        next(ChangeStream(opener, state(start=b"old")))
    assert caught.value.earliest_cursor == b"AQ" and not opener.calls


def test_stream_gives_up_after_its_retry_budget():
    opener = Opener(*[ScriptedCall([], FakeRpcError(UNAVAILABLE, "down")) for _ in range(3)])
    with pytest.raises(UnavailableError):
        next(ChangeStream(opener, state(retry=RetryConfig(initial_backoff=0, max_attempts=3))))
    assert not opener.calls


def test_stream_arguments_are_checked_up_front():
    with pytest.raises(ValueError):
        state(event_types=["NOT_A_TYPE"])
    with pytest.raises(ValueError):
        state(start="yesterday")
    request = state(event_types=["message_added", "EVENT_TYPE_LABELS_ADDED"], heartbeat_interval=1.5).request()
    assert list(request.event_types) == [resources_pb2.EVENT_TYPE_MESSAGE_ADDED, resources_pb2.EVENT_TYPE_LABELS_ADDED]
    assert request.heartbeat_interval.seconds == 1 and request.heartbeat_interval.nanos == 500_000_000


async def test_async_stream_resumes_the_same_way():
    store = MemoryCheckpointStore()
    opener = Opener(
        ScriptedCall([batch(1)], FakeRpcError(UNAVAILABLE, "restart")),
        ScriptedCall([batch(1, 2), heartbeat(b"c4")]),  # ends cleanly: reopened
        ScriptedCall([batch(5)], FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "revoked")),
    )
    stream = AsyncChangeStream(opener, state(checkpoint=store))
    seen = []
    with pytest.raises(RPCError):
        async for item in stream:
            seen.append(item.id)
    assert seen == ["e1", "e2", "e5"]
    assert [r.cursor for r in opener.requests[1:]] == [b"c1", b"c4"]
    await stream.aclose()
    assert store.load() == b"c5"


def test_silent_stream_is_reopened_after_idle_timeout():
    from tests.unit.client.fakes import SilentCall

    silent = SilentCall()
    opener = Opener(silent, ScriptedCall([batch(1)]), ScriptedCall([], FakeRpcError(grpc.StatusCode.NOT_FOUND, "x")))
    stream = ChangeStream(opener, state(idle_timeout=0.3))
    assert next(stream).id == "e1"
    assert silent.cancelled and stream.reconnects == 1
    with pytest.raises(NotFoundError):
        next(stream)


async def test_silent_async_stream_is_reopened_after_idle_timeout():
    from tests.unit.client.fakes import SilentCall

    silent = SilentCall()
    opener = Opener(silent, ScriptedCall([batch(1)]))
    stream = AsyncChangeStream(opener, state(idle_timeout=0.2))
    assert (await anext(stream)).id == "e1"
    assert silent.cancelled and stream.reconnects == 1
    await stream.aclose()


def test_a_retry_waits_at_least_the_servers_retry_info_and_resource_exhausted_only_with_it():
    from mailwatch_client._common import Attempts

    def limited(seconds: float | None):
        details = [error_info("RPC_RATE_LIMITED")]
        if seconds is not None:
            details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(seconds * 1e9))))
        return FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", *details)

    policy = RetryConfig(initial_backoff=0.001, max_backoff=0.001, jitter=0, max_attempts=3)
    attempts = Attempts(policy, timeout=None)
    attempts.next_timeout()
    assert attempts.delay_after(limited(0.75)) == pytest.approx(0.75)
    attempts.next_timeout()
    assert attempts.delay_after(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")) == pytest.approx(0.001)
    with pytest.raises(RateLimitedError):  # no RetryInfo: the server did not say when; not retried
        Attempts(policy, timeout=None).delay_after(limited(None))
    short = Attempts(policy, timeout=0.5)
    short.next_timeout()
    with pytest.raises(RateLimitedError):  # the wait would pass the call's deadline
        short.delay_after(limited(0.75))


def test_a_stream_refused_for_the_tenants_stream_limit_reopens_after_the_servers_delay():
    stream = state(retry=RetryConfig(initial_backoff=0.01, max_backoff=0.01, jitter=0, max_attempts=0))
    refused = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams", error_info("TENANT_STREAM_LIMIT"),
                           error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=5)))
    error = stream.interrupted(refused, idle=False)
    assert error.reason == "TENANT_STREAM_LIMIT"
    assert stream.retry_delay(1, error) == pytest.approx(5.0)
    with pytest.raises(RateLimitedError):  # without RetryInfo it is not a wait-and-see
        stream.interrupted(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "?", error_info("X")), idle=False)


def test_backoff_stays_at_its_maximum_however_many_failures_in_a_row():
    # A stream retrying forever counts its failures; 2.0 ** 1024 overflows a float.
    config = RetryConfig(initial_backoff=0.01, max_backoff=10.0, jitter=0, max_attempts=0)
    assert config.backoff(5_000) == 10.0
