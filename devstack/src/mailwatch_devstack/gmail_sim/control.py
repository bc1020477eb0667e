"""`SimulatorControl`: a stdlib-only Python client of the simulator's control API.

Works from any process (tests, benchmarks, the dev stack): it only needs the
simulator's base URL. Errors come back as `SimulatorControlError` carrying the
HTTP status and the Gmail-shaped error body.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Iterable
from urllib.parse import quote, urlencode


class SimulatorControlError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


def _e(email: str) -> str:
    return quote(email, safe="")


class SimulatorControl:
    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def batch_uri(self) -> str:
        """Where a BatchHttpRequest must post: `new_batch_http_request()` ignores api_endpoint."""
        return f"{self.url}/batch/gmail/v1"

    def _call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> Any:
        url = f"{self.url}{path}"
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            raise SimulatorControlError(error.code, parsed) from None
        return json.loads(raw) if raw else None

    # -- whole simulator ---------------------------------------------------------------------------
    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def config(self) -> dict:
        return self._call("GET", "/_sim/config")

    def configure(self, *, history_retention_seconds: float | None = ..., token_lifetime_seconds: int | None = None,
                  notification_history_id_type: str | None = None, seed: int | None = None,
                  concurrent_requests_per_user: int | None = ..., user_quota_units_per_minute: int | None = ...,
                  project_quota_units_per_minute: int | None = ..., batch_parts_concurrent: bool | None = None,
                  history_label_ids: bool | None = None, message_visibility_delay_seconds: float | None = None,
                  empty_history_pages: bool | None = None) -> dict:
        """`concurrent_requests_per_user=None` lifts Gmail's per-user concurrency cap (default 10);
        `user_quota_units_per_minute=None` its per-user quota (default 6,000 units a minute, Gmail's
        for projects created since May 2026);
        `project_quota_units_per_minute=None` its per-project quota (default 1,200,000 units a minute).
        `batch_parts_concurrent=False`: a batch's parts run one at a time (default: together, each
        holding a concurrency slot until the batch is answered, as at Gmail);
        `history_label_ids=False`: history's messages carry only id and threadId (default: the
        message's labels when the page is served, as real Gmail);
        `message_visibility_delay_seconds`: for that long after a change, messages.get answers 404
        for the message the history lists (default 0);
        `empty_history_pages=True`: each history page with records is preceded by one with a
        nextPageToken and no history."""
        body: dict = {}
        for key, value in (("batchPartsConcurrent", batch_parts_concurrent), ("historyLabelIds", history_label_ids),
                           ("messageVisibilityDelaySeconds", message_visibility_delay_seconds),
                           ("emptyHistoryPages", empty_history_pages)):
            if value is not None:
                body[key] = value
        if concurrent_requests_per_user is not ...:
            body["concurrentRequestsPerUser"] = concurrent_requests_per_user
        if user_quota_units_per_minute is not ...:
            body["userQuotaUnitsPerMinute"] = user_quota_units_per_minute
        if project_quota_units_per_minute is not ...:
            body["projectQuotaUnitsPerMinute"] = project_quota_units_per_minute
        if history_retention_seconds is not ...:
            body["historyRetentionSeconds"] = history_retention_seconds
        if token_lifetime_seconds is not None:
            body["tokenLifetimeSeconds"] = token_lifetime_seconds
        if notification_history_id_type is not None:
            body["notificationHistoryIdType"] = notification_history_id_type
        if seed is not None:
            body["seed"] = seed
        return self._call("POST", "/_sim/config", body)

    # -- mailboxes, labels, messages ------------------------------------------------------------------
    def create_mailbox(self, email: str, *, history_id: int | None = None) -> dict:
        return self.create_mailboxes([email], history_id=history_id)[0]

    def create_mailboxes(self, emails: Iterable[str], *, history_id: int | None = None) -> list[dict]:
        body: dict = {"emails": list(emails)}
        if history_id is not None:
            body["historyId"] = history_id
        return self._call("POST", "/_sim/mailboxes", body)["mailboxes"]

    def mailbox(self, email: str) -> dict:
        return self._call("GET", f"/_sim/mailboxes/{_e(email)}")

    def history_id(self, email: str) -> int:
        return int(self.mailbox(email)["historyId"])

    def add_aliases(self, email: str, aliases: Iterable[str]) -> list[str]:
        """Give the mailbox alias addresses; returns all of its aliases."""
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/aliases", {"aliases": list(aliases)})["aliases"]

    def seed_messages(self, email: str, count: int, *, label_ids: list[str] | None = None) -> dict:
        """Add `count` messages that predate any watch (no history records; earlier history
        expires): a large mailbox in one cheap call. → {historyId, messagesTotal, historyFloor}"""
        body: dict = {"count": count}
        if label_ids is not None:
            body["labelIds"] = list(label_ids)
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/messages/seed", body)

    def create_label(self, email: str, name: str) -> str:
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/labels", {"name": name})["id"]

    def delete_label(self, email: str, label_id: str) -> list[int]:
        """Delete a user label (it leaves every message that had it); the history ids of those changes."""
        return self._call("DELETE", f"/_sim/mailboxes/{_e(email)}/labels/{_e(label_id)}")["historyIds"]

    def insert_message(self, email: str, *, label_ids: list[str] | None = None, thread_id: str | None = None,
                       subject: str | None = "Hello", sender: str | None = "sender@example.com",
                       to: str | None = None, body: str = "Hello from the Gmail simulator.",
                       internal_date: int | None = None, headers: list[tuple[str, str]] | None = None) -> dict:
        item = {"emailAddress": email, "labelIds": label_ids, "threadId": thread_id, "subject": subject,
                "from": sender, "to": to if to is not None else email, "body": body,
                "internalDate": internal_date, "headers": [list(h) for h in headers or []]}
        if label_ids is None:
            item.pop("labelIds")
        return self.insert_messages([item])[0]

    def insert_raw_message(self, email: str, source: bytes, *, label_ids: list[str] | None = None,
                           thread_id: str | None = None, internal_date: int | None = None) -> dict:
        """Insert a message from its RFC 822 source (multipart, attachments and all): format=full shows
        its MIME tree, attachments.get serves its attachments, format=raw returns `source` as it is."""
        item: dict = {"emailAddress": email, "raw": base64.urlsafe_b64encode(source).decode("ascii"),
                      "threadId": thread_id, "internalDate": internal_date}
        if label_ids is not None:
            item["labelIds"] = list(label_ids)
        return self.insert_messages([item])[0]

    def insert_messages(self, messages: list[dict]) -> list[dict]:
        """Bulk insert; each item: emailAddress, and optionally labelIds, threadId, subject, from, to,
        body, internalDate (ms), headers ([[name, value], ...]) — or, instead of the fields, raw
        (the RFC 822 source, base64url)."""
        return self._call("POST", "/_sim/messages", {"messages": messages})["messages"]

    def save_draft(self, email: str, *, draft_id: str | None = None, subject: str | None = "Draft",
                   to: str | None = "someone@example.com", body: str = "", thread_id: str | None = None) -> dict:
        """Create a draft, or (with `draft_id`) save its next version as Gmail's autosave does: a new
        message with DRAFT, the previous one deleted. → {draftId, id, threadId, historyId}"""
        item = {"subject": subject, "from": email, "to": to, "body": body, "threadId": thread_id}
        path = f"/_sim/mailboxes/{_e(email)}/drafts" + (f"/{quote(draft_id, safe='')}" if draft_id else "")
        return self._call("POST", path, item)

    def send_draft(self, email: str, draft_id: str) -> dict:
        """Send a draft: a new message with SENT in its thread, the draft's message deleted.
        → {id, threadId, labelIds, historyId}. (Mail sent without a draft: `insert_message(label_ids=["SENT"])`.)"""
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/drafts/{quote(draft_id, safe='')}/send", {})

    def delete_message(self, email: str, message_id: str) -> int:
        return self.delete_messages([(email, message_id)])[0]

    def delete_messages(self, items: Iterable[tuple[str, str]]) -> list[int]:
        body = {"messages": [{"emailAddress": e, "id": m} for e, m in items]}
        return self._call("POST", "/_sim/messages/delete", body)["historyIds"]

    def modify_labels(self, email: str, message_id: str, *, add: Iterable[str] = (),
                      remove: Iterable[str] = (), one_record: bool = False) -> int:
        """`one_record`: a change that both adds and removes labels is one history record with
        labelsAdded and labelsRemoved (otherwise one record each)."""
        return self.modify_labels_bulk([{"emailAddress": email, "id": message_id, "addLabelIds": list(add),
                                         "removeLabelIds": list(remove), "oneRecord": one_record}])[0]

    def add_labels(self, email: str, message_id: str, label_ids: Iterable[str]) -> int:
        return self.modify_labels(email, message_id, add=label_ids)

    def remove_labels(self, email: str, message_id: str, label_ids: Iterable[str]) -> int:
        return self.modify_labels(email, message_id, remove=label_ids)

    def modify_labels_bulk(self, changes: list[dict]) -> list[int]:
        """Each change: emailAddress, id, addLabelIds, removeLabelIds, oneRecord?; returns the history id
        after each."""
        return self._call("POST", "/_sim/messages/modify", {"changes": changes})["historyIds"]

    def expire_history(self, email: str, through_history_id: int) -> int:
        body = {"throughHistoryId": int(through_history_id)}
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/history/expire", body)["historyFloor"]

    # -- credentials ---------------------------------------------------------------------------------
    def create_service_account_key(self, *, project_id: str | None = None, name: str | None = None,
                                   delegate_domains: Iterable[str] = (), scopes: list[str] | None = None) -> dict:
        """A service-account JSON key. It impersonates nobody until a domain grants its client id
        domain-wide delegation: `delegate_domains` does that at once (for `scopes`, default Gmail's
        read scopes), as `grant_delegation` does later."""
        key = self._call("POST", "/_sim/service-accounts", {"projectId": project_id, "name": name})
        for domain in delegate_domains:
            self.grant_delegation(domain, key["client_id"], scopes=scopes)
        return key

    def grant_delegation(self, domain: str, client_id: str, *, scopes: list[str] | None = None) -> dict:
        """Domain-wide delegation as the domain's administrator grants it: service account `client_id`
        may impersonate `domain`'s users for `scopes` (None: Gmail's read scopes); replaces an earlier grant."""
        return self._call("POST", f"/_sim/domains/{_e(domain)}/delegations", {"clientId": client_id, "scopes": scopes})

    def revoke_delegation(self, domain: str, client_id: str) -> None:
        self._call("DELETE", f"/_sim/domains/{_e(domain)}/delegations/{_e(client_id)}")

    def delegations(self, domain: str) -> dict[str, list[str]]:
        """{client id: scopes} granted in `domain`."""
        return self._call("GET", f"/_sim/domains/{_e(domain)}/delegations")["delegations"]

    def create_oauth_client(self, *, project_id: str | None = None) -> dict:
        """An OAuth client created in Google project `project_id` (its calls act for that project;
        None: the simulator's default project)."""
        return self._call("POST", "/_sim/oauth-clients", {"projectId": project_id})

    def delete_oauth_client(self, client_id: str, *, restore: bool = False) -> None:
        """Delete the client as in the Cloud console (its grants answer deleted_client), or restore it."""
        self._call("POST", f"/_sim/oauth-clients/{_e(client_id)}/delete", {"restore": restore})

    def issue_refresh_token(self, client_id: str, email: str, *, scopes: list[str] | None = None) -> str:
        body = {"clientId": client_id, "emailAddress": email, "scopes": scopes}
        return self._call("POST", "/_sim/refresh-tokens", body)["refreshToken"]

    def revoke_user(self, email: str) -> None:
        self._call("POST", f"/_sim/users/{_e(email)}/revoke", {})

    def restore_user(self, email: str) -> None:
        self._call("POST", f"/_sim/users/{_e(email)}/restore", {})

    def refuse_user(self, email: str, kind: str) -> None:
        """Answer every call (API kinds) or grant (token kinds) for `email` with a permanent refusal:
        delegationDenied, domainPolicy, insufficientPermissions, mailServiceNotEnabled | clockSkew,
        unauthorizedClient, adminPolicyEnforced, policyEnforced (refresh-token grants only)."""
        self._call("POST", f"/_sim/users/{_e(email)}/refusals", {"kind": kind})

    def lift_refusal(self, email: str) -> None:
        self._call("DELETE", f"/_sim/users/{_e(email)}/refusals")

    # -- clock -----------------------------------------------------------------------------------------
    def now(self) -> float:
        return float(self._call("GET", "/_sim/clock")["now"])

    def advance_clock(self, seconds: float) -> float:
        return float(self._call("POST", "/_sim/clock/advance", {"seconds": seconds})["now"])

    # -- faults ----------------------------------------------------------------------------------------
    def inject_fault(self, kind: str, *, method: str = "*", user: str | None = None,
                     fraction: float | None = None, count: int | None = None, retry_after: int | None = None) -> dict:
        """kind: "rateLimitExceeded"/"429", "userRateLimitExceeded"/"403", "concurrentRequests" or
        "backendError"/"500". A rate-limit fault locks the user out for `retry_after` seconds of simulated
        time (default 900), named in the message as Gmail does; `clear_faults` lifts lockouts too."""
        return self._call("POST", "/_sim/faults", {"kind": kind, "method": method, "user": user,
                                                   "fraction": fraction, "count": count, "retryAfter": retry_after})

    def add_latency(self, method: str, seconds: float, *, user: str | None = None) -> dict:
        """Delay every matching Gmail API call by `seconds` (method e.g. "users.messages.list", or "*")."""
        return self._call("POST", "/_sim/latency", {"method": method, "seconds": seconds, "user": user})

    def latency(self) -> list[dict]:
        return self._call("GET", "/_sim/latency")["rules"]

    def clear_latency(self) -> None:
        self._call("DELETE", "/_sim/latency")

    def faults(self) -> dict:
        return self._call("GET", "/_sim/faults")

    def remove_fault(self, rule_id: int) -> None:
        self._call("DELETE", f"/_sim/faults/{int(rule_id)}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sim/faults")

    def set_notification_faults(self, *, drop_fraction: float | None = None,
                                delay_seconds: float | None = None, email: str | None = None) -> dict:
        """Drop a fraction of the watch notifications and delay the rest: for every mailbox, or with
        `email` for that mailbox only (overriding the global setting for it)."""
        body = {"dropFraction": drop_fraction, "delaySeconds": delay_seconds, "emailAddress": email}
        return self._call("POST", "/_sim/notifications/faults", body)["notifications"]

    def clear_notification_faults(self, email: str) -> dict:
        """The mailbox follows the global notification faults again."""
        return self._call("DELETE", f"/_sim/mailboxes/{_e(email)}/notifications/faults")["notifications"]

    def expire_watch(self, email: str, *, project_id: str | None = None) -> dict:
        """Let the mailbox's watch (the project's, or every one) lapse now; → the mailbox's info."""
        return self._call("POST", f"/_sim/mailboxes/{_e(email)}/watch/expire", {"projectId": project_id})

    def refuse_watch(self, email: str, refuse: bool = True) -> None:
        """Every users.watch of the mailbox (renewals too) answers 500 backendError until lifted."""
        self._call("POST", f"/_sim/mailboxes/{_e(email)}/watch/refusal", {"refuse": refuse})

    # -- notifications and counters -----------------------------------------------------------------------
    def notifications(self, email: str | None = None) -> list[dict]:
        return self._call("GET", "/_sim/notifications", query={"emailAddress": email})["notifications"]

    def notification_counts(self) -> dict:
        return self._call("GET", "/_sim/notifications")["counts"]

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        return bool(self._call("POST", "/_sim/notifications/flush", {"timeout": timeout})["flushed"])

    def counters(self) -> dict:
        return self._call("GET", "/_sim/counters")

    def reset_counters(self) -> None:
        self._call("POST", "/_sim/counters/reset", {})

    # -- Pub/Sub push without the emulator --------------------------------------------------------------
    def create_push_subscription(self, name: str, topic: str, push_endpoint: str, *,
                                 service_account_email: str | None = None, audience: str | None = None,
                                 message_retention_duration: str | None = None) -> dict:
        """Deliver `topic`'s notifications to `push_endpoint` in Pub/Sub's push format; with a service
        account, each request carries an ID token for it signed by the simulator's issuer (`oidc()`).
        An unacknowledged push is retried with backoff for `message_retention_duration` ("604800s",
        Pub/Sub's default 7 days) of simulated time."""
        config: dict = {"pushEndpoint": push_endpoint}
        if service_account_email is not None:
            config["oidcToken"] = {"serviceAccountEmail": service_account_email, "audience": audience}
        body = {"name": name, "topic": topic, "pushConfig": config}
        if message_retention_duration is not None:
            body["messageRetentionDuration"] = message_retention_duration
        return self._call("POST", "/_sim/push-subscriptions", body)

    def set_gmail_publisher(self, topic: str, *, granted: bool) -> None:
        """Whether the topic lets gmail-api-push@system.gserviceaccount.com publish (default: yes, as
        after `mailwatch pubsub ensure`); without it users.watch on the topic is refused 403."""
        self._call("POST", "/_sim/topics/gmail-publisher", {"topic": topic, "granted": granted})

    def push_subscriptions(self) -> list[dict]:
        return self._call("GET", "/_sim/push-subscriptions")["subscriptions"]

    def oidc(self) -> dict:
        """{issuer, certsUri, jwksUri}: what a push receiver verifies tokens against."""
        return self._call("GET", "/_sim/oidc")
