"""`mailwatch tenants google-settings set|show|clear`: a tenant's Google settings from the CLI.

Talks to the database directly, like `mailwatch tenants` and `api-keys`; the
secret key file is read from disk (never from the command line, where it
would land in shell history and `ps`), sealed with MAILWATCH_SECRET_KEYS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def add_parser(tenants_sub, with_db) -> None:
    google = tenants_sub.add_parser("google-settings", help="a tenant's default Google credentials and Pub/Sub topic")
    actions = google.add_subparsers(dest="google_action", required=True)
    set_ = with_db(actions.add_parser("set", help="set (replace) a tenant's Google settings"))
    set_.add_argument("--tenant", required=True, help="tenant name")
    creds = set_.add_mutually_exclusive_group(required=True)
    creds.add_argument("--service-account-key", metavar="FILE",
                       help="service-account JSON key with domain-wide delegation")
    creds.add_argument("--oauth-client-id", metavar="ID", help="OAuth client id (secret from --oauth-client-secret-file)")
    set_.add_argument("--oauth-client-secret-file", metavar="FILE", help="file holding the OAuth client secret")
    set_.add_argument("--project-id", default="", help="the credentials' Google project (required for OAuth clients)")
    set_.add_argument("--topic", required=True, help="projects/<project>/topics/<name>, in the credentials' project")
    set_.add_argument("--subscription", default="", help="pull subscription of the topic (omit for push delivery)")
    set_.add_argument("--push-audience", default="", help="OIDC audience of the tenant's push subscription")
    show = with_db(actions.add_parser("show", help="show a tenant's Google settings (never the secrets)"))
    show.add_argument("--tenant", required=True)
    clear = with_db(actions.add_parser("clear", help="remove a tenant's Google settings"))
    clear.add_argument("--tenant", required=True)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _credential(args: argparse.Namespace):
    from mailwatch.domain.errors import FieldViolation, InvalidArgument
    from mailwatch.domain.models import OAuthCredential, ServiceAccountCredential

    if args.service_account_key:
        try:
            info = json.loads(_read(args.service_account_key))
        except (OSError, ValueError) as exc:
            raise InvalidArgument([FieldViolation("--service-account-key", f"cannot read a JSON key: {exc}")]) from None
        return ServiceAccountCredential(info=info, subject="")
    if not args.oauth_client_secret_file:
        raise InvalidArgument([FieldViolation("--oauth-client-secret-file", "required with --oauth-client-id")])
    return OAuthCredential(args.oauth_client_id, _read(args.oauth_client_secret_file).strip(), "")


def _describe(settings, status=None) -> str:
    lines = [
        f"tenant        {settings.tenant_id}",
        f"project       {settings.project_id}",
        f"credentials   {settings.credential_kind.value} {settings.credential_id}",
        f"topic         {settings.pubsub_topic}",
        f"subscription  {settings.pubsub_subscription or '(push delivery)'}",
    ]
    if settings.push_audience:
        lines.append(f"push audience {settings.push_audience}")
    if status is not None and status.ok is not None:
        health = "ok" if status.ok else f"FAILING ({status.consecutive_failures}x): {status.last_error}"
        lines.append(f"pull status   {health}")
    return "\n".join(lines)


def cmd_google_settings(args: argparse.Namespace, settings, with_database) -> int:
    from mailwatch.lifecycle.google_settings import GoogleSettingsInput, save_google_settings
    from mailwatch.secrets import SecretBox
    from mailwatch.store import google_settings as store
    from mailwatch.store import tenants

    if args.google_action == "set":
        box = SecretBox(settings.secret_keys)
        wanted = GoogleSettingsInput(
            credential=_credential(args), pubsub_topic=args.topic, project_id=args.project_id,
            pubsub_subscription=args.subscription, push_audience=args.push_audience,
        )

        async def save(db):
            return await save_google_settings(db, box, await tenants.resolve_tenant(db, name=args.tenant), wanted)

        print(_describe(asyncio.run(with_database(settings, save))))
    elif args.google_action == "show":
        async def show(db):
            return await store.settings_with_status(db, await tenants.resolve_tenant(db, name=args.tenant))

        print(_describe(*asyncio.run(with_database(settings, show))))
    else:
        async def clear(db):
            return await store.remove_settings(db, await tenants.resolve_tenant(db, name=args.tenant))

        cleared = asyncio.run(with_database(settings, clear))
        print("cleared" if cleared else "the tenant had no Google settings", file=sys.stderr)
    return 0
