"""Every violation the validators report, table-driven, plus the normalised results."""

from __future__ import annotations

import json
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import duration_pb2

from mailwatch.api import tokens
from mailwatch.api.validation import admin as admin_validation
from mailwatch.api.validation import mailboxes as mailbox_validation
from mailwatch.domain.errors import InvalidArgument, InvalidCursor
from mailwatch.domain.models import EventType, LabelFilterBehavior, MailboxState, OAuthCredential, TenantDefaultCredential
from mailwatch.v1 import admin_service_pb2 as admin
from mailwatch.v1 import mailbox_service_pb2 as mbx
from mailwatch.v1 import resources_pb2 as res

def _pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


PRIVATE_KEY = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
SA_KEY = json.dumps(
    {
        "type": "service_account",
        "client_email": "robot@project.iam.gserviceaccount.com",
        "private_key": PRIVATE_KEY,
        "token_uri": "https://oauth2.googleapis.com/token",
    }
)


def sa_key_with(private_key: str) -> str:
    return json.dumps({**json.loads(SA_KEY), "private_key": private_key})


def _flip_one_byte(pem: str) -> str:
    """The PEM with one base64 character in the key body changed."""
    lines = pem.splitlines(keepends=True)
    body = lines[5]
    lines[5] = ("B" if body[10] != "B" else "C").join((body[:10], body[11:]))
    return "".join(lines)
OAUTH = mbx.OAuthCredentials(client_id="cid", client_secret="secret", refresh_token="rt")
UUID = str(uuid.uuid4())


def register(**overrides) -> mbx.RegisterMailboxRequest:
    values = dict(email_address="alice@example.com", oauth=OAUTH)
    values.update(overrides)
    return mbx.RegisterMailboxRequest(**values)


def sa(**fields) -> mbx.ServiceAccountCredentials:
    return mbx.ServiceAccountCredentials(**{"json_key": SA_KEY, **fields})


def sa_key_without(field):
    info = json.loads(SA_KEY)
    del info[field]
    return json.dumps(info)


def bad_page_token():
    return tokens.encode_page_token("x", fingerprint="other request")


CASES = [
    # (validator, request, expected [(field, description fragment)])
    ("register", register(email_address=""), [("email_address", "required")]),
    ("register", register(email_address="alice"), [("email_address", "email address")]),
    ("register", register(email_address="alice@"), [("email_address", "email address")]),
    ("register", register(email_address="a b@example.com"), [("email_address", "email address")]),
    ("register", register(email_address="alice@localhost"), [("email_address", "email address")]),
    ("register", register(email_address="a@@example.com"), [("email_address", "email address")]),
    ("register", register(email_address="a" * 250 + "@example.com"), [("email_address", "email address")]),
    ("register", register(label_ids=[""]), [("label_ids[0]", "must not be empty")]),
    ("register", register(label_ids=["INBOX", "   "]), [("label_ids[1]", "must not be empty")]),
    ("register", register(label_ids=["x" * 257]), [("label_ids[0]", "at most 256")]),
    ("register", register(label_ids=[" INBOX"]), [("label_ids[0]", "whitespace")]),
    ("register", register(label_ids=["IN\nBOX"]), [("label_ids[0]", "control")]),
    ("register", register(label_ids=["INBOX", "SENT", "INBOX"]), [("label_ids[2]", "duplicate")]),
    ("register", register(label_ids=[f"L{i}" for i in range(101)]), [("label_ids", "at most 100")]),
    ("register", register(label_filter_behavior=7), [("label_filter_behavior", "unknown")]),
    ("register", register(oauth=mbx.OAuthCredentials()), [("oauth.refresh_token", "required")]),
    ("register", register(oauth=None, service_account=sa(json_key="")), [("service_account.json_key", "required")]),
    ("register", register(oauth=None, service_account=sa(json_key="{not json")), [("service_account.json_key", "must be JSON")]),
    ("register", register(oauth=None, service_account=sa(json_key="[1]")), [("service_account.json_key", "JSON object")]),
    (
        "register",
        register(oauth=None, service_account=sa(json_key=json.dumps({**json.loads(SA_KEY), "type": "authorized_user"}))),
        [("service_account.json_key", "service account key")],
    ),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_without("client_email"))), [("service_account.json_key", "client_email")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_without("private_key"))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_without("token_uri"))), [("service_account.json_key", "token_uri")]),
    ("register", register(oauth=None, service_account=sa(json_key=" " + "x" * 70000)), [("service_account.json_key", "at most")]),
    # Nested past the JSON parser's recursion limit (RecursionError, not ValueError).
    ("register", register(oauth=None, service_account=sa(json_key="[" * 30000)), [("service_account.json_key", "nested")]),
    ("register", register(oauth=None, service_account=sa(json_key='{"a":' * 10000)), [("service_account.json_key", "nested")]),
    # Well-shaped keys whose private key cannot sign: refused at registration.
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_with("not a PEM"))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_with(_flip_one_byte(PRIVATE_KEY)))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_with(PRIVATE_KEY.replace("\n", "\n\x00", 3)))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_with("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(json_key=sa_key_with(_pem(ec.generate_private_key(ec.SECP256R1()))))), [("service_account.json_key", "private_key")]),
    ("register", register(oauth=None, service_account=sa(subject="not-an-email")), [("service_account.subject", "email address")]),
    ("register", register(oauth=mbx.OAuthCredentials(client_secret="s", refresh_token="r")), [("oauth.client_id", "required")]),
    ("register", register(oauth=mbx.OAuthCredentials(client_id="c", refresh_token="r")), [("oauth.client_secret", "required")]),
    ("register", register(oauth=mbx.OAuthCredentials(client_id="c", client_secret="s", refresh_token=" ")), [("oauth.refresh_token", "required")]),
    ("register", register(oauth=mbx.OAuthCredentials(client_id="c" * 5000, client_secret="s", refresh_token="r")), [("oauth.client_id", "at most")]),
    (
        "register",
        mbx.RegisterMailboxRequest(email_address="nope", label_ids=["A", "A"]),
        [("email_address", "email address"), ("label_ids[1]", "duplicate")],
    ),
    ("mailbox_id", "", [("mailbox_id", "required")]),
    ("mailbox_id", "not-a-uuid", [("mailbox_id", "UUID")]),
    ("list", mbx.ListMailboxesRequest(page_size=-1), [("page_size", "negative")]),
    ("list", mbx.ListMailboxesRequest(page_token="%%%"), [("page_token", "not valid")]),
    ("list", mbx.ListMailboxesRequest(page_token=bad_page_token()), [("page_token", "different parameters")]),
    ("list", mbx.ListMailboxesRequest(states=[res.MAILBOX_STATE_UNSPECIFIED]), [("states[0]", "must be")]),
    ("list", mbx.ListMailboxesRequest(states=[res.MAILBOX_STATE_ACTIVE, 42]), [("states[1]", "must be")]),
    ("stream", mbx.StreamChangesRequest(mailbox_ids=[UUID, "nope"]), [("mailbox_ids[1]", "UUID")]),
    ("stream", mbx.StreamChangesRequest(mailbox_ids=[UUID] * 1001), [("mailbox_ids", "at most 1000")]),
    ("stream", mbx.StreamChangesRequest(event_types=[res.EVENT_TYPE_UNSPECIFIED]), [("event_types[0]", "known event type")]),
    ("stream", mbx.StreamChangesRequest(event_types=[99]), [("event_types[0]", "known event type")]),
    ("stream", mbx.StreamChangesRequest(max_batch_size=-5), [("max_batch_size", "negative")]),
    ("stream", mbx.StreamChangesRequest(heartbeat_interval=duration_pb2.Duration(seconds=-1)), [("heartbeat_interval", "non-negative")]),
    ("stream", mbx.StreamChangesRequest(start_position=9), [("start_position", "unknown")]),
    (
        "stream",
        mbx.StreamChangesRequest(cursor=b"junk!", max_batch_size=-1),
        [("max_batch_size", "negative"), ("cursor", "not a valid mailwatch cursor")],
    ),
    ("create_tenant", admin.CreateTenantRequest(name=""), [("name", "required")]),
    ("create_tenant", admin.CreateTenantRequest(name="-acme"), [("name", "1-63 characters")]),
    ("create_tenant", admin.CreateTenantRequest(name="a" * 64), [("name", "1-63 characters")]),
    ("create_tenant", admin.CreateTenantRequest(name="acme corp"), [("name", "1-63 characters")]),
    ("create_api_key", admin.CreateApiKeyRequest(), [("tenant", "required")]),
    ("create_api_key", admin.CreateApiKeyRequest(tenant_id="x"), [("tenant_id", "UUID")]),
    ("create_api_key", admin.CreateApiKeyRequest(tenant_name="bad name"), [("tenant_name", "1-63")]),
    ("list_api_keys", admin.ListApiKeysRequest(tenant_name="acme", page_size=-2), [("page_size", "negative")]),
    ("list_api_keys", admin.ListApiKeysRequest(), [("tenant", "required")]),
    ("list_tenants", admin.ListTenantsRequest(page_size=-1), [("page_size", "negative")]),
    ("list_tenants", admin.ListTenantsRequest(page_token=bad_page_token()), [("page_token", "different parameters")]),
    ("revoke", admin.RevokeApiKeyRequest(api_key_id="123"), [("api_key_id", "UUID")]),
    ("send_test_event", mbx.SendTestEventRequest(note="a\x00b"), [("note", "NUL")]),
]

VALIDATORS = {
    "register": mailbox_validation.validate_register_mailbox,
    "mailbox_id": mailbox_validation.validate_mailbox_id,
    "list": mailbox_validation.validate_list_mailboxes,
    "stream": mailbox_validation.validate_stream_changes,
    "create_tenant": admin_validation.validate_create_tenant,
    "create_api_key": admin_validation.validate_create_api_key,
    "list_api_keys": admin_validation.validate_list_api_keys,
    "list_tenants": admin_validation.validate_list_tenants,
    "revoke": admin_validation.validate_revoke_api_key,
    "send_test_event": mailbox_validation.validate_send_test_event,
}


@pytest.mark.parametrize(("validator", "request_", "expected"), CASES, ids=[f"{c[0]}-{c[2][0][0]}-{i}" for i, c in enumerate(CASES)])
def test_violations(validator, request_, expected):
    with pytest.raises(InvalidArgument) as raised:
        VALIDATORS[validator](request_)
    violations = raised.value.violations
    assert [v.field for v in violations] == [field for field, _ in expected]
    for violation, (_, fragment) in zip(violations, expected):
        assert fragment in violation.description


def test_secrets_never_appear_in_violations():
    with pytest.raises(InvalidArgument) as raised:
        mailbox_validation.validate_register_mailbox(
            register(oauth=None, service_account=sa(json_key=json.dumps({"private_key": "TOPSECRET"})))
        )
    assert "TOPSECRET" not in str(raised.value)
    with pytest.raises(InvalidArgument) as raised:
        mailbox_validation.validate_register_mailbox(register(oauth=None, service_account=sa(json_key=sa_key_with("TOPSECRET"))))
    assert "TOPSECRET" not in str(raised.value)


def test_register_oauth_normalises():
    result = mailbox_validation.validate_register_mailbox(register(email_address="  Alice@Example.COM "))
    assert result.email_address == "alice@example.com"
    assert result.label_filter.label_ids == ()
    assert result.label_filter.behavior is LabelFilterBehavior.INCLUDE
    assert result.credential == OAuthCredential("cid", "secret", "rt")


def test_register_service_account_subject_defaults_to_address():
    result = mailbox_validation.validate_register_mailbox(
        register(
            oauth=None,
            service_account=sa(),
            label_ids=["INBOX"],
            label_filter_behavior=res.LABEL_FILTER_BEHAVIOR_EXCLUDE,
        )
    )
    assert result.credential.subject == "alice@example.com"
    assert result.credential.info["client_email"] == "robot@project.iam.gserviceaccount.com"
    assert result.label_filter.behavior is LabelFilterBehavior.EXCLUDE
    explicit = mailbox_validation.validate_register_mailbox(register(oauth=None, service_account=sa(subject="Bob@Example.com")))
    assert explicit.credential.subject == "bob@example.com"


def test_register_without_credentials_means_the_tenants_defaults():
    bare = mailbox_validation.validate_register_mailbox(mbx.RegisterMailboxRequest(email_address="a@example.com"))
    assert bare.credential == TenantDefaultCredential()
    token_only = mailbox_validation.validate_register_mailbox(register(oauth=mbx.OAuthCredentials(refresh_token="rt")))
    assert token_only.credential == TenantDefaultCredential(refresh_token="rt")


def test_behavior_without_labels_is_accepted():
    result = mailbox_validation.validate_register_mailbox(register(label_filter_behavior=res.LABEL_FILTER_BEHAVIOR_EXCLUDE))
    assert result.label_filter == result.label_filter.__class__((), LabelFilterBehavior.EXCLUDE)


@pytest.mark.parametrize(("size", "expected"), [(0, 50), (1, 1), (1000, 1000), (5000, 1000)])
def test_page_size(size, expected):
    assert mailbox_validation.validate_list_mailboxes(mbx.ListMailboxesRequest(page_size=size)).page.page_size == expected


def test_list_page_token_is_bound_to_states_in_any_order():
    first = mailbox_validation.validate_list_mailboxes(
        mbx.ListMailboxesRequest(states=[res.MAILBOX_STATE_ACTIVE, res.MAILBOX_STATE_STOPPED])
    )
    assert first.states == (MailboxState.ACTIVE, MailboxState.STOPPED)
    assert first.page.position is None
    token = tokens.encode_page_token(["t", "id"], fingerprint=first.page.fingerprint)
    again = mailbox_validation.validate_list_mailboxes(
        mbx.ListMailboxesRequest(states=[res.MAILBOX_STATE_STOPPED, res.MAILBOX_STATE_ACTIVE], page_token=token)
    )
    assert again.page.position == ["t", "id"]


def test_stream_defaults():
    query = mailbox_validation.validate_stream_changes(mbx.StreamChangesRequest())
    assert query.start == mailbox_validation.StartKind.NOW and query.after_sequence is None
    assert (query.mailbox_ids, query.event_types) == ((), ())
    assert (query.max_batch_size, query.heartbeat_seconds) == (500, 15.0)


def test_stream_full_request():
    query = mailbox_validation.validate_stream_changes(
        mbx.StreamChangesRequest(
            mailbox_ids=[UUID, UUID.upper()],
            event_types=[res.EVENT_TYPE_MESSAGE_ADDED, res.EVENT_TYPE_MESSAGE_ADDED, res.EVENT_TYPE_RESYNCED],
            cursor=tokens.encode_cursor(41),
            max_batch_size=5000,
            heartbeat_interval=duration_pb2.Duration(seconds=0, nanos=1000),
        )
    )
    assert query.mailbox_ids == (uuid.UUID(UUID),)
    assert query.event_types == (EventType.MESSAGE_ADDED, EventType.RESYNCED)
    assert (query.start, query.after_sequence) == (mailbox_validation.StartKind.CURSOR, 41)
    assert (query.max_batch_size, query.heartbeat_seconds) == (1000, 1.0)


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (mbx.START_POSITION_EARLIEST, mailbox_validation.StartKind.EARLIEST),
        (mbx.START_POSITION_NOW, mailbox_validation.StartKind.NOW),
        (mbx.START_POSITION_UNSPECIFIED, mailbox_validation.StartKind.NOW),
    ],
)
def test_stream_start_positions(position, expected):
    assert mailbox_validation.validate_stream_changes(mbx.StreamChangesRequest(start_position=position)).start == expected


def test_heartbeat_clamped_above():
    query = mailbox_validation.validate_stream_changes(mbx.StreamChangesRequest(heartbeat_interval=duration_pb2.Duration(seconds=3600)))
    assert query.heartbeat_seconds == 300.0


def test_bad_cursor_alone_keeps_its_reason():
    with pytest.raises(InvalidCursor):
        mailbox_validation.validate_stream_changes(mbx.StreamChangesRequest(cursor=b"junk"))


def test_admin_results():
    assert admin_validation.validate_create_tenant(admin.CreateTenantRequest(name="Acme.prod_1")) == "Acme.prod_1"
    tenant_id = uuid.uuid4()
    assert admin_validation.validate_create_api_key(admin.CreateApiKeyRequest(tenant_id=str(tenant_id))).tenant_id == tenant_id
    ref, page = admin_validation.validate_list_api_keys(admin.ListApiKeysRequest(tenant_name="acme", page_size=3))
    assert (ref.tenant_name, page.page_size) == ("acme", 3)
    key_id = uuid.uuid4()
    assert admin_validation.validate_revoke_api_key(admin.RevokeApiKeyRequest(api_key_id=str(key_id))) == key_id
