"""Open a page in headless Chromium over the DevTools protocol: console errors, a script's value, a screenshot.

A small client on `websockets` so the test needs Debian's chromium and nothing downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    def __init__(self, ws):
        self._ws = ws
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str, timeout: float = 60.0):
        result = self.send("Runtime.evaluate", timeout=timeout, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.2)
        raise TimeoutError(f"page never satisfied: {expression}")

    def drain(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.events.append(json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
            except TimeoutError:
                return

    def console_errors(self) -> list[str]:
        errors = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path, width: int = 1440) -> Path:
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.wait_for("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        data = self.send("Page.captureScreenshot", timeout=120, format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Browser:
    """`with Browser(chromium) as page: page.open(url)`; the process and profile go away on exit."""

    def __init__(self, executable: str, width: int = 1440, height: int = 1000):
        self.executable = executable
        self.size = (width, height)

    def __enter__(self) -> "Browser":
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="trtq-chromium-")
        self._proc = subprocess.Popen(
            [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._cleanup()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = [t for t in json.load(response) if t.get("type") == "page"]
        self._connection = connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._ws = self._connection.__enter__()
        self.page = Page(self._ws)
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.page.send(domain)
        return self

    def open(self, url: str, timeout: float = 120.0) -> Page:
        self.page.send("Page.navigate", url=url)
        self.page.wait_for("document.readyState === 'complete'", timeout=timeout)
        return self.page

    def _cleanup(self) -> None:
        """Stop Chromium and its helpers (its own process group), then remove the profile.

        Chromium's zygote and utility processes outlive the browser process for a moment and
        write to the profile meanwhile; removing it before they are gone fails now and then.
        """
        proc = getattr(self, "_proc", None)
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for attempt in range(20):
            try:
                self._profile.cleanup()
                return
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.25)

    def __exit__(self, *exc) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self._cleanup()
