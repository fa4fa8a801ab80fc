"""Brand routes: programs, event types, contracts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from postback.api.deps import Brand, IdPath, read, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.programs import ContractOut, EventTypeOut, ProgramList, ProgramOut
from postback.models import ContractIn, EventTypeIn, ProgramIn
from postback.services import programs

router = APIRouter(prefix="/v1/programs", tags=["programs"])


def _brand_id(who: Brand) -> int:
    assert who.account_id is not None
    return who.account_id


@router.post("", status_code=201, response_model=ProgramOut,
             responses=refusals(401, 403, *BODY))
def create_program(body: ProgramIn, request: Request, who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        return programs.create_program(conn, _brand_id(who), body)


@router.get("", response_model=ProgramList, responses=refusals(401, 403))
def list_programs(request: Request, who: Brand) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": programs.list_programs(conn, _brand_id(who)), "next_cursor": None}


@router.get("/{program_id}", response_model=ProgramOut,
            responses=refusals(401, 403, 404, 422))
def get_program(program_id: IdPath, request: Request, who: Brand) -> dict[str, Any]:
    with read(request) as conn:
        return programs.get_program(conn, _brand_id(who), program_id)


@router.post("/{program_id}/event-types", status_code=201, response_model=EventTypeOut,
             responses=refusals(401, 403, 404, *BODY))
def add_event_type(program_id: IdPath, body: EventTypeIn, request: Request,
                   who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        return programs.add_event_type(conn, _brand_id(who), program_id, body)


@router.put("/{program_id}/contracts/{partner_id}", response_model=ContractOut,
            responses=refusals(401, 403, 404, *BODY))
def put_contract(program_id: IdPath, partner_id: IdPath, body: ContractIn, request: Request,
                 who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        return programs.put_contract(conn, _brand_id(who), program_id, partner_id, body)
