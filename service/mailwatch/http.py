"""The service's plain-HTTP side: Prometheus /metrics, /healthz, and the optional
Pub/Sub push endpoint. gRPC stays the API; this is for operators and Pub/Sub."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailwatch.clock import Clock
from mailwatch.config import HttpSettings, PushSettings
from mailwatch.fleet_metrics import FleetMetrics
from mailwatch.ingest.push import DEFAULT_PATH, PushAuth, create_push_app
from mailwatch.store.db import Sessions


FLEET_METRICS = web.AppKey("fleet_metrics", FleetMetrics)


async def _metrics(request: web.Request) -> web.Response:
    fleet = request.app.get(FLEET_METRICS)
    if fleet is not None:
        await fleet.refresh()
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_http_app(
    push: PushSettings,
    sessions: Sessions,
    clock: Clock,
    on_marked_due: Callable[[], None] | None = None,
    tenant_audiences=None,
) -> web.Application:
    if push.enabled:
        auth = None
        if push.verify_token:
            auth = PushAuth(
                audience=push.audience,
                service_account_email=push.service_account_email,
                certs_url=push.certs_url,
                issuers=push.issuers,
                tenant_audiences=tenant_audiences,
            )
        app = create_push_app(sessions, auth=auth, path=DEFAULT_PATH, clock=clock, on_marked_due=on_marked_due,
                              accept_unwrapped=push.accept_unwrapped)
    else:
        app = web.Application()
    app[FLEET_METRICS] = FleetMetrics(sessions, clock)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


async def start_http(app: web.Application, settings: HttpSettings) -> tuple[web.AppRunner, int]:
    """Serve `app` on the section's HOST:PORT (port 0 picks one); returns the runner and the bound port."""
    host, _, port = settings.listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # aiohttp exposes no public accessor
    return runner, bound
