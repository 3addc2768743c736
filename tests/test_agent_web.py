"""`nitrodeck serve --web`: the TUI in headless Chromium (Debian's package) through textual-serve, read-only,
behind the agent's token; the browser is driven over the DevTools protocol on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.ops.lifecycle import Lifecycle
from tests.agent_world import launch, script_eif, start_agent, write_world
from tests.conftest import require, wait_for

pytestmark = pytest.mark.slow
TOKEN = "web-token-0123456789abcdef"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000"]
_ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[PX^_].*?\x1b\\|\x1b\][^\x07]*\x07|\x1b.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


async def browse(devtools: str, url: str, wanted: list[str], timeout: float = 90) -> tuple[str, bool]:
    """Open ``url`` in the browser; return the text the page's websocket received once every ``wanted``
    string is in it, and whether the page's terminal says it drew what it got."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(devtools, max_msg_size=0) as ws:
        ids = iter(range(1, 1_000_000))
        pending: dict[int, asyncio.Future] = {}
        frames: list[str] = []

        async def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
            msg_id = next(ids)
            pending[msg_id] = asyncio.get_running_loop().create_future()
            await ws.send_json({"id": msg_id, "method": method, "params": params or {},
                                **({"sessionId": session} if session else {})})
            return await asyncio.wait_for(pending[msg_id], 30)

        async def reader() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if "id" in data and data["id"] in pending:
                    pending[data["id"]].set_result(data.get("result", {}))
                elif data.get("method") == "Network.webSocketFrameReceived":
                    frame = data["params"]["response"]
                    raw = base64.b64decode(frame["payloadData"]) if frame["opcode"] == 2 else frame["payloadData"].encode()
                    frames.append(raw.decode("utf-8", "replace"))

        task = asyncio.create_task(reader())
        try:
            target = (await call("Target.createTarget", {"url": "about:blank"}))["targetId"]
            session = (await call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
            await call("Network.enable", session=session)
            await call("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                text = _ANSI.sub("", "".join(frames))
                if all(w in text for w in wanted):
                    break
                await asyncio.sleep(0.5)
            shot = os.environ.get("NITRODECK_WEB_SCREENSHOT")  # README's picture: set it to a .png path
            if shot:
                await asyncio.sleep(2)  # let the terminal paint what it received
                png = await call("Page.captureScreenshot", {"format": "png"}, session=session)
                Path(shot).write_bytes(base64.b64decode(png["data"]))
            drawn = await call("Runtime.evaluate", {"expression":
                               "document.querySelector('.xterm') !== null && "
                               "document.body.classList.contains('-first-byte')", "returnByValue": True},
                               session=session)
            return text, bool(drawn["result"].get("value"))
        finally:
            task.cancel()


def test_web_view_in_headless_chromium(nd_home: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian's chromium is not installed (scripts/system-deps.sh)")
    write_world(nd_home)
    lc = Lifecycle()
    enclave_id = launch(lc, script_eif(lc, tmp_path, "websvc"), "websvc")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    port = free_port()
    agent = start_agent(tmp_path, "--token-file", str(token), "--web", "--web-listen", f"127.0.0.1:{port}")
    web = f"http://127.0.0.1:{port}"
    profile = tmp_path / "chromium-profile"
    browser = None
    try:
        wait_for(lambda: "web view on" in agent.stderr.read_text(), timeout=30)
        # the token rule: nothing without it, a cookie after ?token=, and never a method but GET/HEAD
        assert status_of(web + "/")[0] == 401
        assert status_of(web + "/ws")[0] == 401
        code, headers = status_of(web + f"/?token={TOKEN}")
        assert code == 200 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert status_of(web + "/", "POST", {"Authorization": f"Bearer {TOKEN}"})[0] == 405

        browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        wait_for(lambda: active.exists() and len(active.read_text().splitlines()) >= 2, timeout=60)
        devtools_port, path = active.read_text().splitlines()[:2]
        text, drawn = asyncio.run(browse(f"ws://127.0.0.1:{devtools_port}{path}", web + f"/?token={TOKEN}",
                                         ["websvc", enclave_id, "READ-ONLY"]))
        assert "websvc" in text and enclave_id in text, text[-2000:]
        assert "READ-ONLY" in text  # the TUI's read-only badge: the session cannot change anything
        assert drawn
    finally:
        if browser is not None:
            browser.kill()
            browser.wait(timeout=20)
        agent.stop()
    assert [e.enclave_id for e in lc.describe()] == [enclave_id]
