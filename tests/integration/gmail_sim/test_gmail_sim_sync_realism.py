"""What long syncs meet in real Gmail — latency, large mailboxes, aliases — through the real client."""

from __future__ import annotations

import json
import time

import pytest
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, all_pages

pytestmark = pytest.mark.integration

ALIAS = "sales@example.com"


def error_of(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


@pytest.fixture
def alice(control, gmail):
    control.create_mailbox(ALICE)
    service = gmail.for_user(ALICE)
    service.users().getProfile(userId="me").execute()  # token fetched before latency is armed
    return service


# -- latency faults ---------------------------------------------------------------------------------
def test_latency_delays_only_the_chosen_method_and_user(control, alice):
    rule = control.add_latency("users.messages.list", 0.3, user=ALICE)
    assert control.latency() == [rule] and rule["seconds"] == 0.3 and rule["user"] == ALICE
    started = time.monotonic()
    alice.users().messages().list(userId="me").execute()
    assert time.monotonic() - started >= 0.3
    # Every page pays it again (a lower bound only: a busy machine is slower, never faster).
    control.insert_messages([{"emailAddress": ALICE} for _ in range(3)])
    started = time.monotonic()
    pages = all_pages(alice.users().messages().list, userId="me", maxResults=1)
    assert len(pages) == 3 and time.monotonic() - started >= 0.9
    control.clear_latency()
    assert control.latency() == []


def test_latency_rules_are_validated(control):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    for bad in ({"method": "users.messages.list", "seconds": -1}, {"method": "", "seconds": 1},
                {"method": "*", "seconds": "slow"}, {"method": "*", "seconds": 1, "user": 5}):
        with pytest.raises(SimulatorControlError) as refused:
            control._call("POST", "/_sim/latency", bad)
        assert refused.value.status == 400


# -- large mailboxes --------------------------------------------------------------------------------
def test_seed_100k_messages_then_page_them(control, alice):
    start = control.history_id(ALICE)
    seeded = control.seed_messages(ALICE, 100_000)
    assert seeded["messagesTotal"] == 100_000 and seeded["historyId"] > start
    profile = alice.users().getProfile(userId="me").execute()
    assert profile["messagesTotal"] == 100_000 and profile["historyId"] == str(seeded["historyId"])
    first = alice.users().messages().list(userId="me", maxResults=500, includeSpamTrash=True).execute()
    assert len(first["messages"]) == 500 and first["resultSizeEstimate"] == 100_000
    second = alice.users().messages().list(userId="me", maxResults=500, includeSpamTrash=True,
                                           pageToken=first["nextPageToken"]).execute()
    assert not {m["id"] for m in first["messages"]} & {m["id"] for m in second["messages"]}
    inbox = alice.users().messages().list(userId="me", labelIds=["INBOX"], maxResults=1).execute()
    assert inbox["resultSizeEstimate"] == 100_000
    # The seeded mail predates any watch: history before it is gone (a full sync finds it).
    with pytest.raises(HttpError) as expired:
        alice.users().history().list(userId="me", startHistoryId=str(start)).execute()
    assert expired.value.resp.status == 404
    after = alice.users().history().list(userId="me", startHistoryId=str(seeded["historyId"])).execute()
    assert after == {"historyId": str(seeded["historyId"])}


def test_seed_is_validated(control, alice):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    for count, labels in ((0, None), (-5, None), ("many", None), (10, ["NoSuchLabel"])):
        with pytest.raises(SimulatorControlError) as refused:
            control.seed_messages(ALICE, count, label_ids=labels)  # type: ignore[arg-type]
        assert refused.value.status == 400
    assert control.mailbox(ALICE)["messagesTotal"] == 0


# -- history as documented --------------------------------------------------------------------------
def test_history_messages_carry_their_labels_as_served_and_label_changes_name_theirs(control, alice):
    control.configure(history_label_ids=True)  # Gmail's way (off by default for now: see state.py)
    start = control.history_id(ALICE)
    message = control.insert_message(ALICE, label_ids=["INBOX", "UNREAD"])
    control.modify_labels(ALICE, message["id"], add=["STARRED"], remove=["UNREAD"])
    history = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    # Real Gmail gives each added / relabelled message its labels as they are when the page is
    # served: the add shows STARRED (added later) and not UNREAD (removed later).
    for record in history:
        assert record["messages"] == [{"id": message["id"], "threadId": message["threadId"]}]
        for key in ("messagesAdded", "labelsAdded", "labelsRemoved"):
            for entry in record.get(key, []):
                assert entry["message"]["labelIds"] == ["INBOX", "STARRED"]
    changed = [(key, entry["labelIds"]) for record in history
               for key in ("labelsAdded", "labelsRemoved") for entry in record.get(key, [])]
    assert changed == [("labelsAdded", ["STARRED"]), ("labelsRemoved", ["UNREAD"])]
    minimal = alice.users().messages().get(userId="me", id=message["id"], format="minimal").execute()
    assert minimal["labelIds"] == ["INBOX", "STARRED"]

    # The discovery document allows them to be absent ("typically only id and threadId"): a setting.
    control.configure(history_label_ids=False)
    history = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    for record in history:
        for key in ("messagesAdded", "messagesDeleted", "labelsAdded", "labelsRemoved"):
            for entry in record.get(key, []):
                assert set(entry["message"]) == {"id", "threadId"}


# -- aliases ----------------------------------------------------------------------------------------
def test_alias_acts_as_its_mailbox_and_gmail_names_the_primary(control, gmail):
    control.create_mailbox(ALICE)
    assert control.add_aliases(ALICE, [ALIAS]) == [ALIAS]
    assert control.mailbox(ALIAS)["emailAddress"] == ALICE
    # Domain-wide delegation impersonates the primary address (an alias is refused:
    # test_gmail_sim_delegation.py); a user who consented signed in under the alias gets the owner's token.
    as_owner = gmail.for_user(ALICE)
    oauth = gmail.service(gmail.user_credentials(ALIAS))
    assert oauth.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    # Addressed by the alias, Gmail refuses: the token is the primary address's.
    for service in (as_owner, oauth):
        with pytest.raises(HttpError) as denied:
            service.users().getProfile(userId=ALIAS).execute()
        assert denied.value.resp.status == 403
        assert error_of(denied.value)["errors"][0] == {"message": f"Delegation denied for {ALICE}",
                                                       "domain": "global", "reason": "forbidden"}
    assert oauth.users().getProfile(userId=ALICE).execute()["emailAddress"] == ALICE

    # Mail to the alias lands in the mailbox; the notification names the primary address.
    oauth.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/gmail"}).execute()
    control.advance_clock(2)  # past the one-notification-per-second window of the watch's own
    inserted = control.insert_message(ALIAS, label_ids=["INBOX"])
    sent = control.notifications()
    assert [n["emailAddress"] for n in sent] == [ALICE, ALICE]
    assert sent[-1]["historyId"] == inserted["historyId"]


def test_aliases_are_validated(control):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    control.create_mailboxes([ALICE, "bob@example.com"])
    control.add_aliases(ALICE, [ALIAS])
    for owner, alias in ((ALICE, ALICE), ("bob@example.com", ALIAS), (ALICE, "bob@example.com"),
                         (ALICE, "not-an-address")):
        with pytest.raises(SimulatorControlError) as refused:
            control.add_aliases(owner, [alias])
        assert refused.value.status == 400
    with pytest.raises(SimulatorControlError):
        control.create_mailbox(ALIAS)  # an alias is not a second mailbox
