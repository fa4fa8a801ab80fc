"""The documentation is generated from, or checked against, the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from postback.reference import example_request, token_reference
from postback.services.notification_settings import TYPES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"<!-- example:([a-z-]+) -->\n```json\n(.*?)```.*?```http\n(.*?)```", re.S)


def test_docs_tokens_md_is_the_generated_reference() -> None:
    assert (ROOT / "docs" / "tokens.md").read_text() == token_reference(), (
        "run: .venv/bin/postback tokens > docs/tokens.md")


def test_readme_shows_every_type_with_the_request_a_receiver_really_gets() -> None:
    found = EXAMPLE.findall((ROOT / "README.md").read_text())
    assert sorted(slug for slug, _, _ in found) == sorted(TYPES)
    for slug, setting, request in found:
        assert example_request(slug, json.loads(setting)) == request.strip(), slug


@pytest.mark.parametrize("slug", sorted(TYPES))
def test_every_registry_example_is_accepted_by_its_own_template(slug: str) -> None:
    tokens = "&".join(f"{name}={{{name}}}" for name in TYPES[slug].vocabulary)
    assert example_request(slug, {"url": f"https://x.example/?{tokens}"}).startswith("GET")
