"""`nitrodeck serve --web`: the TUI itself in a browser, through textual-serve, always read-only.

Each browser session runs `nitrodeck --read-only` (and NITRODECK_READ_ONLY=1) as its own process behind
a websocket; the agent's rules hold here too: GET and HEAD only (405 otherwise), and with a token every
request needs it. A browser cannot send an Authorization header for a page load or a websocket, so the
token is also accepted once as ``?token=`` and then kept in an HttpOnly, SameSite=Strict cookie.
Sessions are bounded (each is a TUI process).
"""

from __future__ import annotations

import hmac
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from textual_serve.server import Server

from console.agent.auth import authorized

COOKIE = "nitrodeck_token"
MAX_SESSIONS = 4


def tui_command(backend: str | None) -> str:
    argv = [sys.executable, "-m", "console", "--read-only"] + (["--backend", backend] if backend else [])
    return shlex.join(argv)


class WebView(Server):
    def __init__(self, host: str, port: int, token: str | None, backend: str | None = None,
                 on_unauthorized: Callable[[], None] = lambda: None) -> None:
        super().__init__(tui_command(backend), host=host, port=port, title="nitrodeck (read-only)")
        self.token = token
        self.on_unauthorized = on_unauthorized
        self.sessions = 0
        # the TUI processes inherit this: read-only even if someone edits the command line
        os.environ["NITRODECK_READ_ONLY"] = "1"

    def initialize_logging(self) -> None:
        """Quiet: the agent prints its own lines; textual-serve's banner would go to stdout (EMF's)."""

    async def on_startup(self, app: web.Application) -> None:
        print(f"nitrodeck agent: web view on {self.public_url} (read-only"
              + (", token required" if self.token else "") + ")", file=sys.stderr, flush=True)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    def _allowed(self, request: web.Request) -> tuple[bool, bool]:
        """(allowed, token came in the query: set the cookie)."""
        if self.token is None:
            return True, False
        if authorized(request.headers.get("Authorization"), self.token):
            return True, False
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.token.encode()):
            return True, False
        query = request.query.get("token", "")
        if query and hmac.compare_digest(query.encode(), self.token.encode()):
            return True, True
        return False, False

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        ok, set_cookie = self._allowed(request)
        if not ok:
            self.on_unauthorized()
            return web.json_response({"error": "a bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="nitrodeck"'})
        if request.method not in ("GET", "HEAD"):
            return web.json_response({"error": f"{request.method[:16]} is not allowed: the web view is read-only"},
                                     status=405, headers={"Allow": "GET, HEAD"})
        if request.path == "/ws":
            if self.sessions >= MAX_SESSIONS:
                return web.json_response({"error": f"already {MAX_SESSIONS} browser sessions"}, status=503)
            self.sessions += 1
            try:
                return await handler(request)
            finally:
                self.sessions -= 1
        response = await handler(request)
        if set_cookie:
            response.set_cookie(COOKIE, self.token or "", httponly=True, samesite="Strict", path="/")
        return response
