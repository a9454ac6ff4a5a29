"""A real headless Chromium (Debian's ``chromium`` package), driven over the DevTools protocol.

Tests that need it call :func:`chromium_binary`: without a binary they are skipped with the
reason, unless ``CI`` is set, where a missing browser fails the run (``make test`` installs it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str:
    """The browser's path; skip (or, under CI, fail) when there is none."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    reason = "no chromium binary found (apt-get install -y chromium, or `make browser`)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + "; CI must run the browser tests")
    pytest.skip(reason)


class Page:
    """One browser tab: navigate with extra headers, evaluate JavaScript, take a screenshot."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": dict(params or {})}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while time.monotonic() < deadline:
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            msg: dict[str, Any] = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def open(self, url: str, headers: Mapping[str, str] | None = None) -> int:
        """Load ``url``; returns the HTTP status of the document (0 for file URLs)."""
        self.events.clear()
        self.send("Network.enable")
        self.send("Page.enable")
        self.send("Network.setExtraHTTPHeaders", {"headers": dict(headers or {})})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        for ev in self.events:
            if ev.get("method") == "Network.responseReceived":
                p = ev["params"]
                if p.get("type") == "Document":
                    return int(p["response"].get("status", 0))
        return 0

    def requested(self) -> list[str]:
        """Every URL the page asked for since the last :meth:`open`."""
        return [
            ev["params"]["request"]["url"]
            for ev in self.events
            if ev.get("method") == "Network.requestWillBeSent"
        ]

    def evaluate(self, expression: str) -> Any:
        out = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return out["result"].get("value")

    def screenshot(self) -> bytes:
        out = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(out["data"])


@contextmanager
def browser(timeout: float = 60.0) -> Iterator[Page]:
    """Start headless Chromium on a free DevTools port; yield its first tab."""
    import websocket  # websocket-client

    binary = chromium_binary()
    profile = Path(tempfile.mkdtemp(prefix="palm-chromium-"))
    cmd = [
        binary,
        "--headless=new",
        "--no-sandbox",  # tests may run as root in containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-extensions",
        "--window-size=1200,900",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ws = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets: list[dict[str, Any]] = []
        while not any(t.get("type") == "page" for t in targets):
            if time.monotonic() > deadline:
                raise RuntimeError("chromium opened no page")
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            time.sleep(0.05)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        yield Page(ws)
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(profile, ignore_errors=True)


IMAGES_JS = (
    "Array.from(document.images).map(i => ({plot: i.dataset.plot || '', "
    "w: i.naturalWidth, h: i.naturalHeight, complete: i.complete}))"
)
# Distinct colours in each decoded plot (a blank image has one): drawn into a canvas.
COLOURS_JS = """
Array.from(document.images).map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length && seen.size < 50; i += 4 * 97)
    seen.add(d[i] * 65536 + d[i+1] * 256 + d[i+2]);
  return seen.size;
})
"""
