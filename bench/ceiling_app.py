"""The ceilings ``bench/single.py`` measures ``POST /v1/actions`` against, each served the way
the API is (uvicorn, httptools, uvloop, one process):

* ``bare``: a raw ASGI app that reads the body and answers 201 with a fixed JSON body, the
  HTTP loop alone;
* ``framework``: FastAPI with the API's own request and response models, the bearer key
  checked in memory and the action answered without a database: what the framework costs.

    python bench/ceiling_app.py bare|framework PORT
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI, Header, HTTPException

from postback.api.schemas.actions import ActionOut
from postback.models import ActionIn
from postback.services import ledger

BODY = (b'{"id":1,"oid":"x","status":"PENDING","amount":"100.00","payout":"8.00",'
        b'"currency":"USD"}')


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


framework = FastAPI()
_next_id = iter(range(1, 1 << 62))


@framework.post("/v1/actions", status_code=201, response_model=ActionOut)
async def report(body: ActionIn, authorization: str = Header("")) -> dict[str, Any]:
    if not authorization.startswith("Bearer "):
        raise HTTPException(401, "send Authorization: Bearer <api key>")
    now = datetime.now(UTC)
    return ledger.action_out({  # the row the ledger would record, shown the API's way
        **body.model_dump(exclude={"items"}), "id": next(_next_id), "brand_id": 1,
        "currency": body.currency or "USD", "status": "PENDING", "status_detail": "OPEN",
        "original_amount": body.amount, "original_payout": body.payout, "creation_date": now,
        "locking_date": now, "clearing_date": now, "locked_at": None, "cleared_at": None,
        "sequence": 1, "items": [item.model_dump() for item in body.items],
        "updated_at": now})


@framework.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    app = bare if sys.argv[1] == "bare" else framework
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                            access_log=False, lifespan="off", http="httptools")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
