"""Which transport a GmailClient's single calls take: the event loop's pool, or httplib2 where
httplib2 would go through a proxy (the pool speaks to the endpoint directly only)."""

from __future__ import annotations

import pytest

from mailwatch.config import GmailSettings
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.transport import _request_bytes, loop_transport_for

GMAIL = "https://gmail.googleapis.com/"


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_proxy_calls_go_on_the_event_loop():
    assert loop_transport_for(GMAIL, timeout=30) is not None
    client = GmailClient(GmailSettings(api_endpoint=GMAIL))
    try:
        assert client.transport == "event loop"
    finally:
        client.close()


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_a_proxy_for_the_endpoint_keeps_httplib2(monkeypatch, variable):
    monkeypatch.setenv(variable, "http://proxy.internal:3128")
    assert loop_transport_for(GMAIL, timeout=30) is None
    client = GmailClient(GmailSettings(api_endpoint=GMAIL))
    try:
        assert client.transport == "httplib2"
    finally:
        client.close()


def test_a_proxy_the_endpoint_bypasses_or_of_another_scheme_does_not_count(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.googleapis.com")
    assert loop_transport_for(GMAIL, timeout=30) is not None
    monkeypatch.delenv("NO_PROXY")
    assert loop_transport_for("http://127.0.0.1:8080/", timeout=30) is not None  # only http_proxy would


def test_a_header_cannot_smuggle_a_line():
    with pytest.raises(ValueError, match="line break"):
        _request_bytes("GET", "/", "gmail.googleapis.com", {"x-goog": "a\r\nhost: evil"}, None)
