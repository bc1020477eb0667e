"""`mailwatch tenants limits set|show`: a tenant's own limits on mailwatch's resources from the CLI.

Talks to the database directly, like `mailwatch tenants` and `api-keys`
(AdminService.SetTenantLimits / GetTenantLimits do the same over gRPC).
`set` replaces the tenant's own limits: a limit left out is the
deployment's again (MAILWATCH_LIMITS_*), 0 is no limit. Running servers
read the change within a minute.
"""

from __future__ import annotations

import argparse
import asyncio

from mailwatch.domain.models import TenantLimits

_FLAGS = {"streams": "--streams", "rpcs_per_second": "--rpcs-per-second",
          "registrations_per_minute": "--registrations-per-minute"}


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative (0: no limit; leave it out: the deployment's)")
    return number


def add_parser(tenants_sub, with_db) -> None:
    limits = tenants_sub.add_parser("limits", help="a tenant's own limits on streams, call rate and registrations")
    actions = limits.add_subparsers(dest="limits_action", required=True)
    set_ = with_db(actions.add_parser("set", help="set (replace) a tenant's own limits; left out: the deployment's"))
    set_.add_argument("--tenant", required=True, help="tenant name")
    set_.add_argument("--streams", type=_limit, help="change streams open at once, per server (0: no limit)")
    set_.add_argument("--rpcs-per-second", type=_limit, help="calls each API key makes a second, per server")
    set_.add_argument("--registrations-per-minute", type=_limit, help="mailboxes registered a minute, per server")
    show = with_db(actions.add_parser("show", help="show the limits in force for a tenant"))
    show.add_argument("--tenant", required=True)


def cmd_limits(args: argparse.Namespace, settings, with_database) -> int:
    from mailwatch.store import tenant_limits, tenants
    from mailwatch.usage_limits import effective

    async def run(db) -> TenantLimits:
        tenant_id = await tenants.resolve_tenant(db, name=args.tenant)
        if args.limits_action == "set":
            return await tenant_limits.save_limits(db, tenant_id, TenantLimits(
                streams=args.streams, rpcs_per_second=args.rpcs_per_second,
                registrations_per_minute=args.registrations_per_minute))
        return await tenant_limits.own_limits(db, tenant_id)

    own = asyncio.run(with_database(settings, run))
    in_force = effective(settings.limits, own)
    for field, flag in _FLAGS.items():
        source = "own" if getattr(own, field) is not None else "deployment's"
        value = getattr(in_force, field)
        print(f"{flag.removeprefix('--')}: {value if value else 'no limit'} ({source})")
    return 0
