"""The `mailwatch` command line.

  serve       run the gRPC service (and its workers)
  migrate     apply database migrations
  tenants     create / list tenants
  api-keys    create / list / revoke a tenant's API keys
  gmail-sim   run the Gmail API simulator (the lab, mailwatch-devstack)
  dev         run a complete local stack until Ctrl-C (the lab, likewise)
  secret-key  print a fresh key for MAILWATCH_SECRET_KEYS
  rotate-secrets  re-encrypt stored credentials under the first MAILWATCH_SECRET_KEYS key
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from mailwatch.config import ConfigError, Settings
from mailwatch.lab_commands import add_lab_commands


def _settings(args: argparse.Namespace, **extra) -> Settings:
    return Settings.from_env(database_url=getattr(args, "database_url", None), **extra)



def cmd_serve(args: argparse.Namespace) -> int:
    from mailwatch import event_loop
    from mailwatch.server import serve

    settings = _settings(args, listen=args.listen, role=args.role)
    return event_loop.run(settings.event_loop, serve, settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    from mailwatch.store.migrate import downgrade, upgrade

    settings = _settings(args)
    if args.downgrade:
        downgrade(settings.sqlalchemy_url, args.downgrade, secret_keys=settings.secret_keys)
        print(f"downgraded to {args.downgrade}")
    else:
        upgrade(settings.sqlalchemy_url, secret_keys=settings.secret_keys)
        print("database is at the latest schema")
    return 0


async def _with_database(settings: Settings, work):
    """`work(sessions)` on a database of its own, closed afterwards."""
    from mailwatch.store.db import create_engine, session_factory

    engine = create_engine(settings.sqlalchemy_url)
    try:
        return await work(session_factory(engine))
    finally:
        await engine.dispose()


def cmd_tenants(args: argparse.Namespace) -> int:
    from mailwatch.store import tenants

    settings = _settings(args)
    if args.action == "google-settings":
        from mailwatch.google_settings_cli import cmd_google_settings

        return cmd_google_settings(args, settings, _with_database)
    if args.action == "limits":
        from mailwatch.tenant_limits_cli import cmd_limits

        return cmd_limits(args, settings, _with_database)
    if args.action == "create":
        tenant = asyncio.run(_with_database(settings, lambda db: tenants.add_tenant(db, args.name)))
        print(f"created tenant {tenant.name} ({tenant.id})")
    else:
        for tenant in asyncio.run(_with_database(settings, tenants.tenant_page)):
            print(f"{tenant.id}  {tenant.name}  created {tenant.created:%Y-%m-%d %H:%M:%S}Z")
    return 0


def cmd_api_keys(args: argparse.Namespace) -> int:
    import uuid

    from mailwatch.domain.errors import InvalidArgument, FieldViolation
    from mailwatch.store import api_keys, tenants

    settings = _settings(args)
    if args.action == "create":
        async def create(db):
            return await api_keys.issue_api_key(db, await tenants.resolve_tenant(db, name=args.tenant))

        key, plaintext = asyncio.run(_with_database(settings, create))
        print(f"API key {key.id} for tenant {args.tenant} (shown once, store it now):", file=sys.stderr)
        print(plaintext)
    elif args.action == "list":
        async def list_keys(db):
            return await api_keys.api_key_page(db, await tenants.resolve_tenant(db, name=args.tenant))

        for key in asyncio.run(_with_database(settings, list_keys)):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            print(f"{key.id}  {key.prefix}…  {state}")
    else:
        try:
            key_id = uuid.UUID(args.id)
        except ValueError:
            raise InvalidArgument([FieldViolation("id", "must be an API key id (a UUID)")]) from None
        key = asyncio.run(_with_database(settings, lambda db: api_keys.revoke_key(db, key_id)))
        print(f"revoked API key {key.id}")
    return 0


def cmd_secret_key(args: argparse.Namespace) -> int:
    from mailwatch.secrets import generate_key

    print(generate_key())
    return 0


def cmd_rotate_secrets(args: argparse.Namespace) -> int:
    """Re-encrypt every stored credential under the first key: a tenant's key or OAuth
    client is one row however many mailboxes use it; OAuth mailboxes' refresh tokens are
    their own. Then the old key can leave MAILWATCH_SECRET_KEYS."""
    from mailwatch.secrets import SecretBox
    from mailwatch.store import sealed_credentials

    settings = _settings(args)
    box = SecretBox(settings.secret_keys)
    rows, tokens, unreadable = asyncio.run(_with_database(settings, lambda db: sealed_credentials.rotate_all(db, box)))
    print(f"re-encrypted {rows} credential row(s) and {tokens} refresh token(s) under the first key"
          + (f"; {unreadable} no configured key opens were left as they are" if unreadable else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailwatch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database-url", help="Postgres URL (default: $MAILWATCH_DATABASE_URL)")
        return p

    serve = with_db(sub.add_parser("serve", help="run the gRPC service and its workers"))
    serve.add_argument("--listen", help="HOST:PORT to listen on (default: $MAILWATCH_LISTEN or 127.0.0.1:50051)")
    serve.add_argument("--role", choices=("all", "api", "ingest", "sync"),
                       help="what this replica runs besides the API: all (default: $MAILWATCH_ROLE or all), api "
                            "(no workers), ingest (Pub/Sub pull), sync (sync, renewal, fallback poll, pruning)")
    serve.set_defaults(func=cmd_serve)

    migrate = with_db(sub.add_parser("migrate", help="apply database migrations"))
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base) instead")
    migrate.set_defaults(func=cmd_migrate)

    tenants = sub.add_parser("tenants", help="manage tenants")
    tenants_sub = tenants.add_subparsers(dest="action", required=True)
    with_db(tenants_sub.add_parser("create", help="create a tenant")).add_argument("name")
    with_db(tenants_sub.add_parser("list", help="list tenants"))
    from mailwatch.google_settings_cli import add_parser as add_google_settings_parser
    add_google_settings_parser(tenants_sub, with_db)
    from mailwatch.tenant_limits_cli import add_parser as add_limits_parser
    add_limits_parser(tenants_sub, with_db)
    tenants.set_defaults(func=cmd_tenants)

    keys = sub.add_parser("api-keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    with_db(keys_sub.add_parser("create", help="create an API key (printed once)")).add_argument("--tenant", required=True)
    with_db(keys_sub.add_parser("list", help="list a tenant's API keys")).add_argument("--tenant", required=True)
    with_db(keys_sub.add_parser("revoke", help="revoke an API key")).add_argument("id")
    keys.set_defaults(func=cmd_api_keys)

    add_lab_commands(sub)

    secret = sub.add_parser("secret-key", help="print a new key for MAILWATCH_SECRET_KEYS")
    secret.set_defaults(func=cmd_secret_key)
    rotate = with_db(sub.add_parser(
        "rotate-secrets", help="re-encrypt stored credentials under the first MAILWATCH_SECRET_KEYS key"))
    rotate.set_defaults(func=cmd_rotate_secrets)
    from mailwatch.pubsub_setup import add_parser as add_pubsub_parser
    add_pubsub_parser(sub)
    from mailwatch.tail import add_parser as add_tail_parser
    add_tail_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mailwatch.domain.errors import MailwatchError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except ConfigError as exc:
        print(f"mailwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except MailwatchError as exc:
        print(f"mailwatch: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
