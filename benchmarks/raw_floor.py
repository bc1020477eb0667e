"""The floor under mailwatch's CPU per change: the round trips one change costs the service,
made by a bare process with the libraries the service uses and nothing else.

`benchmarks/pipeline.py` runs this file as a child process (the same interpreter, on the
service's event loop) after its latency phase and paces the same number of changes through
it, at the same rate, on the same simulator, emulator and Postgres. Per change this process
makes exactly what one change costs mailwatch, and no more:

- Pub/Sub: grpc.aio Pull of the notifications (4 pullers, batches as they come) and one
  Acknowledge per batch, on a subscription of its own on the Gmail topic;
- Postgres (psycopg, async, autocommit, binary results), in the scratch schema `rawfloor`
  (the service's tables are not touched): one INSERT of the batch's notifications, one
  UPDATE … RETURNING claiming the mailbox row, one statement that inserts the change,
  updates the mailbox and NOTIFYs, and one SELECT of the new rows once LISTEN wakes the reader;
- Gmail: one `users.history.list` through google-api-python-client + google_auth_httplib2 +
  httplib2 on a thread pool, the library's own transport (tokens fetched before the clock
  starts). mailwatch itself no longer pays this: it exchanges its single Gmail calls on the
  event loop (`mailwatch.gmail.transport`, httptools), which costs less CPU per call than this
  part (docs/performance.md), so "mailwatch adds" understates what its own code adds;
  and, when the history leaves a message's labelIds out (the simulator's `history_label_ids`
  off), one `users.messages.get(format=minimal)` for them, as the service then makes;
- gRPC: one server-stream write of the new rows to the one consumer (a grpc.aio server here,
  the benchmark process is the client).

Where this process's CPU goes is kept by a ledger (`Ledger`): every task step of the event
loop is charged to the part the running code is in (`part("statements")` around a statement's
await, and so on), the time between steps to the loop, and `history.list`'s pool thread to
`history.list`. What no ledger sees (gRPC's own threads, the garbage collector between steps)
is the rest of the process's CPU. The ledger itself costs a few microseconds per task step
(two thread-clock reads at about 0.8 us each, and a Python-level step around the coroutine's).

    python benchmarks/raw_floor.py --database-url postgresql://… --sim-url http://… \\
        --subscription projects/p/subscriptions/s --topic projects/p/topics/t --key-file key.json \\
        --mailboxes 150 [--event-loop uvloop]

It prints `raw floor ready on HOST:PORT` once its mailboxes are watched, and serves
`rawfloor.Floor/Changes` (the changes, as mailwatch.v1.StreamChangesResponse) and
`rawfloor.Floor/Ledger` (CPU seconds per part so far, JSON) there until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import contextlib
import contextvars
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

FLOOR_DOMAIN = "floor.test"
SCHEMA = "rawfloor"
CHANNEL = "rawfloor_changes"
WRITER_LOCK = 0x7261_7766  # the floor's one "tenant"
SERVICE = "rawfloor.Floor"
PARTS = ("pull+ack", "statements", "history.list", "stream write")
LABELS_PART = "messages.get"  # only when history leaves a message's labels out
PULLERS = 4  # the service's MAILWATCH_INGEST_CONCURRENCY default
READY = r"raw floor ready on (\S+:\d+)"


def floor_emails(count: int) -> list[str]:
    """The floor's own mailboxes: the service has never heard of them."""
    return [f"floor{i:04d}@{FLOOR_DOMAIN}" for i in range(count)]


# --- where the CPU goes ------------------------------------------------------------------------------


class Ledger:
    """CPU seconds of the event-loop thread per part, plus what pool threads add (`add`); and how
    many times each round trip was made (`count`), to compare its batching with the service's."""

    LOOP = "event loop"  # between task steps: the loop, I/O callbacks, gRPC's completion queue
    GLUE = "floor"  # task steps outside any part: this file's own code

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.counts: dict[str, int] = collections.Counter()
        self._label = self.LOOP
        self._mark = time.thread_time()
        self._lock = threading.Lock()  # for `add` from pool threads

    def switch(self, label: str) -> None:
        """Charge the loop thread's CPU since the last switch to the current label; go on as `label`."""
        now = time.thread_time()
        self.seconds[self._label] += now - self._mark
        self._mark, self._label = now, label

    def add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.seconds[label] += seconds

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def snapshot(self) -> dict:
        """{part: CPU seconds so far, "process": the whole process's, "counts": {round trip: times}}."""
        self.switch(self._label)
        with self._lock:
            found: dict = dict(self.seconds)
        times = os.times()
        found["process"] = times.user + times.system
        found["counts"] = dict(self.counts)
        return found


LEDGER = Ledger()
_PART: contextvars.ContextVar[str] = contextvars.ContextVar("part", default=Ledger.GLUE)


@contextlib.contextmanager
def part(label: str):
    """The task's code in this block (each step of it the loop runs) is charged to `label`."""
    token = _PART.set(label)
    LEDGER.switch(label)
    try:
        yield
    finally:
        _PART.reset(token)
        LEDGER.switch(_PART.get())


class _Charged(collections.abc.Coroutine):
    """A task's coroutine whose every step is charged to the part it runs in."""

    __slots__ = ("_coro",)

    def __init__(self, coro) -> None:
        self._coro = coro

    def send(self, value):
        LEDGER.switch(_PART.get())  # the task's context is current while its step runs
        try:
            return self._coro.send(value)
        finally:
            LEDGER.switch(Ledger.LOOP)

    def throw(self, *args):
        LEDGER.switch(_PART.get())
        try:
            return self._coro.throw(*args)
        finally:
            LEDGER.switch(Ledger.LOOP)

    def close(self):
        return self._coro.close()

    def __await__(self):
        return self._coro.__await__()


def _charged_task(loop, coro, **kwargs):
    return asyncio.Task(_Charged(coro), loop=loop, **kwargs)


# --- Postgres --------------------------------------------------------------------------------------------

_SCHEMA_SQL = f"""
    DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
    CREATE SCHEMA {SCHEMA};
    CREATE TABLE {SCHEMA}.notifications (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email_address text NOT NULL,
        history_id bigint NOT NULL, received_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE {SCHEMA}.mailboxes (
        id integer PRIMARY KEY, email_address text NOT NULL UNIQUE, history_id bigint NOT NULL,
        lease_owner text, lease_expires_at timestamptz);
    CREATE TABLE {SCHEMA}.changes (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, mailbox_id integer NOT NULL,
        email_address text NOT NULL, history_id bigint NOT NULL, message_id text NOT NULL,
        thread_id text, label_ids text[] NOT NULL, observed_at timestamptz NOT NULL DEFAULT now());
"""
_RECORD = (f"INSERT INTO {SCHEMA}.notifications (email_address, history_id) "
           "SELECT key, CAST(value AS bigint) FROM json_each_text(CAST(%s AS json))")
_CLAIM = (f"UPDATE {SCHEMA}.mailboxes SET lease_owner = 'floor', lease_expires_at = now() + interval '60 s' "
          "WHERE email_address = %s RETURNING id, history_id")
# As the service's page commit: the writers' lock is taken before any sequence number is drawn
# (no row reaches the INSERT before the CROSS JOIN has the lock's row) and held to the commit,
# so commits land in sequence order and a reader that has seen N never finds a later N' < N.
_COMMIT = f"""
    WITH page AS (
        UPDATE {SCHEMA}.mailboxes SET history_id = %(history_id)s, lease_owner = NULL, lease_expires_at = NULL
        WHERE id = %(id)s RETURNING id, email_address
    ), locked AS MATERIALIZED (
        SELECT pg_advisory_xact_lock({WRITER_LOCK}), pg_notify('{CHANNEL}', '') FROM page
    )
    INSERT INTO {SCHEMA}.changes (mailbox_id, email_address, history_id, message_id, thread_id, label_ids)
    SELECT page.id, page.email_address, r.history_id, r.message_id, r.thread_id, r.label_ids
    FROM page CROSS JOIN locked
    CROSS JOIN jsonb_to_recordset(CAST(%(rows)s AS jsonb)) AS r(history_id bigint, message_id text, thread_id text,
                                                                   label_ids text[])
"""
_READ = (f"SELECT sequence, mailbox_id, email_address, history_id, message_id, thread_id, label_ids, observed_at "
         f"FROM {SCHEMA}.changes WHERE sequence > %s ORDER BY sequence LIMIT 1000")


class Connections:
    """Autocommit connections for one statement each, most recently returned first, with a cursor
    kept per statement and connection: psycopg keeps a cursor's dumpers and loaders while the same
    query runs on it again (the service does the same, `store.db.fetch_all`)."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self._idle: list = []
        self._free = asyncio.Semaphore(size)
        self._cursors: dict[tuple[int, str], object] = {}

    async def open(self) -> None:
        import psycopg

        for _ in range(self.size):
            self._idle.append(await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True))

    @contextlib.asynccontextmanager
    async def connection(self):
        async with self._free:
            connection = self._idle.pop()
            try:
                yield connection
            finally:
                self._idle.append(connection)

    async def execute(self, sql: str, params) -> list[tuple]:
        """`sql`'s rows (binary results), or [] for a statement that returns none."""
        async with self.connection() as connection:
            cursor = self._cursors.get((id(connection), sql))
            if cursor is None:
                cursor = self._cursors[(id(connection), sql)] = connection.cursor(binary=True)
            await cursor.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

    async def close(self) -> None:
        for connection in self._idle:
            await connection.close()


# --- Gmail ---------------------------------------------------------------------------------------------------


class Gmail:
    """history.list (and, before the clock, users.watch) as mailwatch makes them: the discovery
    client built once per pool thread on that thread's httplib2.Http, each call executed with an
    AuthorizedHttp around it and the mailbox's own (cached) credentials."""

    SCOPES = ["https://www.googleapis.com/auth/gmail.readonly"]

    def __init__(self, sim_url: str, key: dict, emails: list[str]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from google.oauth2 import service_account

        self.sim_url = sim_url
        signer = service_account.Credentials.from_service_account_info(
            {**key, "token_uri": f"{sim_url}/token"}, scopes=self.SCOPES)
        self.credentials = {email: signer.with_subject(email) for email in emails}
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="gmail")
        self._local = threading.local()

    def _users(self):
        users = getattr(self._local, "users", None)
        if users is None:
            import httplib2
            from googleapiclient.discovery import build

            self._local.http = httplib2.Http(timeout=30)
            users = self._local.users = build("gmail", "v1", static_discovery=True, http=self._local.http,
                                              client_options={"api_endpoint": self.sim_url}).users()
            self._local.history = users.history()
            self._local.messages = users.messages()
        return users

    def _execute(self, email: str, request) -> dict:
        import google_auth_httplib2

        return request.execute(http=google_auth_httplib2.AuthorizedHttp(self.credentials[email], http=self._local.http),
                               num_retries=0)

    def watch(self, email: str, topic: str) -> int:
        return int(self._execute(email, self._users().watch(userId="me", body={"topicName": topic}))["historyId"])

    def history_list(self, email: str, start_history_id: int) -> dict:
        return self._charged("history.list", email, lambda: self._local.history.list(
            userId="me", startHistoryId=str(start_history_id), maxResults=500))

    def labels(self, email: str, message_id: str) -> list[str]:
        return self._charged(LABELS_PART, email, lambda: self._local.messages.get(
            userId="me", id=message_id, format="minimal")).get("labelIds", [])

    def _charged(self, label: str, email: str, make_request) -> dict:
        """The call on this pool thread, its CPU charged to `label`."""
        started = time.thread_time()
        try:
            self._users()
            return self._execute(email, make_request())
        finally:
            LEDGER.add(label, time.thread_time() - started)


def _added(page: dict) -> list[dict]:
    """The page's messagesAdded as change rows."""
    rows = []
    for record in page.get("history", ()):
        for added in record.get("messagesAdded", ()):
            message = added.get("message", {})
            rows.append({"history_id": int(record["id"]), "message_id": message["id"],
                         "thread_id": message.get("threadId"), "label_ids": message.get("labelIds")})
    return rows


# --- the pipeline ----------------------------------------------------------------------------------------------


class Floor:
    def __init__(self, args, key: dict) -> None:
        self.args = args
        self.emails = floor_emails(args.mailboxes)
        self.gmail = Gmail(args.sim_url, key, self.emails)
        self.connections = Connections(args.database_url, size=10)
        self.locks = {email: asyncio.Lock() for email in self.emails}  # one sync per mailbox at a time
        self.syncs: set[asyncio.Task] = set()
        self.woken = asyncio.Event()
        self.channel = None
        self.listener = None
        self.stopping = asyncio.Event()

    # setup, before the clock

    async def prepare(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.args.database_url, autocommit=True) as connection:
            await connection.execute(_SCHEMA_SQL)
            loop = asyncio.get_running_loop()
            slots = asyncio.Semaphore(8)

            async def watch(email: str) -> int:
                async with slots:  # also fetches the mailbox's token
                    return await loop.run_in_executor(self.gmail.executor, self.gmail.watch, email, self.args.topic)

            history_ids = await asyncio.gather(*(watch(email) for email in self.emails))
            async with connection.cursor() as cursor:
                await cursor.executemany(f"INSERT INTO {SCHEMA}.mailboxes (id, email_address, history_id) "
                                         "VALUES (%s, %s, %s)",
                                         [(n, email, h) for n, (email, h) in enumerate(zip(self.emails, history_ids))])
        await self.connections.open()
        self.listener = await psycopg.AsyncConnection.connect(self.args.database_url, autocommit=True)
        await self.listener.execute(f"LISTEN {CHANNEL}")
        asyncio.get_running_loop().add_reader(self.listener.pgconn.socket, self._readable)

    def _readable(self) -> None:
        """LISTEN's socket is readable: libpq reads it; any notification wakes the reader."""
        pgconn = self.listener.pgconn
        pgconn.consume_input()
        while pgconn.notifies() is not None:
            self.woken.set()

    # Pub/Sub

    async def pull(self) -> None:
        import grpc
        from google.protobuf import empty_pb2
        from google.pubsub_v1.types import pubsub

        pull_request, ack_request = pubsub.PullRequest.pb(), pubsub.AcknowledgeRequest.pb()
        self.channel = grpc.aio.insecure_channel(os.environ["PUBSUB_EMULATOR_HOST"])
        pull_rpc = self.channel.unary_unary("/google.pubsub.v1.Subscriber/Pull",
                                            request_serializer=pull_request.SerializeToString,
                                            response_deserializer=pubsub.PullResponse.pb().FromString)
        ack_rpc = self.channel.unary_unary("/google.pubsub.v1.Subscriber/Acknowledge",
                                           request_serializer=ack_request.SerializeToString,
                                           response_deserializer=empty_pb2.Empty.FromString)
        subscription = self.args.subscription

        async def puller() -> None:
            while not self.stopping.is_set():
                with part("pull+ack"):
                    try:
                        response = await pull_rpc(pull_request(subscription=subscription, max_messages=1000),
                                                  timeout=2)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                            raise
                        continue
                    if not response.received_messages:
                        await asyncio.sleep(0.2)  # as the service's ingest idles
                        continue
                    latest: dict[str, int] = {}
                    for item in response.received_messages:
                        notification = json.loads(item.message.data)
                        email = notification["emailAddress"]
                        latest[email] = max(int(notification["historyId"]), latest.get(email, 0))
                    ack_ids = [item.ack_id for item in response.received_messages]
                    LEDGER.count("batches")
                    LEDGER.count("notifications", len(ack_ids))
                with part("statements"):
                    await self.connections.execute(_RECORD, (json.dumps(latest),))
                for email in latest:
                    if email in self.locks:
                        task = asyncio.create_task(self.sync(email))
                        self.syncs.add(task)
                        task.add_done_callback(self.syncs.discard)
                with part("pull+ack"):
                    await ack_rpc(ack_request(subscription=subscription, ack_ids=ack_ids), timeout=30)

        await asyncio.gather(*(puller() for _ in range(PULLERS)))

    # the sync

    async def sync(self, email: str) -> None:
        async with self.locks[email]:
            with part("statements"):
                ((mailbox_id, history_id),) = await self.connections.execute(_CLAIM, (email,))
            loop = asyncio.get_running_loop()
            with part("history.list"):
                page = await loop.run_in_executor(self.gmail.executor, self.gmail.history_list, email, history_id)
            rows = _added(page)
            for row in rows:
                if row["label_ids"] is None:
                    with part(LABELS_PART):
                        row["label_ids"] = await loop.run_in_executor(
                            self.gmail.executor, self.gmail.labels, email, row["message_id"])
            with part("statements"):
                await self.connections.execute(_COMMIT, {
                    "id": mailbox_id, "history_id": int(page["historyId"]), "rows": json.dumps(rows)})

    # the stream

    async def changes(self, request: bytes, context) -> None:
        """The one consumer's stream: an empty response once open, then the new rows of each wake-up."""
        from google.protobuf.timestamp_pb2 import Timestamp

        from mailwatch.v1 import mailbox_service_pb2, resources_pb2

        added = resources_pb2.EVENT_TYPE_MESSAGE_ADDED
        with part("stream write"):
            await context.write(mailbox_service_pb2.StreamChangesResponse())
        after = 0
        while True:
            await self.woken.wait()
            self.woken.clear()
            with part("statements"):
                rows = await self.connections.execute(_READ, (after,))
            LEDGER.count("reads")
            if not rows:
                continue
            with part("stream write"):
                events = []
                for sequence, mailbox_id, email, history_id, message_id, thread_id, label_ids, observed in rows:
                    observe_time = Timestamp()
                    observe_time.FromDatetime(observed)
                    events.append(resources_pb2.ChangeEvent(
                        id=str(sequence), cursor=sequence.to_bytes(8, "big"), type=added, mailbox_id=str(mailbox_id),
                        email_address=email, observe_time=observe_time, history_id=history_id,
                        message_id=message_id, thread_id=thread_id or "", label_ids=label_ids))
                await context.write(mailbox_service_pb2.StreamChangesResponse(events=events))
            LEDGER.count("stream writes")
            after = rows[-1][0]

    async def ledger(self, request: bytes, context) -> bytes:
        return json.dumps(LEDGER.snapshot()).encode()

    async def close(self) -> None:
        self.stopping.set()
        for task in list(self.syncs):
            task.cancel()
        if self.listener is not None:
            asyncio.get_running_loop().remove_reader(self.listener.pgconn.socket)
            await self.listener.close()
        if self.channel is not None:
            await self.channel.close()
        await self.connections.close()
        self.gmail.executor.shutdown(wait=False, cancel_futures=True)


async def serve(args) -> None:
    import grpc

    asyncio.get_running_loop().set_task_factory(_charged_task)
    floor = Floor(args, json.loads(Path(args.key_file).read_text()))
    await floor.prepare()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Changes": grpc.unary_stream_rpc_method_handler(
            floor.changes, response_serializer=lambda response: response.SerializeToString()),
        "Ledger": grpc.unary_unary_rpc_method_handler(floor.ledger),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pulling = asyncio.create_task(floor.pull())
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print(f"raw floor ready on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.wait((pulling, asyncio.create_task(stop.wait())), return_when=asyncio.FIRST_COMPLETED)
        if pulling.done():
            pulling.result()  # a puller failed: say why
    finally:
        await server.stop(1)
        await floor.close()
        pulling.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pulling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="libpq URL of the database (scratch schema inside)")
    parser.add_argument("--sim-url", required=True, help="the Gmail simulator")
    parser.add_argument("--topic", required=True, help="the topic the mailboxes are watched on")
    parser.add_argument("--subscription", required=True, help="the floor's own subscription on that topic")
    parser.add_argument("--key-file", required=True, help="service-account key delegated for " + FLOOR_DOMAIN)
    parser.add_argument("--mailboxes", type=int, required=True)
    parser.add_argument("--event-loop", default="uvloop")
    args = parser.parse_args(argv)
    from mailwatch import event_loop

    event_loop.run(args.event_loop, serve, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
