"""Headless Chromium driven over the DevTools protocol on a pipe (no websocket library, no network).

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands on fd 3 and write replies
and events on fd 4. WebGL runs on SwiftShader (CPU), so the viewer renders without a GPU.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--remote-debugging-pipe"]


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with a fresh profile; ``open(url)`` gives a page session id."""

    def __init__(self, exe: str, profile_dir, size=(512, 512)):
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # a Python trampoline moves our pipe ends onto fds 3 and 4, where Chromium expects them
        trampoline = (f"import os, sys; os.dup2({to_r}, 3); os.dup2({from_w}, 4); "
                      f"[os.close(fd) for fd in ({to_r}, {from_w}) if fd > 4]; os.execv(sys.argv[1], sys.argv[1:])")
        args = [*FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={size[0]},{size[1]}", "about:blank"]
        self.log = Path(profile_dir) / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", trampoline, exe, *args], pass_fds=(to_r, from_w),
                                         stdout=log, stderr=subprocess.STDOUT)
        os.close(to_r)
        os.close(from_w)
        self._buffer, self._id = b"", 0

    def send(self, method: str, session: str | None = None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_w, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"chromium exited while waiting for {method}; its log ends:\n{tail}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str, size: tuple[int, int] | None = None, before_load: str | None = None) -> str:
        """A new page at ``url`` (``size``: its viewport, width and height in CSS pixels; ``before_load``: JS
        run in every document before its own scripts); returns its session id."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        if before_load:
            self.send("Page.enable", session)
            self.send("Page.addScriptToEvaluateOnNewDocument", session, source=before_load)
        if size:
            self.send("Emulation.setDeviceMetricsOverride", session, width=size[0], height=size[1],
                      deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session, url=url)
        return session

    def evaluate(self, session: str, expression: str):
        return self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 60.0, poll: float = 0.2):
        """Poll a JS expression until it is truthy; returns its value (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s")

    def canvas(self, session: str, selector: str = "canvas") -> np.ndarray:
        """[H, W, 3] uint8 RGB of a canvas's pixels (``toDataURL``: needs ``preserveDrawingBuffer`` for WebGL)."""
        from PIL import Image

        url = self.evaluate(session, f"document.querySelector({json.dumps(selector)}).toDataURL('image/png')")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

    def screenshot(self, session: str) -> np.ndarray:
        """[H, W, 3] uint8 RGB of the page."""
        from PIL import Image

        data = base64.b64decode(self.send("Page.captureScreenshot", session, format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)
