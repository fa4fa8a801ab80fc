"""Which notifications a ledger change sends, and under which ``{Trigger}``.

impact.com parity: Action Life Cycle fires on TRACKED, MODIFIED and REVERSED; Action
Clearing fires once when the clearing date passes. Locking and payment send nothing unless
a partner opts in (``extra_triggers`` LOCKED / PAID on its Action Life Cycle setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from postback.core.lifecycle import Trigger

LIFECYCLE = "action-lifecycle"
CLEARING = "action-clearing"
INQUIRY = "action-inquiry"
PRODUCT = "product-data-change"

#: opt-in triggers each type accepts in ``extra_triggers``
EXTRA_TRIGGERS: dict[str, frozenset[str]] = {LIFECYCLE: frozenset({"LOCKED", "PAID"})}


@dataclass(frozen=True)
class Route:
    type: str
    trigger: str  # the {Trigger} value receivers see
    opt_in: bool = False


ROUTES: dict[Trigger, tuple[Route, ...]] = {
    Trigger.TRACKED: (Route(LIFECYCLE, "TRACKED"),),
    Trigger.MODIFIED: (Route(LIFECYCLE, "MODIFIED"),),
    Trigger.REVERSED: (Route(LIFECYCLE, "REVERSED"),),
    Trigger.LOCKED: (Route(LIFECYCLE, "LOCKED", opt_in=True),),
    Trigger.APPROVED: (Route(LIFECYCLE, "LOCKED", opt_in=True),),
    Trigger.CLEARED: (Route(CLEARING, "CLEARED"), Route(LIFECYCLE, "PAID", opt_in=True)),
}


def routes(change: Trigger) -> tuple[Route, ...]:
    return ROUTES.get(change, ())
