"""A minimal W3C WebDriver client over httpx, for the `view` browser tests.

Why not selenium: the tests need six calls (session, navigate, find, click, text,
screenshot), httpx is already a dependency, and chromedriver speaks plain
WebDriver over loopback HTTP: no new test dependency.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
#: Chromium's flags on this kind of machine (docs: machines/python.md): headless, no sandbox (root),
#: and nothing that reaches out (the network is closed beyond loopback).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Every descendant of pid (chromedriver's chromium and its helpers), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _ref(found: dict) -> str:
    """An element reference (the W3C web element identifier)."""
    return found[ELEMENT]


class Browser:
    """chromedriver + one headless Chromium session; close() stops both by PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.driver = subprocess.Popen(["chromedriver", f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.profile = tempfile.mkdtemp(prefix="pygent-chromium-")
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium",
                                                                 "args": [*CHROMIUM_ARGS, f"--user-data-dir={self.profile}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        r = self.http.request(method, path, json=body)
        value = r.json()["value"]
        if r.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {value.get('error')}: {value.get('message', '')[:300]}")
        return value

    def _s(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return _ref(self._s("POST", "/element", {"using": "css selector", "value": css}))

    def find_all(self, css: str) -> list[str]:
        return [_ref(e) for e in self._s("POST", "/elements", {"using": "css selector", "value": css})]

    def click(self, element: str) -> None:
        self._s("POST", f"/element/{element}/click", {})

    def text(self, element: str) -> str:
        return self._s("GET", f"/element/{element}/text")

    def attribute(self, element: str, name: str) -> str | None:
        return self._s("GET", f"/element/{element}/property/{name}")

    def script(self, source: str):
        return self._s("POST", "/execute/sync", {"script": source, "args": []})

    def wait_for(self, css: str, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_all(css)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))
        return path

    def close(self) -> None:
        browsers = children_of(self.driver.pid)
        try:
            if getattr(self, "session", None):
                self._s("DELETE", "")
        except Exception:
            pass
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        for pid in browsers:  # whatever chromium left, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.http.close()
