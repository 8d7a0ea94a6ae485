"""The server's commands: ``comity serve`` and ``comity agent add``."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import click

from ..clikit import Ctx, command, err, out
from ..errors import Invalid
from .limits import default_max_body, describe, exit_cleanly_on_sigterm, limit_options, limits_from, uvicorn_config

__all__ = ["register"]


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then,
        # and without it every kept-alive request waits out a delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(256)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as e:
        raise Invalid("port", f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def register(cli: click.Group) -> None:
    """Add ``serve`` and ``agent`` to the ``comity`` command."""
    @command(cli, "serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every interface).")
    @click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on (0: any free port, printed).")
    @limit_options
    @click.option("--evidence", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="A chaos report (`comity chaos report --json > FILE`) for the dashboard's Evidence view.")
    def serve_cmd(obj: Ctx, host: str, port: int, evidence: str | None, *, as_json: bool, **options: Any) -> None:
        """Serve the store over HTTP: one POST /v1/VERB per agent verb, OpenAPI at /openapi.json, per-agent tokens, the dashboard at /."""
        limits = limits_from(options)
        if obj.remote:
            raise Invalid("store", "serve needs a store (a path or a postgresql:// URL), not another server")
        try:
            import uvicorn

            from .app import create_app
        except ImportError as e:
            raise Invalid("serve", f"the HTTP server needs fastapi and uvicorn ({e.name} is missing): pip install 'comity[server]'") from None
        store = obj.store()
        max_body = limits.max_body_bytes or default_max_body(store.max_value_bytes)
        app = create_app(store, max_body_bytes=max_body, evidence=evidence)
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        if as_json:
            sys.stdout.write(json.dumps({"url": url, "store": store.location, "openapi": f"{url}/openapi.json", "dashboard": f"{url}/"}) + "\n")
            sys.stdout.flush()
        config = uvicorn_config(app, limits, lifespan="off", timeout_graceful_shutdown=5)
        err.print(f"comity: serving {store.location} at {url} (OpenAPI: {url}/openapi.json; dashboard: {url}/, sign in with a token); Ctrl-C stops", markup=False)
        err.print(f"comity: limits: {describe(limits, max_body)}", markup=False)
        uvicorn.Server(config).run(sockets=[sock])

    @command(cli, "dashboard")
    @click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
    @click.option("--evidence", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="A chaos report (`comity chaos report --json > FILE`) for the Evidence view.")
    @click.option("--open", "open_browser", is_flag=True, help="Also open the sign-in link in a web browser.")
    def dashboard_cmd(obj: Ctx, port: int, evidence: str | None, open_browser: bool, *, as_json: bool) -> None:
        """Open the dashboard over the embedded store, on this machine only (127.0.0.1): prints its URL and a one-time sign-in link."""
        if obj.remote:
            raise Invalid("store", "dashboard opens a store on this machine; a server (http://…) serves its own at /")
        try:
            import uvicorn

            from .app import create_app
        except ImportError as e:
            raise Invalid("dashboard", f"the dashboard needs fastapi, uvicorn and jinja2 ({e.name} is missing): pip install 'comity[server]'") from None
        store = obj.store()
        app = create_app(store, evidence=evidence)
        sock = _listen("127.0.0.1", port)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        link = app.state.dashboard.one_time_link(url)
        if as_json:
            sys.stdout.write(json.dumps({"url": url + "/", "signin": link, "store": store.location}) + "\n")
        else:
            sys.stdout.write(link + "\n")
        sys.stdout.flush()
        err.print(f"comity: dashboard of {store.location} at {url}/ ; open the link above once to sign in"
                  " (it works once, for ten minutes), or sign in with an agent token; Ctrl-C stops", markup=False)
        if open_browser:
            import webbrowser

            webbrowser.open(link)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        exit_cleanly_on_sigterm()
        uvicorn.Server(config).run(sockets=[sock])

    @cli.group("agent")
    def agent_group() -> None:
        """Agents of a comity server: issue their bearer tokens."""

    @command(agent_group, "add")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="The token may issue tokens itself (over HTTP).")
    @click.option("--rotate", is_flag=True, help="Replace NAME's existing token; the old one stops working.")
    def agent_add_cmd(obj: Ctx, name: str, admin: bool, rotate: bool, *, as_json: bool) -> None:
        """Issue a bearer token for agent NAME (shown once; the store keeps only its hash).

        On a store path this needs no token; against a server (--store http://…) it
        needs an admin token in --auth."""
        issued: dict[str, Any]
        if obj.remote:
            from ..remote import RemoteAgent

            issued = RemoteAgent(obj.store_location or "", auth=obj.auth, agent=obj.agent_name, session=False).agent_add(name, admin=admin, rotate=rotate)
        else:
            from .auth import issue_token

            issued = issue_token(obj.store().session(obj.agent_name or "admin"), name, admin=admin, rotate=rotate)
        if as_json:
            sys.stdout.write(json.dumps(issued) + "\n")
            sys.stdout.flush()
        else:
            out.print(issued["auth_token"], markup=False)
            err.print(f"token for {issued['agent']}{' (admin)' if issued['admin'] else ''}: shown once; pass it as --auth or COMITY_AUTH", markup=False)
