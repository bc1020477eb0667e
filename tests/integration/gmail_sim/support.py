"""Shared helpers of the Gmail simulator conformance suite (the fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib

from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build

from mailwatch_devstack.gmail_sim import SimulatorControl

READONLY = "https://www.googleapis.com/auth/gmail.readonly"
METADATA = "https://www.googleapis.com/auth/gmail.metadata"
DOMAIN = "example.com"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
# What the suite's domain lets its service account do.
DELEGATED_SCOPES = [READONLY, METADATA, "https://www.googleapis.com/auth/gmail.modify", "https://mail.google.com/"]


def all_pages(list_method, **params) -> list[dict]:
    """Every page of a Gmail list call (e.g. `service.users().history().list`), following nextPageToken."""
    pages, token = [], None
    while True:
        page = list_method(pageToken=token, **params).execute()
        pages.append(page)
        token = page.get("nextPageToken")
        if not token:
            return pages


def history_pages(service, start: int, **params) -> list[dict]:
    """Every page of users.history.list from `start`."""
    return all_pages(service.users().history().list, userId="me", startHistoryId=str(start), **params)


class Gmail:
    """Builds Gmail services against one simulator and closes them all at the end."""

    def __init__(self, url: str, control: SimulatorControl, project: str = "sim-project") -> None:
        self.url = url
        self.control = control
        self.project = project  # the Google project of the key and OAuth client (watch topics live there)
        self._stack = contextlib.ExitStack()
        self._sa_key: dict | None = None
        self._client: dict | None = None

    def service(self, creds, **kwargs):
        service = build("gmail", "v1", static_discovery=True, credentials=creds,
                        client_options={"api_endpoint": self.url}, **kwargs)
        self._stack.callback(service.close)
        return service

    def sa_credentials(self, email: str, scopes=(READONLY,)):
        if self._sa_key is None:
            # The suite's domain grants the key domain-wide delegation (test_gmail_sim_delegation.py: without).
            self._sa_key = self.control.create_service_account_key(project_id=self.project, delegate_domains=[DOMAIN],
                                                                   scopes=DELEGATED_SCOPES)
        return service_account.Credentials.from_service_account_info(self._sa_key, scopes=list(scopes),
                                                                     subject=email)

    def user_credentials(self, email: str, scopes=None):
        if self._client is None:
            self._client = self.control.create_oauth_client(project_id=self.project)
        refresh = self.control.issue_refresh_token(self._client["clientId"], email, scopes=scopes)
        return user_credentials.Credentials(token=None, refresh_token=refresh,
                                            client_id=self._client["clientId"],
                                            client_secret=self._client["clientSecret"],
                                            token_uri=self.control.token_uri)

    def for_user(self, email: str):
        """A service acting as `email` through domain-wide delegation."""
        return self.service(self.sa_credentials(email))

    def close(self) -> None:
        self._stack.close()
