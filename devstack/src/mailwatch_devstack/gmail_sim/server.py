"""The aiohttp application and `GmailSimulator`, which serves it from a thread.

Routes: `POST /token` (OAuth), `POST /batch` and `/batch/gmail/v1` (batch),
`/_sim/...` (control API), and everything else is a Gmail API call. Any error
leaves as a Gmail-shaped JSON body, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from mailwatch_devstack.gmail_sim import control_api
from mailwatch_devstack.gmail_sim.api import ApiRequest, dispatch
from mailwatch_devstack.gmail_sim.batch import handle_batch
from mailwatch_devstack.gmail_sim.control_api import STATE_KEY
from mailwatch_devstack.gmail_sim.errors import GmailError, OAuthError, backend_error
from mailwatch_devstack.gmail_sim.auth import DEFAULT_PROJECT
from mailwatch_devstack.gmail_sim.oidc import CERTS_PATH, DISCOVERY_PATH, JWKS_PATH
from mailwatch_devstack.gmail_sim.state import SimState

log = logging.getLogger("mailwatch_devstack.gmail_sim")


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except GmailError as error:
        return web.json_response(error.body(), status=error.code, headers=error.headers)
    except OAuthError as error:
        return web.json_response(error.body(), status=error.status)
    except web.HTTPException as exc:
        error = GmailError(exc.status, exc.reason or "Error", "notFound" if exc.status == 404 else "badRequest")
        return web.json_response(error.body(), status=exc.status)
    except Exception:  # noqa: BLE001 - the simulator answers like Google, it does not crash
        log.exception("gmail-sim: unhandled error for %s %s", request.method, request.path)
        error = backend_error()
        return web.json_response(error.body(), status=500)


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    raw = await request.read()
    content_type = request.headers.get("Content-Type", "")
    form: dict[str, str]
    if content_type.startswith("application/json"):
        import json

        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise OAuthError("invalid_request", "Invalid JSON body") from None
        form = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    else:
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    email, body = state.auth.grant(form, f"{request.url.origin()}/token")
    state.counters.record(email, "oauth2.token")
    return web.json_response(body, headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
                                            "Pragma": "no-cache"})


def _public_keys(document):
    """A handler serving one of the OIDC issuer's documents, cacheable like Google's."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document(request.app[STATE_KEY].issuer),
                                 headers={"Cache-Control": "public, max-age=3600"})
    return handler


async def _batch(request: web.Request) -> web.Response:
    content_type, body = await handle_batch(request.app[STATE_KEY], request.headers.get("Content-Type", ""),
                                            await request.read())
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _api(request: web.Request) -> web.Response:
    api_request = ApiRequest(
        method=request.method, path=request.path, query=MultiDict(request.query),
        headers=CIMultiDict(request.headers), body=await request.read(),
    )
    response = await dispatch(request.app[STATE_KEY], api_request)
    if response.body is None:
        return web.Response(status=response.status, headers=response.headers)
    return web.Response(status=response.status, body=response.encoded(), headers=response.headers,
                        content_type="application/json", charset="UTF-8")


def create_app(state: SimState) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_post("/token", _token)
    app.router.add_post("/batch", _batch)
    app.router.add_post("/batch/gmail/v1", _batch)
    app.router.add_get(CERTS_PATH, _public_keys(lambda issuer: issuer.certs()))
    app.router.add_get(JWKS_PATH, _public_keys(lambda issuer: issuer.jwks()))
    app.router.add_get(DISCOVERY_PATH, _public_keys(lambda issuer: issuer.discovery()))
    control_api.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", _api)
    return app


class GmailSimulator:
    """A Gmail API simulator serving from a background thread with its own event loop.

    >>> sim = GmailSimulator(pubsub_emulator_host="127.0.0.1:8085")
    >>> url = sim.start()          # "http://127.0.0.1:PORT"
    >>> sim.stop()
    """

    def __init__(self, pubsub_emulator_host: str | None = None, *, default_project: str = DEFAULT_PROJECT,
                 state_file: str | None = None) -> None:
        """`default_project`: the Google project of keys and OAuth clients created without a projectId.
        `state_file`: load the simulator's state from it at start (when it exists), save it there at stop."""
        self.state = SimState(pubsub_emulator_host, default_project=default_project)
        self.state_file = state_file
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def pubsub_emulator_host(self) -> str | None:
        return self.state.publisher.emulator_host

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        if self.state_file is not None:
            from mailwatch_devstack.gmail_sim.snapshot import load_file

            load_file(self.state, self.state_file)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(host, port))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self.state.publisher.start()
        self._thread = threading.Thread(target=run, name="gmail-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure or self.url is None:
            self._thread.join(5)
            self._thread = None
            self.state.publisher.stop()
            raise RuntimeError(f"gmail simulator failed to start: {failure[0] if failure else 'timeout'}")
        return self.url

    async def _serve(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(create_app(self.state), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # the real port when port=0
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{bound}"
        self.state.issuer.url = self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._thread = None
        self._loop = None
        self.state.publisher.stop()
        if self.state_file is not None:
            from mailwatch_devstack.gmail_sim.snapshot import save_file

            save_file(self.state, self.state_file)

    def reset(self) -> None:
        """Clear all state (same as `SimulatorControl(url).reset()`)."""
        self.state.reset()

    def __enter__(self) -> "GmailSimulator":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
