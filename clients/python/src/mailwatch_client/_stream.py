"""Resuming change streams: `ChangeStream` (sync) and `AsyncChangeStream` (asyncio).

Both wrap StreamChanges calls in one iterator of `ChangeEvent`s that outlives
any single call:

- The position (`cursor`) is the cursor of the last event the consumer moved
  past (asked for the next item after), or of the last heartbeat; a stream
  that has seen nothing yet starts where asked ("now", "earliest", a cursor,
  or what the checkpoint store holds).
- When the call fails with a transient error (UNAVAILABLE: server restart,
  network trouble; RESOURCE_EXHAUSTED with RetryInfo: the tenant's stream
  limit; or the stream went silent for `idle_timeout` although the
  server heartbeats), the iterator waits (`RetryConfig` backoff, at least the
  server's RetryInfo delay) and reopens
  the call strictly after its position. Reconnecting only ever happens while
  the consumer waits for the next event, so every event handed out is behind
  the position: none is handed out twice, none is skipped. (A small window of
  recent event ids guards against a server resending one anyway.)
- Any other error ends the iteration as a typed exception; a cursor older
  than the retained log raises `CursorExpiredError`.
- With a `CheckpointStore`, the position is loaded at the start and saved
  whenever the iterator is about to wait for the network (after the consumer
  moved past the last event of a batch, and on heartbeats) and on `close()`.
  After a crash the consumer therefore sees at most the events of one batch
  again; handle events idempotently (each has a unique `id`).

A stream started at "now" that is cut off before its first event or heartbeat
has no position yet and restarts at "now": events committed during the outage
are then not delivered. Pass a short `heartbeat_interval` (or start from a
cursor) where that matters.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import grpc

from mailwatch_client._checkpoint import CheckpointStore
from mailwatch_client._common import Start, server_retry_delay, stream_request
from mailwatch_client._config import RetryConfig
from mailwatch_client._errors import RPCError, from_rpc_error
from mailwatch_client._proto.v1 import resources_pb2

log = logging.getLogger("mailwatch_client")

_RECENT_IDS = 4096


class _StreamState:
    """Position, checkpointing and duplicate guard shared by both flavours."""

    def __init__(
        self,
        *,
        mailbox_ids: Sequence[str],
        event_types: Sequence[int | str],
        start: Start,
        checkpoint: CheckpointStore | None,
        max_batch_size: int,
        heartbeat_interval: float | None,
        retry: RetryConfig,
        idle_timeout: float | None,
        partition: tuple[int, int] | None = None,
    ) -> None:
        self.mailbox_ids = list(mailbox_ids)
        self.partition = partition
        self.event_types = list(event_types)
        self.start = start
        self.checkpoint = checkpoint
        self.max_batch_size = max_batch_size
        self.heartbeat_interval = heartbeat_interval
        self.retry = retry
        self.idle_timeout = idle_timeout
        self.cursor: bytes | None = None
        self.saved: bytes | None = None
        self.reconnects = 0
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Validate arguments now, not at the first next().
        self.request()

    def restore(self, cursor: bytes | None) -> None:
        self.cursor = self.saved = cursor or None

    def request(self):
        return stream_request(
            mailbox_ids=self.mailbox_ids,
            types=self.event_types,
            position=self.cursor,
            start=self.start,
            max_batch_size=self.max_batch_size,
            heartbeat_interval=self.heartbeat_interval,
            partition=self.partition,
        )

    def is_new(self, event: resources_pb2.ChangeEvent) -> bool:
        if not event.id:
            return True
        if event.id in self._recent:
            log.warning("skipping event %s delivered twice", event.id)
            return False
        self._recent[event.id] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        return True

    def take(self, response) -> Iterator[resources_pb2.ChangeEvent]:
        """The response's events not handed out before. The position moves past each
        event once the consumer asks for the next, and then to the heartbeat's cursor."""
        for event in response.events:
            if self.is_new(event):
                yield event
            self.cursor = event.cursor
        if response.HasField("heartbeat") and response.heartbeat.cursor:
            self.cursor = response.heartbeat.cursor

    def pending_save(self) -> bytes | None:
        """The cursor to save, if it changed since the last save."""
        if self.checkpoint is None or not self.cursor or self.cursor == self.saved:
            return None
        return self.cursor

    def interrupted(self, exc: grpc.RpcError, *, idle: bool) -> RPCError:
        """The typed error of a call that failed; raised unless the stream resumes after it
        (UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo such as the tenant's stream limit,
        or a silent call we cancelled ourselves)."""
        error = from_rpc_error(exc)
        if server_retry_delay(exc, error) is None and not (idle and exc.code() == grpc.StatusCode.CANCELLED):
            raise error from None
        log.warning("change stream interrupted (%s); resuming", error)
        return error

    def retry_delay(self, failures: int, error: RPCError | None) -> float | None:
        """How long to wait before reopening after `failures` calls in a row ended without a
        response; None to stop (or `error` raised) once the retry policy allows no more."""
        if self.retry.allows(failures):
            # At least what the server asked for (RetryInfo), so a refused stream does not come back at once.
            return max(self.retry.backoff(failures), (error.retry_delay if error is not None else None) or 0.0)
        if error is not None:
            raise error
        return None


class _Positioned:
    """What both flavours tell about their position."""

    _state: _StreamState

    @property
    def cursor(self) -> bytes | None:
        """The position: resume after it to continue where this iterator is."""
        return self._state.cursor

    @property
    def reconnects(self) -> int:
        """How many times the iterator reopened the call."""
        return self._state.reconnects


class ChangeStream(_Positioned, Iterator[resources_pb2.ChangeEvent]):
    """A resuming iterator of change events (see the module docstring).

    Use it in a `with` block (or call `close()`), which cancels the open call
    and saves the final position:

        with client.stream_changes(start="earliest", checkpoint=FileCheckpointStore("pos")) as stream:
            for event in stream:
                handle(event)

    `close()` may be called from another thread (or a signal handler) to stop
    an iteration that is waiting for events.
    """

    def __init__(self, open_call: Callable[[Any], Any], state: _StreamState) -> None:
        self._open_call = open_call
        self._state = state
        self._lock = threading.Lock()
        self._call = None
        self._closed = False
        self._idle_cancelled = False
        self._waiting_since: float | None = None
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()
        if state.checkpoint is not None:
            state.restore(state.checkpoint.load())
        self._events = self._run()

    def __iter__(self) -> "ChangeStream":
        return self

    def __next__(self) -> resources_pb2.ChangeEvent:
        if self._closed:
            raise StopIteration
        return next(self._events)

    def __enter__(self) -> "ChangeStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop: cancel the open call, save the position (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            call = self._call
        if call is not None:
            call.cancel()
        try:
            self._events.close()
        except ValueError:
            pass  # iterating in another thread: the cancelled call ends it there
        self._watchdog_stop.set()
        self._save()

    def _save(self) -> None:
        with self._lock:
            cursor = self._state.pending_save()
            if cursor is not None:
                self._state.checkpoint.save(cursor)
                self._state.saved = cursor

    def _run(self) -> Iterator[resources_pb2.ChangeEvent]:
        state = self._state
        failures = 0
        try:
            while not self._closed:
                call = self._open_call(state.request())
                with self._lock:
                    if self._closed:
                        call.cancel()
                        return
                    self._call = call
                    self._idle_cancelled = False
                self._start_watchdog()
                try:
                    while True:
                        self._waiting_since = time.monotonic()
                        try:
                            response = next(call)
                        except StopIteration:
                            break
                        finally:
                            self._waiting_since = None
                        failures = 0
                        yield from state.take(response)
                        self._save()
                    error: RPCError | None = None
                    log.info("change stream ended by the server; reopening")
                except grpc.RpcError as exc:
                    if self._closed:
                        return
                    error = state.interrupted(exc, idle=self._idle_cancelled)
                finally:
                    call.cancel()
                    with self._lock:
                        self._call = None
                failures += 1
                delay = state.retry_delay(failures, error)
                if delay is None:
                    return
                self._sleep(delay)
                state.reconnects += 1
        finally:
            self._watchdog_stop.set()

    def _sleep(self, seconds: float) -> None:
        # The event is set by close(), so a close from another thread cuts the wait short.
        self._watchdog_stop.wait(seconds)

    def _start_watchdog(self) -> None:
        idle = self._state.idle_timeout
        if idle is None or self._watchdog is not None:
            return

        def watch() -> None:
            check = min(1.0, idle / 4)
            while not self._watchdog_stop.wait(check):
                since = self._waiting_since
                if since is not None and time.monotonic() - since > idle:
                    with self._lock:
                        call = self._call
                        self._idle_cancelled = call is not None
                    if call is not None:
                        log.warning("change stream silent for %.0f s; reconnecting", idle)
                        call.cancel()

        self._watchdog = threading.Thread(target=watch, name="mailwatch-stream-watchdog", daemon=True)
        self._watchdog.start()


class AsyncChangeStream(_Positioned, AsyncIterator[resources_pb2.ChangeEvent]):
    """The asyncio flavour of `ChangeStream`:

        async with client.stream_changes(start="earliest") as stream:
            async for event in stream:
                ...
    """

    def __init__(self, open_call: Callable[[Any], Any], state: _StreamState) -> None:
        self._open_call = open_call
        self._state = state
        self._call = None
        self._closed = False
        self._restored = False
        self._events = self._run()

    def __aiter__(self) -> "AsyncChangeStream":
        return self

    async def __anext__(self) -> resources_pb2.ChangeEvent:
        if self._closed:
            raise StopAsyncIteration
        return await self._events.__anext__()

    async def __aenter__(self) -> "AsyncChangeStream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: cancel the open call, save the position (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        try:
            await self._events.aclose()
        except RuntimeError:
            pass  # being iterated by another task: the cancelled call ends it there
        await self._save()

    async def _save(self) -> None:
        cursor = self._state.pending_save()
        if cursor is not None:
            self._state.saved = cursor
            await asyncio.to_thread(self._state.checkpoint.save, cursor)

    async def _run(self) -> AsyncIterator[resources_pb2.ChangeEvent]:
        state = self._state
        if state.checkpoint is not None and not self._restored:
            self._restored = True
            state.restore(await asyncio.to_thread(state.checkpoint.load))
        failures = 0
        while not self._closed:
            call = self._open_call(state.request())
            self._call = call
            idle = False
            try:
                while True:
                    try:
                        async with asyncio.timeout(state.idle_timeout):
                            response = await call.read()
                    except TimeoutError:
                        idle = True
                        log.warning("change stream silent for %.0f s; reconnecting", state.idle_timeout)
                        call.cancel()
                        raise _Idle() from None
                    if response is grpc.aio.EOF:
                        break
                    failures = 0
                    for event in state.take(response):
                        yield event
                    await self._save()
                error: RPCError | None = None
                log.info("change stream ended by the server; reopening")
            except _Idle:
                error = None
            except asyncio.CancelledError:
                # grpc.aio raises CancelledError from a read of a locally
                # cancelled call: aclose() from another task ends the iteration.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    return
                raise
            except grpc.RpcError as exc:
                if self._closed:
                    return
                error = state.interrupted(exc, idle=idle)
            finally:
                call.cancel()
                self._call = None
            failures += 1
            delay = state.retry_delay(failures, error)
            if delay is None:
                return
            await asyncio.sleep(delay)
            state.reconnects += 1


class _Idle(Exception):
    pass
