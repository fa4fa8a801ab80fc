"""``postback serve``: one command, separate processes.

The supervisor starts each part of the service as a process of its own (the API and web
app, N delivery engines, the scheduler: each also a command, ``postback api``, ``worker``,
``scheduler``), so a slow page never pauses a delivery, a crash takes down one part only,
and the API's ingest and the engines do not share an event loop or a core.

* A child that dies is started again after a pause that doubles from 0.5 s up to 30 s,
  and starts over at 0.5 s once the child has run for a while; every death is logged with
  its exit code or signal.
* ``SIGTERM`` or ``SIGINT`` stops the service: each child gets ``SIGTERM`` and drains (an
  engine hands back what waits and lets what is on the wire finish); any child still
  running after ``STOP_DEADLINE`` seconds is killed, so ``serve`` exits 0 within 20 s
  whatever the partners' servers do. A second signal kills every child at once.
* Children die with the supervisor even when it is killed outright: on Linux each asks the
  kernel for ``SIGTERM`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere it
  watches its parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("postback.supervisor")

#: set in each child's environment: the supervisor's pid
SUPERVISOR_ENV = "POSTBACK_SUPERVISOR_PID"
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: a child that ran this long before dying was fine: its next restart waits FIRST_BACKOFF
HEALTHY_AFTER = 10.0
#: after a stop signal, children still running this long are killed (serve exits < 20 s)
STOP_DEADLINE = 18.0
TICK = 0.05
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """One process to keep running: a name for the log, and its ``postback`` arguments."""

    name: str
    args: tuple[str, ...]


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    pids: list[int] = field(default_factory=list)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, children: Sequence[ChildSpec], stop_deadline: float = STOP_DEADLINE
                 ) -> None:
        self.children = [_Child(spec) for spec in children]
        self.stop_deadline = stop_deadline
        self._stop: int | None = None  # the signal that asked to stop
        self._force: int | None = None  # a second one: stop now

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop is None:
            self._stop = signum
        else:
            self._force = signum

    # -- children -------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        child.restart_at = None
        child.started_at = time.monotonic()
        try:
            # its own process group: a terminal's Ctrl-C reaches the supervisor only, which
            # stops the children in order
            child.proc = subprocess.Popen([sys.executable, "-m", "postback", *child.spec.args],
                                          env=env, stdin=subprocess.DEVNULL, process_group=0)
        except OSError as exc:
            child.proc = None
            self._schedule_restart(child, f"could not be started ({exc})")
            return
        child.pids.append(child.proc.pid)
        log.info("%s started (pid %d)", child.spec.name, child.proc.pid)

    def _schedule_restart(self, child: _Child, why: str) -> None:
        ran = time.monotonic() - child.started_at
        if ran >= HEALTHY_AFTER:
            child.backoff = FIRST_BACKOFF
        delay = child.backoff
        child.backoff = min(child.backoff * 2, MAX_BACKOFF)
        child.restart_at = time.monotonic() + delay
        log.error("%s %s after %.1f s; starting it again in %.1f s", child.spec.name, why,
                  ran, delay)

    def _reap(self, restart: bool) -> None:
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            proc, child.proc = child.proc, None
            if restart:
                self._schedule_restart(child, f"(pid {proc.pid}) {describe_exit(proc.returncode)}")
            else:
                log.info("%s (pid %d) stopped: %s", child.spec.name, proc.pid,
                         describe_exit(proc.returncode))

    def _running(self) -> list[_Child]:
        return [c for c in self.children if c.proc is not None]

    def _signal_all(self, sig: int) -> None:
        for child in self._running():
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    def _kill_all(self) -> None:
        self._signal_all(signal.SIGKILL)
        for child in self._running():
            assert child.proc is not None
            child.proc.wait()
            child.proc = None

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Start every child, keep them running until SIGTERM or SIGINT, stop them; the exit
        status (0 for an orderly stop, 128 + signal when a second signal cut it short)."""
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            for child in self.children:
                if self._stop is None:
                    self._start(child)
            while self._stop is None:
                self._reap(restart=True)
                now = time.monotonic()
                for child in self.children:
                    if child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
                time.sleep(TICK)
            return self._shutdown(self._stop)
        finally:
            if self._running():  # an exception of our own: leave nothing behind
                self._kill_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _shutdown(self, signum: int) -> int:
        log.info("%s: stopping every process (they finish what is on the wire; anything "
                 "still running in %g s is killed; a second signal kills them now)",
                 signal.Signals(signum).name, self.stop_deadline)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_deadline
        while self._running() and self._force is None and time.monotonic() < deadline:
            self._reap(restart=False)
            time.sleep(TICK)
        if self._force is not None:
            log.warning("%s again: killing every process now",
                        signal.Signals(self._force).name)
            self._kill_all()
            return 128 + self._force
        left = self._running()
        if left:
            log.warning("still running after %g s, killed: %s", self.stop_deadline,
                        ", ".join(f"{c.spec.name} (pid {c.proc.pid})" for c in left
                                  if c.proc is not None))
            self._kill_all()
        log.info("stopped")
        return 0


def die_with_parent() -> None:
    """In a child of ``serve``: be sent SIGTERM when the supervisor dies, however it dies
    (it is then stopped like any other: it drains). Does nothing outside ``serve``."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent or not parent.isdigit():
        return
    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    if os.getppid() != int(parent):  # it died before we asked: nobody to serve
        raise SystemExit(0)
    if not armed:
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True,
                         name="watch-supervisor").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
