"""The message catalog: every string a page can show, found in the templates (``_()``)
and in the page handlers (``page.gettext()``), what refusals and diagnoses say (marked
``N_()`` in ``core/messages.py`` and ``core/diagnosis.py``; the API's answers use them
too), plus the names that come from the code (notification type titles, statuses,
outcomes).

    python -m postback.web.messages      # add new strings to each catalog, keep the rest

A test checks that every language's catalog translates every string.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from postback.core import template_syntax
from postback.core.tokens import ACTION_TOKENS, CATALOG_TOKENS, INQUIRY_TOKENS
from postback.services.notification_settings import TYPES
from postback.web.i18n import _CATALOG, LOCALE_DIR

HERE = Path(__file__).parent
CORE = HERE.parent / "core"
#: the core modules whose messages are marked with ``N_()``
MARKED = ("messages.py", "diagnosis.py")
#: shown through _(value) in templates, so the extractor cannot see them: type titles,
#: states, and every token's meaning (the token picker)
FROM_CODE = (*(t.title for t in TYPES.values()),
             "pending", "held", "succeeded", "failed", "success", "retry", "permanent_failure",
             *(t.meaning for t in (*ACTION_TOKENS, *INQUIRY_TOKENS, *CATALOG_TOKENS)))


def extract() -> list[str]:
    found: dict[str, None] = {}
    for *_, message, _comments, _context in extract_from_dir(
            str(HERE / "templates"), method_map=[("**.html", "jinja2")],
            options_map={"**.html": {"extensions": "jinja2.ext.i18n",
                                     "trim_blocks": "true", "lstrip_blocks": "true"}}):
        found[message if isinstance(message, str) else message[0]] = None
    for *_, message, _comments, _context in extract_from_dir(
            str(HERE), method_map=[("*.py", "python")], keywords={"gettext": None}):
        found[message if isinstance(message, str) else message[0]] = None
    # what refusals and diagnoses say (the API's answers too): marked with N_() in core
    for *_, message, _comments, _context in extract_from_dir(
            str(CORE), method_map=[(name, "python") for name in MARKED],
            keywords={"N_": None}):
        found[message if isinstance(message, str) else message[0]] = None
    for message in (*FROM_CODE, *template_syntax.TEXTS):
        found[message] = None
    return list(found)


def update() -> None:
    for folder in _CATALOG.values():
        path = LOCALE_DIR / folder / "LC_MESSAGES" / "messages.po"
        old = Catalog(locale=folder)
        if path.exists():
            with open(path, "rb") as f:
                old = read_po(f, locale=folder)
        new = Catalog(locale=folder, project="postback", fuzzy=False)
        for message in extract():
            kept = old.get(message)
            new.add(message, kept.string if kept is not None else "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            write_po(f, new, width=100, omit_header=False, sort_output=False)
        missing = [m for m in new if m.id and not m.string]
        print(f"{path}: {len(new)} messages, {len(missing)} to translate")


if __name__ == "__main__":
    update()
