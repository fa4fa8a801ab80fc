"""Load: postbacks delivered and event-to-receipt latency as the offered load grows, a
sustained run at the API's full speed, and one endpoint in ten turned into a black hole.
Each phase runs ``postback serve`` on a fresh database (SQLite file and PostgreSQL), with
the raw-asyncio receiver of ``bench/receiver.py`` in its own process.

    .venv/bin/python bench/load.py [--db sqlite,postgresql] [--step-seconds 10]
                                   [--sustain 60] [--plot docs/load.png]

* **sweep**: a steady offered load (a batch to ``POST /v1/actions/batch`` every 50 ms) at
  100, 250, 500, 1,000, 2,000 … actions/s for ``--step-seconds`` each, until the service
  no longer keeps up (delivered < 90 % of offered, or the API cannot take the batches
  in time). Latency runs from the moment a batch is sent to the API to the moment the
  receiver has each postback; every postback is waited for before the next step.
* **sustained**: batches of 1,000 as fast as the API takes them for ``--sustain`` seconds;
  actions accepted per second, and postbacks received per second over the same window.
* **black hole**: as the 1,000 actions/s step and a saturation burst, with and without
  partner 0 of 10 pointing at a port that accepts connections and never answers: the
  healthy partners' throughput and latency.

Everything runs on loopback and stops by itself (bounded count, bounded time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e import (
    Service,
    database,
    free_port,
    get,
    percentile,
    report,
    setup,
    wait_http,
)

HERE = Path(__file__).resolve().parent
RATES = (100, 250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000)
TICK = 0.05
DRAIN_LIMIT = 120.0  # seconds to wait for a step's postbacks after its last batch


def wait_for(receiver: str, count: int, limit: float = DRAIN_LIMIT) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while (stats := get(f"{receiver}/__stats"))["count"] < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return dict(stats)


def steady(service: Service, bkey: str, targets: list[dict[str, int]], receiver: str,
           rate: int, seconds: float, healthy: float = 1.0) -> dict[str, float]:
    """Offer ``rate`` actions/s for ``seconds``; what arrived and how late."""
    get(f"{receiver}/__reset")
    per_tick = max(1, round(rate * TICK))
    ticks = max(1, int(seconds / TICK))
    start = time.monotonic()
    behind = 0
    for n in range(ticks):
        report(service, bkey, targets, per_tick, n * per_tick)
        pause = start + (n + 1) * TICK - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            behind += 1
    sent_for = time.monotonic() - start
    expected = round(ticks * per_tick * healthy)
    stats = wait_for(receiver, expected)
    lat = [x * 1000 for x in stats["latencies"]]
    span = max(stats["last"] - stats["first"], 1e-9)
    return {"offered": ticks * per_tick / sent_for, "delivered": stats["count"] / span,
            "received": stats["count"], "expected": expected,
            "p50": statistics.median(lat) if lat else float("nan"),
            "p99": percentile(lat, 99) if lat else float("nan"),
            "api_behind": behind / ticks}


def burst(service: Service, bkey: str, targets: list[dict[str, int]], receiver: str,
          actions: int, healthy: float = 1.0) -> float:
    """``actions`` in batches of 1,000 as fast as the API takes them; healthy postbacks
    received per second, from the first batch sent to the last postback received."""
    get(f"{receiver}/__reset")
    started = time.time()
    for sent in range(0, actions, 1000):
        report(service, bkey, targets, 1000, sent)
    expected = round(actions * healthy)
    stats = wait_for(receiver, expected, 300)
    return float(stats["count"] / (stats["last"] - started))


def sweep(db_url: str, tmp: Path, receiver: str, seconds: float) -> list[dict[str, float]]:
    service = Service(db_url, tmp)
    rows = []
    try:
        bkey, targets = setup(service, 10, receiver)
        for rate in RATES:
            row = {"rate": float(rate), **steady(service, bkey, targets, receiver, rate,
                                                 seconds)}
            rows.append(row)
            print(f"  {rate}/s: {row}", file=sys.stderr)
            if (row["received"] < row["expected"] or row["delivered"] < 0.9 * rate
                    or row["api_behind"] > 0.5):
                break  # saturated: the service (or the API) no longer keeps up
    finally:
        service.stop()
    return rows


def sustained(db_url: str, tmp: Path, receiver: str, seconds: float) -> dict[str, float]:
    service = Service(db_url, tmp)
    try:
        bkey, targets = setup(service, 10, receiver)
        get(f"{receiver}/__reset")
        started = time.time()
        sent = 0
        while time.time() - started < seconds:
            report(service, bkey, targets, 1000, sent)
            sent += 1000
        window = time.time() - started
        during = get(f"{receiver}/__stats")["count"]
        stats = wait_for(receiver, sent, 300)
        return {"accepted": sent / window, "delivered": during / window,
                "backlog": sent - during, "all_in": stats["last"] - started}
    finally:
        service.stop()


def black_hole(db_url: str, tmp: Path, receiver: str, hole: str | None,
               seconds: float, actions: int) -> dict[str, float]:
    service = Service(db_url, tmp)
    try:
        bkey, targets = setup(service, 10, receiver, hole)
        healthy = 0.9 if hole else 1.0
        out = steady(service, bkey, targets, receiver, 1000, seconds, healthy)
        out["burst"] = burst(service, bkey, targets, receiver, actions, healthy)
        return out
    finally:
        service.stop()


def plot(sweeps: dict[str, list[dict[str, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for (name, rows), colour in zip(sweeps.items(), ("tab:blue", "tab:orange"), strict=False):
        offered = [r["offered"] for r in rows]
        top.plot(offered, [r["delivered"] for r in rows], marker="o", color=colour,
                 label=name)
        bottom.plot(offered, [r["p50"] for r in rows], marker="o", color=colour,
                    label=f"{name} p50")
        bottom.plot(offered, [r["p99"] for r in rows], marker="x", linestyle="--",
                    color=colour, label=f"{name} p99")
    top.set_ylabel("postbacks delivered / s")
    top.set_title("postback serve (its default processes), 10 partners, loopback receiver")
    top.grid(True, alpha=0.3)
    top.legend()
    bottom.set_xscale("log")
    bottom.set_yscale("log")
    bottom.set_xlabel("offered load, actions / s")
    bottom.set_ylabel("batch sent to the API → received, ms")
    bottom.axhline(20, color="grey", linewidth=0.8, linestyle=":")
    bottom.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    bottom.grid(True, alpha=0.3, which="both")
    bottom.legend(fontsize=8)
    fig.text(0.01, 0.005, f"{datetime.now(UTC):%Y-%m-%d} · {os.cpu_count()} cores · "
             f"Python {platform.python_version()}", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--phases", default="sweep,sustained,hole")
    p.add_argument("--step-seconds", type=float, default=10.0)
    p.add_argument("--sustain", type=float, default=60.0)
    p.add_argument("--burst", type=int, default=20_000, help="actions in the black-hole burst")
    p.add_argument("--plot", default=str(HERE.parent / "docs" / "load.png"))
    p.add_argument("--replot", metavar="JSON",
                   help="only draw the plot again from a run's saved figures")
    args = p.parse_args()
    figures = Path(args.plot).with_suffix(".json")
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), args.plot)
        return
    port, hole_port = free_port(), free_port()
    receiver_proc = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(port),
                                      str(hole_port)])
    receiver, hole = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{hole_port}"
    phases = args.phases.split(",")
    sweeps: dict[str, list[dict[str, float]]] = {}
    sustains: dict[str, dict[str, float]] = {}
    holes: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    try:
        wait_http(f"{receiver}/__reset")
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            for kind in args.db.split(","):
                name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[kind]
                if "sweep" in phases:
                    with database(kind, tmp) as url:
                        sweeps[name] = sweep(url, tmp, receiver, args.step_seconds)
                if "sustained" in phases:
                    with database(kind, tmp) as url:
                        sustains[name] = sustained(url, tmp, receiver, args.sustain)
                if "hole" in phases:
                    with database(kind, tmp) as url:
                        base = black_hole(url, tmp, receiver, None, args.step_seconds,
                                          args.burst)
                    with database(kind, tmp) as url:
                        dead = black_hole(url, tmp, receiver, hole, args.step_seconds,
                                          args.burst)
                    holes[name] = (base, dead)
    finally:
        receiver_proc.terminate()
        receiver_proc.wait(timeout=10)

    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores · Python "
          f"{platform.python_version()} · one `postback serve`, 10 partners\n")
    if sweeps:
        print("| database | offered/s | delivered/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        for name, rows in sweeps.items():
            for r in rows:
                print(f"| {name} | {r['offered']:,.0f} | {r['delivered']:,.0f} "
                      f"| {r['p50']:.1f} | {r['p99']:.1f} |")
        plot(sweeps, args.plot)
        figures.write_text(json.dumps(sweeps, indent=1))
        print(f"\nplot: {args.plot} (figures: {figures})\n")
    if sustains:
        print(f"| database ({args.sustain:.0f} s at full speed) | accepted actions/s "
              "| delivered postbacks/s | backlog at the end | all delivered after |")
        print("|---|---:|---:|---:|---:|")
        for name, s in sustains.items():
            print(f"| {name} | {s['accepted']:,.0f} | {s['delivered']:,.0f} "
                  f"| {s['backlog']:,.0f} | {s['all_in']:.1f} s |")
        print()
    if holes:
        print("| database | healthy postbacks/s (burst) | p50 ms at 1,000/s | p99 ms at 1,000/s |")
        print("|---|---:|---:|---:|")
        for name, (base, dead) in holes.items():
            print(f"| {name}, all answer | {base['burst']:,.0f} | {base['p50']:.1f} "
                  f"| {base['p99']:.1f} |")
            print(f"| {name}, 1 in 10 black hole | {dead['burst']:,.0f} "
                  f"({dead['burst'] / base['burst']:.0%}) | {dead['p50']:.1f} "
                  f"| {dead['p99']:.1f} ({dead['p99'] / base['p99']:.1f} x) |")


if __name__ == "__main__":
    main()
