"""Settings in sections, read from the same MAILWATCH_* variables as ever, checked in one place."""

from __future__ import annotations

import pytest

from mailwatch.config import ENV_SETTINGS, ConfigError, Settings

DATABASE = {"MAILWATCH_DATABASE_URL": "postgresql://u@h/db"}

# The variables users' deployments and the Helm chart set, as they were before the
# settings had sections. A rename breaks them: this list changes only by addition.
VARIABLES = """
    DATABASE_URL SECRET_KEYS OPERATOR_TOKEN LISTEN GRACE_SECONDS GMAIL_API_ENDPOINT GOOGLE_TOKEN_URI
    PUBSUB_TOPIC PUBSUB_SUBSCRIPTIONS LOG_FORMAT LOG_LEVEL SYNC_ENABLED SYNC_CONCURRENCY GMAIL_CALLS_PER_USER GMAIL_TENANT_UNITS_PER_MINUTE
    SYNC_LEASE_SECONDS SYNC_BACKFILL_UNITS_PER_MINUTE RENEW_ENABLED RENEW_LOOP_SECONDS WATCH_EXPIRING_HOURS POLL_ENABLED POLL_INTERVAL_SECONDS
    INGEST_ENABLED INGEST_BATCH_SIZE INGEST_PULL_TIMEOUT INGEST_SOURCES_REFRESH_SECONDS RETENTION_HOURS
    PRUNE_ENABLED STREAM_POLL_SECONDS HTTP_LISTEN PUSH_ENABLED PUSH_VERIFY_TOKEN PUSH_AUDIENCE
    PUSH_SERVICE_ACCOUNT_EMAIL PUSH_CERTS_URL PUSH_ISSUERS TLS_CERT_FILE TLS_KEY_FILE TLS_CLIENT_CA_FILE
    PUSH_ACCEPT_UNWRAPPED ROLE INGEST_CONCURRENCY
    LIMITS_STREAMS_PER_TENANT LIMITS_RPCS_PER_SECOND_PER_KEY LIMITS_REGISTRATIONS_PER_MINUTE_PER_TENANT LIMITS_STREAM_LEASE_SECONDS
    EVENT_LOOP
""".split()


def test_the_variables_are_exactly_the_ones_deployments_set():
    names = [setting.env for setting in ENV_SETTINGS]
    assert len(names) == len(set(names)), "two settings read the same variable"
    assert sorted(names) == sorted(f"MAILWATCH_{name}" for name in VARIABLES)


@pytest.mark.parametrize(
    ("variable", "raw", "path", "value"),
    [
        ("MAILWATCH_SYNC_LEASE_SECONDS", "7", ("sync", "lease_seconds"), 7.0),
        ("MAILWATCH_SYNC_ENABLED", "off", ("sync", "enabled"), False),
        ("MAILWATCH_WATCH_EXPIRING_HOURS", "12", ("renew", "watch_expiring_hours"), 12.0),
        ("MAILWATCH_GOOGLE_TOKEN_URI", "http://sim/token", ("gmail", "token_uri"), "http://sim/token"),
        ("MAILWATCH_GMAIL_CALLS_PER_USER", "3", ("gmail", "calls_per_user"), 3),
        ("MAILWATCH_RETENTION_HOURS", "2.5", ("prune", "retention_hours"), 2.5),
        ("MAILWATCH_INGEST_SOURCES_REFRESH_SECONDS", "9", ("ingest", "sources_refresh_seconds"), 9.0),
        ("MAILWATCH_PUBSUB_SUBSCRIPTIONS", "a, b,", ("pubsub", "subscriptions"), ("a", "b")),
        ("MAILWATCH_HTTP_LISTEN", "0.0.0.0:8080", ("http", "listen"), "0.0.0.0:8080"),
        ("MAILWATCH_TLS_CLIENT_CA_FILE", "", ("tls", "client_ca_file"), ""),
        ("MAILWATCH_GRACE_SECONDS", "3", ("grace_seconds",), 3.0),
        ("MAILWATCH_EVENT_LOOP", "asyncio", ("event_loop",), "asyncio"),
    ],
)
def test_each_variable_reaches_its_section(variable, raw, path, value):
    node = Settings.from_env({**DATABASE, variable: raw})
    for part in path:
        node = getattr(node, part)
    assert node == value


def test_overrides_win_and_none_means_unset():
    environ = {**DATABASE, "MAILWATCH_LISTEN": "0.0.0.0:1", "MAILWATCH_SYNC_LEASE_SECONDS": "9"}
    settings = Settings.from_env(environ, listen="127.0.0.1:2", sync_lease_seconds=None, watch_expiring_hours=5.0)
    assert settings.listen == "127.0.0.1:2"
    assert settings.sync.lease_seconds == 9.0
    assert settings.renew.watch_expiring_hours == 5.0
    with pytest.raises(TypeError, match="sync_lease"):
        Settings.from_env(DATABASE, sync_lease=1)


def test_the_environment_of_settings_reads_back_to_the_same_settings():
    settings = Settings.from_env(
        DATABASE, secret_keys=("k1", "k2"), sync_enabled=False, push_issuers=("a", "b"), retention_hours=1.5,
        http_listen="127.0.0.1:0", tls_cert_file="c.pem", tls_key_file="k.pem",
    )
    environment = settings.environment()
    assert set(environment) == {setting.env for setting in ENV_SETTINGS}
    assert environment["MAILWATCH_SYNC_ENABLED"] == "false"
    assert Settings.from_env(environment) == settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MAILWATCH_DATABASE_URL": ""}, "MAILWATCH_DATABASE_URL is required"),
        ({"MAILWATCH_LISTEN": "50051"}, "MAILWATCH_LISTEN must be HOST:PORT, got '50051'"),
        ({"MAILWATCH_GRACE_SECONDS": "-1"}, "MAILWATCH_GRACE_SECONDS must not be negative"),
        ({"MAILWATCH_EVENT_LOOP": "trio"}, "MAILWATCH_EVENT_LOOP must be uvloop or asyncio, got 'trio'"),
        ({"MAILWATCH_SYNC_CONCURRENCY": "0"}, "MAILWATCH_SYNC_CONCURRENCY must be positive"),
        ({"MAILWATCH_WATCH_EXPIRING_HOURS": "0"}, "MAILWATCH_WATCH_EXPIRING_HOURS must be positive"),
        ({"MAILWATCH_RETENTION_HOURS": "-2"}, "MAILWATCH_RETENTION_HOURS must be positive"),
        ({"MAILWATCH_GMAIL_CALLS_PER_USER": "0"}, "MAILWATCH_GMAIL_CALLS_PER_USER must be positive"),
        ({"MAILWATCH_GMAIL_TENANT_UNITS_PER_MINUTE": "-1"}, "MAILWATCH_GMAIL_TENANT_UNITS_PER_MINUTE must not be negative"),
        ({"MAILWATCH_STREAM_POLL_SECONDS": "0"}, "MAILWATCH_STREAM_POLL_SECONDS must be positive"),
        ({"MAILWATCH_INGEST_BATCH_SIZE": "1001"}, "MAILWATCH_INGEST_BATCH_SIZE must be at most 1000"),
        ({"MAILWATCH_SYNC_ENABLED": "maybe"}, "MAILWATCH_SYNC_ENABLED must be true or false, got 'maybe'"),
        ({"MAILWATCH_POLL_INTERVAL_SECONDS": "soon"}, "MAILWATCH_POLL_INTERVAL_SECONDS must be a number"),
        ({"MAILWATCH_LOG_FORMAT": "xml"}, "MAILWATCH_LOG_FORMAT must be json or text, got 'xml'"),
        ({"MAILWATCH_LOG_LEVEL": "LOUD"}, "MAILWATCH_LOG_LEVEL must be DEBUG, INFO"),
        ({"MAILWATCH_HTTP_LISTEN": "8080"}, "MAILWATCH_HTTP_LISTEN must be HOST:PORT, got '8080'"),
        ({"MAILWATCH_PUSH_ENABLED": "true"}, "MAILWATCH_PUSH_ENABLED needs MAILWATCH_HTTP_LISTEN"),
        (
            {"MAILWATCH_PUSH_ENABLED": "true", "MAILWATCH_HTTP_LISTEN": "h:1"},
            "push needs MAILWATCH_PUSH_AUDIENCE and MAILWATCH_PUSH_SERVICE_ACCOUNT_EMAIL "
            "(or MAILWATCH_PUSH_VERIFY_TOKEN=false",
        ),
        (
            {"MAILWATCH_PUSH_ENABLED": "true", "MAILWATCH_HTTP_LISTEN": "h:1", "MAILWATCH_PUSH_AUDIENCE": "a",
             "MAILWATCH_PUSH_SERVICE_ACCOUNT_EMAIL": "s@p.iam.gserviceaccount.com", "MAILWATCH_PUSH_ISSUERS": ","},
            "MAILWATCH_PUSH_ISSUERS must name at least one token issuer",
        ),
        ({"MAILWATCH_TLS_KEY_FILE": "k.pem"}, "MAILWATCH_TLS_CERT_FILE and MAILWATCH_TLS_KEY_FILE go together"),
        ({"MAILWATCH_TLS_CLIENT_CA_FILE": "ca.pem"}, "MAILWATCH_TLS_CLIENT_CA_FILE (mutual TLS) needs"),
    ],
)
def test_a_bad_value_stops_start_up_with_one_line_naming_its_variable(environ, message):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**DATABASE, **environ})
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_push_without_token_verification_needs_no_audience():
    settings = Settings.from_env(DATABASE, push_enabled=True, http_listen="h:1", push_verify_token=False)
    assert settings.push.enabled and not settings.push.audience


@pytest.mark.parametrize(
    ("role", "running"),
    [
        ("all", {"sync", "renew", "poll", "prune", "ingest"}),
        ("api", set()),
        ("ingest", {"ingest"}),
        ("sync", {"sync", "renew", "poll", "prune"}),
    ],
)
def test_a_role_runs_its_workers_only_and_each_flag_still_switches_its_worker_off(role, running):
    workers = ("sync", "renew", "poll", "prune", "ingest")
    settings = Settings.from_env({**DATABASE, "MAILWATCH_ROLE": role})
    assert {name for name in workers if getattr(settings, name).enabled} == running
    assert Settings.from_env(DATABASE, role=role) == settings  # `mailwatch serve --role`
    flagged = Settings.from_env({**DATABASE, "MAILWATCH_ROLE": role, "MAILWATCH_POLL_ENABLED": "false"})
    assert {name for name in workers if getattr(flagged, name).enabled} == running - {"poll"}
    assert Settings.from_env(settings.environment()) == settings


def test_an_unknown_role_stops_start_up_naming_the_roles():
    with pytest.raises(ConfigError, match="MAILWATCH_ROLE must be one of all, api, ingest, sync, got 'worker'"):
        Settings.from_env({**DATABASE, "MAILWATCH_ROLE": "worker"})


def test_ingest_concurrency_is_a_setting():
    assert Settings.from_env(DATABASE).ingest.concurrency == 4
    assert Settings.from_env({**DATABASE, "MAILWATCH_INGEST_CONCURRENCY": "2"}).ingest.concurrency == 2
    with pytest.raises(ConfigError, match="MAILWATCH_INGEST_CONCURRENCY must be positive"):
        Settings.from_env({**DATABASE, "MAILWATCH_INGEST_CONCURRENCY": "0"})
