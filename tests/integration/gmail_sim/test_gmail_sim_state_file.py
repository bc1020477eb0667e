"""A simulator started with a state file carries on where the last one stopped."""

from __future__ import annotations

import json

import pytest
from google.oauth2 import service_account
from googleapiclient.discovery import build

from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl
from tests.integration.gmail_sim.support import ALICE, DOMAIN, READONLY

# What a grant made without scopes allows: Gmail's read scopes.
DELEGATED = {READONLY, "https://www.googleapis.com/auth/gmail.metadata",
             "https://www.googleapis.com/auth/gmail.modify", "https://mail.google.com/"}

pytestmark = pytest.mark.integration


def gmail(url: str, key: dict, email: str):
    # The key names the token endpoint of the simulator that issued it; mailwatch overrides it the same way.
    creds = service_account.Credentials.from_service_account_info({**key, "token_uri": f"{url}/token"},
                                                                  scopes=[READONLY], subject=email)
    return build("gmail", "v1", static_discovery=True, credentials=creds, client_options={"api_endpoint": url})


def test_mailboxes_history_credentials_and_push_subscriptions_survive_a_restart(tmp_path):
    state_file = tmp_path / "sim.json"
    first = GmailSimulator(state_file=str(state_file))
    url = first.start()
    try:
        control = SimulatorControl(url)
        control.create_mailbox(ALICE)
        label = control.create_label(ALICE, "Projects")
        key = control.create_service_account_key(delegate_domains=[DOMAIN])
        client = control.create_oauth_client()
        refresh_token = control.issue_refresh_token(client["clientId"], ALICE)
        start = control.history_id(ALICE)
        kept = control.insert_message(ALICE, label_ids=["INBOX", label], subject="kept")
        gone = control.insert_message(ALICE, label_ids=["INBOX"])
        control.delete_message(ALICE, gone["id"])
        control.create_push_subscription("projects/sim-project/subscriptions/s", "projects/sim-project/topics/t", "http://127.0.0.1:9/push")
        with gmail(url, key, ALICE) as service:
            service.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
        clock = control.advance_clock(3600)
        before = control.mailbox(ALICE)
    finally:
        first.stop()
    assert json.loads(state_file.read_text())["version"] == 1

    second = GmailSimulator(state_file=str(state_file))
    url = second.start()
    try:
        control = SimulatorControl(url)
        after = control.mailbox(ALICE)
        assert {k: after[k] for k in ("historyId", "messagesTotal", "historyFloor", "labels", "watches")} == \
               {k: before[k] for k in ("historyId", "messagesTotal", "historyFloor", "labels", "watches")}
        assert control.now() >= clock
        # The domain's delegation grant survived: the same key still gets tokens, and the history
        # continues from where it was.
        assert control.delegations(DOMAIN) == {key["client_id"]: sorted(DELEGATED)}
        with gmail(url, key, ALICE) as service:
            history = service.users().history().list(userId="me", startHistoryId=start).execute()
            message = service.users().messages().get(userId="me", id=kept["id"], format="metadata").execute()
        kinds = [next(k for k in record if k not in ("id", "messages")) for record in history["history"]]
        assert kinds == ["messagesAdded", "messagesAdded", "messagesDeleted"]
        assert int(history["historyId"]) == before["historyId"]
        assert {"name": "Subject", "value": "kept"} in message["payload"]["headers"]
        assert control.push_subscriptions()[0]["name"] == "projects/sim-project/subscriptions/s"
        # New changes take later ids; an OAuth refresh token issued before the restart still works.
        assert control.insert_message(ALICE)["historyId"] > before["historyId"]
        from google.oauth2.credentials import Credentials

        user = Credentials(None, refresh_token=refresh_token, client_id=client["clientId"],
                           client_secret=client["clientSecret"], token_uri=control.token_uri)
        with build("gmail", "v1", static_discovery=True, credentials=user,
                   client_options={"api_endpoint": url}) as service:
            assert service.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    finally:
        second.stop()
