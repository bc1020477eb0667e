"""The simulator's state as one JSON document, so a simulator can stop and carry on later.

Kept: mailboxes (messages, labels, history and its floor, the watch, id
counters), credentials (service-account public keys, OAuth clients, refresh
and access tokens, revoked users, domain-wide delegation grants), push subscriptions, settings and the
clock's offset. Not kept: queued notifications, counters, fault rules and the
OIDC signing key (receivers refetch the certificates on an unknown key id).
A snapshot is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mailwatch_devstack.gmail_sim.auth import AccessToken, OAuthClient, RefreshGrant, ServiceAccount
from mailwatch_devstack.gmail_sim.history import HistoryLog, HistoryRecord
from mailwatch_devstack.gmail_sim.model import Mailbox, Message, Watch
from mailwatch_devstack.gmail_sim.push import PushSubscription
from mailwatch_devstack.gmail_sim.state import SimState

VERSION = 1


def _plain(value):
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _record(obj, **overrides) -> dict:
    return {**{f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}, **overrides}


def dump(state: SimState) -> dict:
    with state.lock:
        auth = state.auth
        return {
            "version": VERSION,
            "clockOffset": state.clock.offset,
            "config": {"seed": state.seed, "historyRetention": state.history_retention,
                       "historyIdAsNumber": state.history_id_as_number, "tokenLifetime": auth.token_lifetime,
                       "batchPartsConcurrent": state.batch_parts_concurrent,
                       "historyLabelIds": state.history_label_ids,
                       "messageVisibilityDelaySeconds": state.message_visibility_delay,
                       "emptyHistoryPages": state.empty_history_pages},
            "mailboxes": [_mailbox(mailbox) for mailbox in state.mailboxes.values()],
            "auth": {
                "serviceAccounts": [_record(account, public_key=account.public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii"))
                    for account in auth._service_accounts.values()],
                "clients": {client_id: _record(client) for client_id, client in auth._clients.items()},
                "refreshTokens": {token: _record(grant) for token, grant in auth._refresh.items()},
                "accessTokens": {token: _record(access) for token, access in auth._access.items()},
                "revoked": sorted(auth._revoked),
                "delegations": [{"domain": domain, "clientId": client_id, "scopes": sorted(scopes)}
                                for (domain, client_id), scopes in auth._delegations.items()],
            },
            "pushSubscriptions": [subscription.to_json() for subscription in state.push_subscriptions.all()],
            "unpublishableTopics": sorted(state.unpublishable_topics),
        }


def _mailbox(mailbox: Mailbox) -> dict:
    return {
        "email": mailbox.email, "historyId": mailbox.history_id, "counter": mailbox.counter,
        "historyFloor": mailbox.history.floor,
        "history": [_record(record) for record in mailbox.history._records],
        "messages": [_record(message) for message in mailbox.messages.values()],
        "threadSizes": dict(mailbox.thread_sizes), "userLabels": dict(mailbox.user_labels),
        "watches": {project: _record(watch) for project, watch in mailbox.watches.items()},
        "drafts": dict(mailbox.drafts),
    }


def load(state: SimState, snapshot: dict) -> None:
    """Replace `state`'s contents with a snapshot's."""
    if snapshot.get("version") != VERSION:
        raise ValueError(f"unsupported simulator snapshot version {snapshot.get('version')!r}")
    state.reset()
    with state.lock:
        config = snapshot["config"]
        state.configure(seed=config["seed"], history_retention_seconds=config["historyRetention"],
                        notification_history_id_type="number" if config["historyIdAsNumber"] else "string",
                        token_lifetime_seconds=config["tokenLifetime"],
                        batch_parts_concurrent=config.get("batchPartsConcurrent"),
                        history_label_ids=config.get("historyLabelIds"),
                        message_visibility_delay_seconds=config.get("messageVisibilityDelaySeconds"),
                        empty_history_pages=config.get("emptyHistoryPages"))
        state.clock.advance(snapshot["clockOffset"])
        for item in snapshot["mailboxes"]:
            mailbox = _load_mailbox(item, state)
            state.mailboxes[mailbox.email.lower()] = mailbox
        auth, saved = state.auth, snapshot["auth"]
        for item in saved["serviceAccounts"]:
            key = serialization.load_pem_public_key(item["public_key"].encode("ascii"))
            item = {name: value for name, value in item.items() if name != "scopes"}  # older snapshots
            account = ServiceAccount(**{**item, "public_key": key})
            auth._service_accounts[account.client_email] = account
        for client_id, item in saved["clients"].items():
            auth._clients[client_id] = OAuthClient(**item)
        for token, item in saved["refreshTokens"].items():
            auth._refresh[token] = RefreshGrant(**{**item, "scopes": frozenset(item["scopes"])})
        for token, item in saved["accessTokens"].items():
            auth._access[token] = AccessToken(**{**item, "scopes": frozenset(item["scopes"])})
        auth._revoked.update(saved["revoked"])
        for item in saved.get("delegations", ()):
            auth.grant_delegation(item["domain"], item["clientId"], item["scopes"])
        for item in snapshot["pushSubscriptions"]:
            state.push_subscriptions.put(PushSubscription.from_json(item))
        state.unpublishable_topics.update(snapshot.get("unpublishableTopics", ()))


def _load_mailbox(item: dict, state: SimState) -> Mailbox:
    mailbox = Mailbox.create(item["email"], item["historyId"], state._rng)
    mailbox.counter = item["counter"]
    mailbox.history = HistoryLog(floor=item["historyFloor"])
    for record in item["history"]:
        mailbox.history.append(HistoryRecord(**{**record, "label_ids": tuple(record["label_ids"]),
                                                "changed": tuple(record["changed"]),
                                                "removed": tuple(record.get("removed", ()))}))
    for message in item["messages"]:
        loaded = Message(**{**message, "headers": [tuple(header) for header in message["headers"]]})
        mailbox.messages[loaded.id] = loaded
    mailbox.thread_sizes.update(item["threadSizes"])
    mailbox.user_labels.update(item["userLabels"])
    mailbox.drafts.update(item.get("drafts", {}))
    for project, watch in item["watches"].items():
        mailbox.watches[project] = Watch(**{**watch, "label_ids": frozenset(watch["label_ids"])})
    return mailbox


def save_file(state: SimState, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dump(state), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_file(state: SimState, path: Path) -> bool:
    """Load `path` when it exists; False when there is nothing to load."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    load(state, json.loads(text))
    return True
