"""The README walk-through, pasted as a new user would, against a real `postback serve`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_readme_walkthrough_ends_with_three_postbacks_received(tmp_path: Path) -> None:
    text = README.read_text()
    block = text.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    script = block.strip().removeprefix("```bash").removesuffix("```")
    after = text.split("<!-- walkthrough:end -->")[1]
    expected = re.search(r"```\n(.*?)```", after, re.S).group(1).strip().splitlines()  # type: ignore[union-attr]

    api_port, listen_port = free_port(), free_port()
    script = script.replace("API=http://127.0.0.1:8000", f"API=http://127.0.0.1:{api_port}")
    script = script.replace("LISTENER=http://127.0.0.1:9000",
                            f"LISTENER=http://127.0.0.1:{listen_port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACK_")}
    env["POSTBACK_ADMIN_TOKEN"] = "demo-admin-token"
    env["POSTBACK_ALLOW_TARGETS"] = "127.0.0.0/8,::1/128"  # what `make run` sets
    heard = (tmp_path / "listener.log").open("w")
    listener = subprocess.Popen([sys.executable, "-m", "postback", "listen", "--port",
                                 str(listen_port)], stdout=heard, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "postback", "serve", "--port",
                               str(api_port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        wait_http(f"http://127.0.0.1:{listen_port}/")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert '"error"' not in done.stdout, done.stdout
        deadline = time.monotonic() + 10
        while True:
            got = [line for line in (tmp_path / "listener.log").read_text().splitlines()
                   if line.startswith("--> GET /postback")]
            if len(got) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(got) == sorted(expected)
        assert (tmp_path / "postback.db").exists()
    finally:
        for proc in (server, listener):
            proc.terminate()
            proc.wait(timeout=20)
        heard.close()
