"""A real browser for the web app's tests: Debian's chromium, driven by Playwright (no
browser download). ``chromium()`` installs the package when it is missing and this
process may (root, apt); otherwise it says what to install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tests.packages import one_install_at_a_time

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with one_install_at_a_time():
            if not any(os.access(path, os.X_OK) for path in CANDIDATES):
                subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                               capture_output=True, timeout=600)
                # and a CJK font, so that the Chinese pages' screenshots show characters
                subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                "chromium", "fonts-wqy-zenhei"], env=env, check=False,
                               capture_output=True, timeout=1200)
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


class LiveServer:
    """The app on a real loopback port (uvicorn in a thread), for the browser to open."""

    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def shots_dir(default: Path) -> Path:
    """Where screenshots go: ``POSTBACK_SCREENSHOTS`` (``make screenshots`` sets it to
    docs/screenshots, for the README), else the test's own temporary folder."""
    chosen = os.environ.get("POSTBACK_SCREENSHOTS")
    path = Path(chosen) if chosen else default
    path.mkdir(parents=True, exist_ok=True)
    return path
