"""The Gmail calls mailwatch makes, through the unmodified google-api-python-client.

google-api-python-client builds each request and reads each answer; a single call
is exchanged on the event loop (gmail/transport.py: no thread hand-off per call).
Batches, token refreshes, and every call of a deployment behind an HTTP proxy go
through httplib2, which is synchronous and not thread-safe, on a bounded thread pool
with an `Http` per thread. The google-auth credential objects (which hold access
tokens) are cached per tenant and credential (keyed by a digest of the whole secret)
so a token is fetched once per hour, not once per call.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, TypeVar

import cachetools
import google.auth.exceptions
import google.auth.transport
import google_auth_httplib2
import httplib2
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from mailwatch.config import GmailSettings
from mailwatch.domain import errors
from mailwatch.domain.errors import GmailMessageNotFound
from mailwatch.domain.messages import Message, MessageListPage
from mailwatch.domain.models import (
    Credential,
    LabelFilter,
    LabelFilterBehavior,
    MessageLabels,
    OAuthCredential,
    ServiceAccountCredential,
)
from mailwatch.gmail.credentials import UnusableKey, google_credentials, secret_digest
from mailwatch.gmail.budget import TenantBudgets
from mailwatch.gmail.calls import GmailCall
from mailwatch.gmail.errors import classify
from mailwatch.gmail.history import HistoryPage, history_page
from mailwatch.gmail.messages import (
    attachment_from_resource,
    message_from_resource,
    message_list_page,
    metadata_from_resource,
)
from mailwatch.gmail.quota import record_call
from mailwatch.gmail.transport import ConnectionPool, loop_transport_for
from mailwatch.gmail.user_calls import UserCallLimiter
from mailwatch.domain.backoff import BackoffPolicy

T = TypeVar("T")

# users.watch's labelFilterBehavior in the discovery document's enum spelling.
WATCH_FILTER_BEHAVIOR = {LabelFilterBehavior.INCLUDE: "include", LabelFilterBehavior.EXCLUDE: "exclude"}

HISTORY_PAGE_SIZE = 500  # Gmail's maximum maxResults for history.list
# Parts per batch request. Gmail runs a batch's parts as separate requests at once and
# answers those past the user's concurrency limit 429 one by one (public reports: at
# 50 and 100 parts; ~25 fine); each part also holds one of our per-user slots, so a
# batch is never larger than GMAIL_CALLS_PER_USER either.
BATCH_PARTS = 25
# A batch's refused parts are sent again after a short backoff (or Gmail's own retry
# time, if it is no longer than PART_MAX_WAIT), at most PART_ATTEMPTS times in all;
# past that the lookup fails and the sync backs off as a whole.
PART_ATTEMPTS = 5
PART_BACKOFF = BackoffPolicy(base_seconds=0.5, max_seconds=4.0)
PART_MAX_WAIT = 10.0
# Every call acts as the authorised user: the impersonated subject or the OAuth
# grant's user. Gmail refuses any other userId, even an alias of that very user
# ("Delegation denied for <primary address>").
ME = "me"
# A call refused with these is sent again with a new token, at most this many times
# (google-auth-httplib2's AuthorizedHttp does the same on the pool).
REFRESH_STATUS_CODES = google.auth.transport.DEFAULT_REFRESH_STATUS_CODES
REFRESH_ATTEMPTS = google.auth.transport.DEFAULT_MAX_REFRESH_ATTEMPTS


@dataclass(frozen=True)
class WatchResult:
    history_id: int
    expiration: datetime


@dataclass(frozen=True)
class Profile:
    email_address: str
    history_id: int
    messages_total: int


def _given(**params) -> dict:
    """The optional request parameters that were given (not None, empty or False): Gmail applies
    its default for the rest."""
    return {name: value for name, value in params.items() if value}


def _fingerprint(credential: Credential, tenant_id: uuid.UUID | None) -> str:
    """The credential cache key: a digest of the tenant and the credential's full
    secret material, so a registration never gets a token minted from another
    registration's secret (same public identifiers, other private key) nor
    another tenant's cached token, and no secret is held in the key itself."""
    if isinstance(credential, ServiceAccountCredential):
        material: tuple = ("sa", credential.info, credential.subject)
    elif isinstance(credential, OAuthCredential):
        material = ("oauth", credential.client_id, credential.client_secret, credential.refresh_token)
    else:
        raise TypeError(type(credential).__name__)
    return secret_digest(str(tenant_id) if tenant_id else None, *material)


class GmailClient:
    """Async facade over the Gmail API for one deployment (one endpoint, one token URI)."""

    def __init__(
        self,
        settings: GmailSettings,
        *,
        max_workers: int = 32,
        timeout: float = 30.0,
        credential_cache_size: int = 20_000,
        budgets: TenantBudgets | None = None,
    ) -> None:
        # Each tenant's share of the project's quota units (gmail/budget.py).
        self.budgets = budgets or TenantBudgets(settings.tenant_units_per_minute)
        # Gmail refuses a user's requests past a small number in flight ("Too many
        # concurrent requests for user"), counting all of that user's clients.
        self._user_calls = UserCallLimiter(settings.calls_per_user)
        self._api_endpoint = settings.api_endpoint
        self._batch_uri = settings.api_endpoint.rstrip("/") + "/batch/gmail/v1"
        self._token_uri = settings.token_uri
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gmail")
        self._credentials: cachetools.LRUCache = cachetools.LRUCache(maxsize=credential_cache_size)
        self._credentials_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[httplib2.Http] = []  # one per pool thread, closed with the client
        self._connections_lock = threading.Lock()
        # None: this deployment's calls go through httplib2 (a proxy is configured for Gmail).
        self._loop_http: ConnectionPool | None = loop_transport_for(settings.api_endpoint, timeout=timeout)
        # As many exchanges with Gmail in flight, on the loop and batches on the pool together, as
        # the pool has threads: without a bound, one tenant's bulk registration put thousands of
        # requests on the wire at once, and another tenant's sync queued behind them at Gmail's
        # end (tests/integration/api/test_api_quota_fairness.py).
        self._exchanges = asyncio.Semaphore(max_workers)
        self._refreshing: dict[int, asyncio.Future] = {}  # id(credentials) -> the refresh on the pool

    @property
    def transport(self) -> str:
        """How single calls reach Gmail: "event loop" or "httplib2" (said at start-up)."""
        return "httplib2" if self._loop_http is None else "event loop"

    def close(self) -> None:
        if self._loop_http is not None:
            self._loop_http.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for http in connections:
            http.close()

    # --- plumbing -----------------------------------------------------------

    def _thread_http(self) -> httplib2.Http:
        """This pool thread's connection (httplib2 is not thread-safe; keep-alive is kept)."""
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = httplib2.Http(timeout=self._timeout)
            with self._connections_lock:
                self._connections.append(http)
        return http

    def _service(self):
        service = getattr(self._local, "service", None)
        if service is None:
            # Requests are executed with a per-call authorized Http, so the
            # service is built once per thread around the thread's plain one.
            service = self._local.service = build(
                "gmail", "v1", static_discovery=True, http=self._thread_http(),
                client_options={"api_endpoint": self._api_endpoint},
            )
        return service

    def _users(self) -> "_ThreadUsers":
        """This pool thread's `users` resource, built once (see `_ThreadUsers`)."""
        users = getattr(self._local, "users", None)
        if users is None:
            users = self._local.users = _ThreadUsers(self._service().users())
        return users

    def _authorized_http(self, credential: Credential, tenant_id: uuid.UUID | None):
        return google_auth_httplib2.AuthorizedHttp(self._google_credentials(credential, tenant_id),
                                                   http=self._thread_http())

    def _google_credentials(self, credential: Credential, tenant_id: uuid.UUID | None):
        key = _fingerprint(credential, tenant_id)
        with self._credentials_lock:
            creds = self._credentials.get(key)
            if creds is None:
                try:
                    creds = google_credentials(credential, token_uri=self._token_uri)
                except UnusableKey as exc:
                    # Registration refuses such keys; one stored before that
                    # check existed must end as AUTH_FAILED, not retry for ever.
                    raise errors.GmailAuthFailed(f"stored credentials are unusable: {exc}") from None
                self._credentials[key] = creds
        return creds

    def forget(self, credential: Credential, tenant_id: uuid.UUID | None = None) -> None:
        """Drop the cached token (e.g. after a 401) so the next call refreshes."""
        with self._credentials_lock:
            self._credentials.pop(_fingerprint(credential, tenant_id), None)

    async def _call(
        self, call: GmailCall, credential: Credential, make_request: Callable, tenant_id: uuid.UUID | None = None,
        *, user: str,
    ) -> dict:
        await self.budgets.spend(tenant_id, call)  # before taking a user slot: waiting holds none
        async with self._user_calls.slot(user):
            return await self._call_now(call, credential, make_request, tenant_id)

    async def _call_now(
        self, call: GmailCall, credential: Credential, make_request: Callable, tenant_id: uuid.UUID | None
    ) -> dict:
        record_call(call, tenant_id, credential)  # Google charges quota for refused calls too
        try:
            return await self._execute(make_request, credential, tenant_id)
        except Exception as exc:  # noqa: BLE001 - classified into domain errors
            raise classify(exc, call=call) from exc

    async def _execute(self, make_request: Callable, credential: Credential, tenant_id: uuid.UUID | None) -> dict:
        """The answer to the request `make_request(users)` builds, exchanged on the loop (or, where
        a proxy applies, by httplib2 on the pool); the library's exceptions, unclassified."""
        if self._loop_http is not None:
            return await self._exchange_on_loop(make_request(self._users()),
                                                self._google_credentials(credential, tenant_id))

        def run() -> dict:
            request = make_request(self._users())
            return request.execute(http=self._authorized_http(credential, tenant_id), num_retries=0)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def _exchange_on_loop(self, request, creds) -> dict:
        """`request.execute()` with the exchange on the loop: the library's request (its URI,
        method, headers and body), its answer read by its own model, HttpError for a refusal.
        The token is applied here and refreshed on the pool only when it has expired; a 401
        refreshes it and sends again, as google-auth-httplib2's AuthorizedHttp does."""
        method, uri, body, headers = _wire_request(request)
        refused: str | None = None  # the token Gmail answered 401 to
        for attempt in range(REFRESH_ATTEMPTS + 1):
            sent_headers = dict(headers)
            if refused is None and creds.valid:
                token = creds.token
                creds.before_request(_refresh_refused, method, uri, sent_headers)
            else:
                # A new token is sent even when google-auth already counts it as expiring (one
                # shorter-lived than its refresh margin), as AuthorizedHttp sends it.
                token = await self._refreshed(creds, creds.token if refused is None else refused)
                creds.apply(sent_headers, token=token)
            async with self._exchanges:
                response, content = await self._loop_http.request(method, uri, sent_headers, body)
            if response.status not in REFRESH_STATUS_CODES or attempt == REFRESH_ATTEMPTS:
                break
            refused = token
        for callback in request.response_callbacks:
            callback(response)
        if response.status >= 300:
            raise HttpError(response, content, uri=uri)
        return request.postproc(response, content)

    async def _refreshed(self, creds, stale_token: str | None) -> str:
        """A new token for `creds`, fetched on the pool (google-auth's refresh blocks): one
        fetch for every call that found the same token expired or refused."""
        if creds.token != stale_token and creds.valid:
            return creds.token  # another call refreshed it meanwhile
        key = id(creds)
        refresh = self._refreshing.get(key)
        if refresh is None:
            refresh = asyncio.get_running_loop().run_in_executor(self._executor, self._refresh_now, creds)
            self._refreshing[key] = refresh
            refresh.add_done_callback(lambda done: self._refresh_ended(key, done))
        return await asyncio.shield(refresh)  # a caller that goes away leaves the refresh to the others

    def _refresh_ended(self, key: int, done: asyncio.Future) -> None:
        self._refreshing.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller still waiting has it raised

    def _refresh_now(self, creds) -> str:
        creds.refresh(google_auth_httplib2.Request(self._thread_http()))
        return creds.token

    # --- the calls ----------------------------------------------------------

    async def watch(
        self, credential: Credential, email: str, *, topic: str, label_filter: LabelFilter,
        tenant_id: uuid.UUID | None = None,
    ) -> WatchResult:
        body: dict = {"topicName": topic}
        if label_filter.label_ids:
            body["labelIds"] = list(label_filter.label_ids)
            body["labelFilterBehavior"] = WATCH_FILTER_BEHAVIOR[label_filter.behavior]
        try:
            response = await self._call(
                GmailCall.WATCH, credential, lambda users: users.watch(userId=ME, body=body), tenant_id, user=email
            )
        except errors.TopicProjectMismatch as exc:
            # Gmail names only the caller's project; say which topic it refused, too.
            raise errors.TopicProjectMismatch.between(
                topic=topic, credentials_project=exc.metadata.get("credentials_project", "")
            ) from exc
        return WatchResult(
            history_id=int(response["historyId"]),
            expiration=datetime.fromtimestamp(int(response["expiration"]) / 1000, tz=timezone.utc),
        )

    async def stop(self, credential: Credential, email: str, *, tenant_id: uuid.UUID | None = None) -> None:
        await self._call(GmailCall.STOP, credential, lambda users: users.stop(userId=ME), tenant_id, user=email)

    async def profile(self, credential: Credential, email: str, *, tenant_id: uuid.UUID | None = None) -> Profile:
        response = await self._call(
            GmailCall.GET_PROFILE, credential, lambda users: users.getProfile(userId=ME), tenant_id, user=email
        )
        return Profile(
            email_address=response.get("emailAddress", email),
            history_id=int(response["historyId"]),
            messages_total=int(response.get("messagesTotal", 0)),
        )

    async def send_as_addresses(
        self, credential: Credential, email: str, *, tenant_id: uuid.UUID | None = None,
    ) -> tuple[str, ...]:
        """The addresses the authorised user sends mail as (users.settings.sendAs.list): its
        primary address and its aliases."""
        response = await self._call(
            "settings.sendAs.list", credential, lambda users: users.settings().sendAs().list(userId=ME), tenant_id,
            user=email,
        )
        return tuple(str(entry["sendAsEmail"]) for entry in response.get("sendAs", ()) if entry.get("sendAsEmail"))

    async def history_page(
        self, credential: Credential, email: str, *, start_history_id: int,
        page_token: str | None = None, label_id: str | None = None, max_results: int = HISTORY_PAGE_SIZE,
        tenant_id: uuid.UUID | None = None,
    ) -> HistoryPage:
        params = {"userId": ME, "startHistoryId": str(start_history_id), "maxResults": max_results,
                  **_given(pageToken=page_token, labelId=label_id)}
        return history_page(await self._call(
            GmailCall.HISTORY_LIST, credential, lambda users: users.history().list(**params), tenant_id, user=email
        ))

    # --- messages (GetMessage, metadata on MESSAGE_ADDED) --------------------

    async def get_message(
        self, credential: Credential, email: str, message_id: str, *, fmt: str,
        metadata_headers: tuple[str, ...] = (), tenant_id: uuid.UUID | None = None,
    ) -> Message:
        """users.messages.get in Gmail's format `fmt` ("metadata", "full" or "raw")."""
        params: dict = {"userId": ME, "id": message_id, "format": fmt}
        if fmt == "metadata" and metadata_headers:
            params["metadataHeaders"] = list(metadata_headers)
        response = await self._call(
            GmailCall.MESSAGES_GET, credential, lambda users: users.messages().get(**params), tenant_id, user=email
        )
        return message_from_resource(response, fmt)

    async def get_attachment(
        self, credential: Credential, email: str, message_id: str, attachment_id: str, *,
        tenant_id: uuid.UUID | None = None,
    ) -> bytes:
        """users.messages.attachments.get: the attachment's decoded bytes (Gmail sends it whole)."""
        response = await self._call(
            GmailCall.ATTACHMENTS_GET, credential,
            lambda users: users.messages().attachments().get(userId=ME, messageId=message_id, id=attachment_id),
            tenant_id, user=email,
        )
        return attachment_from_resource(response)

    async def list_messages(
        self, credential: Credential, email: str, *, label_ids: tuple[str, ...] = (), query: str = "",
        include_spam_trash: bool = False, max_results: int = 100, page_token: str | None = None,
        tenant_id: uuid.UUID | None = None,
    ) -> MessageListPage:
        """One page of users.messages.list (newest first; ids and thread ids only)."""
        params = {"userId": ME, "maxResults": max_results, **_given(
            labelIds=list(label_ids), q=query, includeSpamTrash=include_spam_trash, pageToken=page_token)}
        return message_list_page(await self._call(
            GmailCall.MESSAGES_LIST, credential, lambda users: users.messages().list(**params), tenant_id, user=email
        ))

    async def message_labels(
        self, credential: Credential, email: str, message_ids: list[str], *, tenant_id: uuid.UUID | None = None,
        metadata_headers: tuple[str, ...] | None = None, into: dict[str, MessageLabels | None] | None = None,
        not_found_grace: float = 0.0,
    ) -> dict[str, MessageLabels | None]:
        """Current labels and last-change history id of messages (`messages.get(format=minimal)`,
        through the batch endpoint; a lone message as a plain call); with `metadata_headers`,
        format=metadata brings the message's metadata in the same call.

        A message Gmail does not have maps to None, after `not_found_grace` seconds of
        asking again (Gmail's history can list a message before messages.get finds it).
        Parts Gmail refused for a while (rate limits, 5xx) are asked again after their
        backoff, the others kept; a part still refused, or refused for good, raises. What
        was found is written into `into` as it arrives, so a caller that keeps it never
        asks Gmail for it twice, even when the lookup raises.
        """
        if metadata_headers is None:
            params: dict = {"format": "minimal"}
            parse = _labels_from_resource
        else:
            params = {"format": "metadata", "metadataHeaders": list(metadata_headers)}
            parse = _labels_and_metadata_from_resource
        found = {} if into is None else into
        await self._get_batched(credential, email, list(dict.fromkeys(message_ids)), params, tenant_id, parse,
                                found, not_found_grace)
        return found

    async def _get_batched(self, credential: Credential, email: str, message_ids: list[str], params: dict,
                           tenant_id: uuid.UUID | None, parse: Callable[[dict], T], found: dict[str, T | None],
                           not_found_grace: float) -> None:
        """users.messages.get(**params) for each id, in batch requests of at most BATCH_PARTS
        parts, each part holding one of the user's in-flight slots (Gmail counts a batch's
        parts as requests in flight); only the parts that failed are sent again."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = message_ids
        for attempt in range(1, PART_ATTEMPTS + 1):
            refused: dict[str, errors.GmailError] = {}
            not_found: list[str] = []
            size = min(BATCH_PARTS, self._user_calls.limit)
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                for _ in chunk:
                    await self.budgets.spend(tenant_id, GmailCall.MESSAGES_GET)
                    record_call(GmailCall.MESSAGES_GET, tenant_id, credential)  # each part is metered as its own call
                async with self._user_calls.slots(email, len(chunk)):
                    if len(chunk) == 1:
                        results, failures = await self._get_one(credential, chunk[0], params, tenant_id, parse)
                    else:
                        async with self._exchanges:  # a batch on the pool is an exchange in flight too
                            results, failures = await loop.run_in_executor(
                                self._executor, self._get_many, credential, chunk, params, tenant_id, parse,
                            )
                found.update(results)
                for message_id, error in failures.items():
                    if isinstance(error, GmailMessageNotFound):
                        not_found.append(message_id)
                    else:
                        refused[message_id] = error
                for error in refused.values():
                    # Refused for good, or for longer than a lookup waits: the rest would be
                    # refused (and charged) too; the caller keeps what was found.
                    if not error.retryable or (_seconds_until(error) or 0.0) > PART_MAX_WAIT:
                        raise error
            asked_to_wait = [w for w in (_seconds_until(error) for error in refused.values()) if w is not None]
            delay = PART_BACKOFF.delay(attempt, retry_after=max(asked_to_wait, default=None))
            waited = loop.time() - started
            for message_id in not_found:
                if attempt < PART_ATTEMPTS and waited + delay <= not_found_grace:
                    refused[message_id] = GmailMessageNotFound("messages.get: not found yet")
                else:
                    found[message_id] = None
            if not refused:
                return
            if attempt == PART_ATTEMPTS or delay > PART_MAX_WAIT:
                raise next((e for e in refused.values() if not isinstance(e, GmailMessageNotFound)),
                           next(iter(refused.values())))
            await asyncio.sleep(delay)
            pending = list(refused)

    def _get_many(self, credential: Credential, message_ids: list[str], params: dict,
                  tenant_id: uuid.UUID | None, parse: Callable[[dict], T],
                  ) -> tuple[dict[str, T], dict[str, errors.GmailError]]:
        """One batch request of users.messages.get(**params) parts, two or more (blocking; on the pool):
        the parsed answers and each refused part's error.

        The token is refreshed here, over this thread's connection, and written
        into each part: left to itself, the batch refreshes over an Http of its
        own that it never closes. Parts refused 401 (the token expired on the
        way) refresh it once and are sent again.
        """
        creds = self._authorized_http(credential, tenant_id).credentials
        results: dict[str, T] = {}
        failures: dict[str, errors.GmailError] = {}
        unauthorized: list[str] = []

        def collect(request_id: str, response: dict | None, exception: BaseException | None) -> None:
            if exception is None:
                results[request_id] = parse(response or {})
                return
            if isinstance(exception, HttpError) and exception.resp.status == 401:
                unauthorized.append(request_id)
            failures[request_id] = classify(exception, call=GmailCall.MESSAGES_GET)

        for attempt in (1, 2):
            users = self._users()
            # new_batch_http_request() would take Google's batch URI from the
            # discovery document and ignore api_endpoint, so name it here.
            batch = BatchHttpRequest(callback=collect, batch_uri=self._batch_uri)
            try:
                if attempt == 2 or not creds.valid:
                    creds.refresh(google_auth_httplib2.Request(self._thread_http()))
                for message_id in message_ids:
                    part = users.messages().get(userId=ME, id=message_id, **params)
                    creds.apply(part.headers)  # each part carries the token in its own Authorization header
                    batch.add(part, request_id=message_id)
                batch.execute(http=self._thread_http())
            except Exception as exc:  # noqa: BLE001 - classified into domain errors
                raise classify(exc, call=GmailCall.MESSAGES_GET) from exc
            if not unauthorized or attempt == 2:
                break
            message_ids, unauthorized[:] = list(unauthorized), []
            for message_id in message_ids:
                failures.pop(message_id, None)
        return results, failures

    async def _get_one(self, credential: Credential, message_id: str, params: dict, tenant_id: uuid.UUID | None,
                       parse: Callable[[dict], T]) -> tuple[dict[str, T], dict[str, errors.GmailError]]:
        """`_get_many` for one message: a plain users.messages.get, the same Gmail call (and
        units) as a batch of one part for less CPU (no MIME request to build, no multipart
        answer to parse, exchanged on the loop). Gmail's refusal of it is the part's, as in a batch."""
        try:
            response = await self._execute(lambda users: users.messages().get(userId=ME, id=message_id, **params),
                                           credential, tenant_id)
        except HttpError as exc:
            return {}, {message_id: classify(exc, call=GmailCall.MESSAGES_GET)}
        except Exception as exc:  # noqa: BLE001 - classified into domain errors
            raise classify(exc, call=GmailCall.MESSAGES_GET) from exc
        return {message_id: parse(response)}, {}


def _wire_request(request) -> tuple[str, str, str | bytes | None, dict]:
    """What `HttpRequest.execute` sends: the library prepares its request (a content-length,
    a long GET turned into a POST) and hands it to `http.request`, which is caught here."""
    try:
        request.execute(http=_CAPTURE, num_retries=0)
    except _Captured as captured:
        return captured.args
    raise AssertionError("HttpRequest.execute sent nothing")  # pragma: no cover


class _Captured(Exception):
    pass


class _Capture:
    @staticmethod
    def request(uri, method="GET", body=None, headers=None, **_):
        raise _Captured(method, uri, body, headers or {})


_CAPTURE = _Capture()


def _refresh_refused(*_args, **_kwargs):
    """google-auth's request for a refresh on the loop, which must not block: the token is
    refreshed on the pool before, so only one expiring in between gets here."""
    raise google.auth.exceptions.TransportError("token expired while the call was prepared")


def _seconds_until(error: errors.GmailError) -> float | None:
    """How long Gmail asked to wait before this part is sent again, if it said."""
    retry_at = getattr(error, "retry_at", None)
    if retry_at is not None:
        return max(0.0, (retry_at - datetime.now(timezone.utc)).total_seconds())
    return getattr(error, "retry_after", None)


class _ThreadUsers:
    """The discovery `users` resource of one pool thread, with the nested resources
    the calls use built once too.

    Building a discovery Resource creates every method it describes, which is
    costly per call (docs/performance.md). A Resource only builds requests
    (executed with the caller's authorised Http), so one per thread is reused safely.
    """

    def __init__(self, users) -> None:
        self._users = users
        self._nested: dict[str, object] = {}

    def __getattr__(self, name: str):
        return getattr(self._users, name)  # users.watch, users.getProfile, ...

    def messages(self):
        return self._child("messages")

    def history(self):
        return self._child("history")

    def _child(self, name: str):
        child = self._nested.get(name)
        if child is None:
            child = self._nested[name] = getattr(self._users, name)()
        return child


def _labels_from_resource(resource: dict) -> MessageLabels:
    return MessageLabels(tuple(str(label) for label in resource.get("labelIds", [])),
                         int(resource.get("historyId", 0)))


def _labels_and_metadata_from_resource(resource: dict) -> MessageLabels:
    labels = _labels_from_resource(resource)
    return MessageLabels(labels.label_ids, labels.history_id, metadata_from_resource(resource))
