"""Single-action reporting: 32 brand clients each sending one ``POST /v1/actions`` at a
time (the usual server-to-server pattern, a request per sale) to ``postback serve`` as a
user runs it, for a fixed time; accepted actions per second and the request latency
(p50 / p99 / max), on SQLite and PostgreSQL, and the postbacks that reached the receiver;
beside two ceilings in the same run by the same clients (``bench/ceiling_app.py``): bare
uvicorn answering 201, and FastAPI with the API's models but no database.

    .venv/bin/python bench/single.py [--clients 32] [--seconds 20] [--db sqlite,postgresql]
        [--profile DIR]

``--profile DIR`` records the API process with py-spy (``pip install py-spy``; not a
dependency) while the clients run: ``DIR/api-<db>.txt``, one line per stack with its
samples (collapsed; only the thread holding the GIL, so what the interpreter spends its
time on), and the top functions printed after the table.

Bounded in time; every client keeps one request open at most.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from e2e import (
    Service,
    database,
    free_port,
    get,
    percentile,
    receiver_process,
    setup,
    wait_http,
)


async def clients(api: str, key: str, targets: list[dict[str, int]], count: int,
                  seconds: float) -> tuple[int, list[float], int]:
    """``count`` clients for ``seconds``: (accepted, latencies in ms, refused)."""
    latencies: list[float] = []
    refused = 0
    stop_at = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=count)) as session:
        async def client(n: int) -> None:
            nonlocal refused
            i = 0
            while time.monotonic() < stop_at:
                body: dict[str, Any] = {
                    **targets[(n + i) % len(targets)], "oid": uuid.uuid4().hex,
                    "amount": "100.00", "payout": "8.00", "sub_id1": f"{time.time():.6f}",
                    "event_date": "2026-11-02T18:04:05+00:00"}
                started = time.perf_counter()
                async with session.post(f"{api}/v1/actions", json=body,
                                        headers=headers) as resp:
                    await resp.read()
                    if resp.status == 201:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        refused += 1
                i += 1

        await asyncio.gather(*(client(n) for n in range(count)))
    return len(latencies), latencies, refused


def api_pid(serve_pid: int) -> int:
    """The pid of ``serve``'s API child."""
    for child in Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"api" in cmdline:
            return int(child)
    raise RuntimeError("serve has no api process")


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration",
                             str(max(1, int(seconds))), "--rate", "200", "--format", "raw",
                             *os.environ.get("SPY_FLAGS", "--gil").split(),
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


GENERIC = ("Thread.run", "Thread._bootstrap", "Thread._bootstrap_inner", "WorkerThread.run",
           "main", "Runner.run", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
           "Handle._run", "run", "_run_module_as_main", "_run_code", "<module>")


def top_functions(collapsed: Path, n: int = 25) -> list[tuple[str, float]]:
    """The ``n`` functions on the most samples' stacks (inclusive), as shares of all."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = {frame.split(" (")[0] for frame in stack.split(";")} - set(GENERIC)
        for frame in frames:
            inclusive[frame] += int(count)
    return [(name, hits / total) for name, hits in inclusive.most_common(n)] if total else []


def run(db_url: str, workdir: Path, receiver: str, count: int, seconds: float,
        profile: Path | None = None) -> dict[str, float]:
    service = Service(db_url, workdir, workers=os.cpu_count() or 1)  # serve's default
    try:
        bkey, targets = setup(service, 10, receiver)
        get(f"{receiver}/__reset")
        spy = None
        if profile is not None:
            name = "sqlite" if db_url.startswith("sqlite") else "postgresql"
            spy = start_profile(api_pid(service.procs[0].pid), seconds - 1,
                                profile / f"api-{name}.txt")
        accepted, lat, refused = asyncio.run(clients(service.api, bkey, targets, count,
                                                     seconds))
        if spy is not None:
            spy.wait(timeout=60)
        time.sleep(2)  # the last postbacks on their way
        received = get(f"{receiver}/__stats")["count"]
        return {"per_s": accepted / seconds, "p50": statistics.median(lat),
                "p99": percentile(lat, 99), "max": max(lat), "refused": refused,
                "received": received, "accepted": accepted}
    finally:
        service.stop()


def ceiling(kind: str, count: int, seconds: float) -> dict[str, float]:
    """The same clients against ``bench/ceiling_app.py``'s ``kind`` app (no database)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "ceiling_app.py"),
                             kind, str(port)], stdout=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(f"{api}/healthz" if kind == "framework" else api)
        target = [{"program_id": 1, "event_type_id": 1, "partner_id": 1}]
        accepted, lat, refused = asyncio.run(clients(api, "pbk_ceiling", target, count,
                                                     seconds))
        return {"per_s": accepted / seconds, "p50": statistics.median(lat),
                "p99": percentile(lat, 99), "max": max(lat), "refused": refused,
                "received": 0, "accepted": accepted}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--no-ceilings", action="store_true",
                        help="skip the bare-HTTP and framework-only baselines")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a directory for py-spy profiles of the API process")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict[str, float]]] = []
    if not args.no_ceilings:
        rows.append(("bare uvicorn, 201 with a fixed body (the HTTP ceiling)",
                     ceiling("bare", args.clients, args.seconds)))
        rows.append(("FastAPI, the API's models, no database (the framework ceiling)",
                     ceiling("framework", args.clients, args.seconds)))
    with receiver_process() as receiver, tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            with database(kind, Path(tmp)) as url:
                rows.append(({"sqlite": "SQLite"}.get(kind, "PostgreSQL"),
                             run(url, Path(tmp), receiver, args.clients, args.seconds,
                                 args.profile)))
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores · "
          f"{args.clients} clients, one POST /v1/actions each at a time, {args.seconds:.0f} s, "
          f"`postback serve` (default workers)\n")
    framework = next((r["per_s"] for name, r in rows if name.startswith("FastAPI")), None)
    print("| run | requests/s | vs framework ceiling | p50 ms | p99 ms | max ms | refused "
          "| postbacks received |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        ratio = f"{r['per_s'] / framework:.2f}" if framework else "—"
        received = (f"{r['received']:,.0f} of {r['accepted']:,.0f}"
                    if name in ("SQLite", "PostgreSQL") else "—")
        label = f"`serve`, {name}" if name in ("SQLite", "PostgreSQL") else name
        print(f"| {label} | {r['per_s']:,.0f} | {ratio} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['max']:.0f} | {r['refused']:.0f} | {received} |")
    if args.profile is not None:
        for name, _ in rows:
            out = args.profile / f"api-{'sqlite' if name == 'SQLite' else 'postgresql'}.txt"
            if out.exists():
                print(f"\nAPI process, {name}: share of samples with the function on the "
                      f"stack\n")
                for function, share in top_functions(out):
                    print(f"  {share:6.1%}  {function}")


if __name__ == "__main__":
    main()
