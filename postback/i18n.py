"""Languages: English (the source strings) and Simplified Chinese, from message catalogs,
for the web app's pages and the API's refusals alike.

The web app's language is the ``pb_lang`` cookie (the switch in every page) or else the
best match of the browser's ``Accept-Language``; the API's is ``Accept-Language``. The
catalogs are gettext ``.po`` files under ``web/locale/`` (the web app's extractor,
``python -m postback.web.messages``, writes them), compiled in memory when first used, so
there is no build step.
"""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from postback.core.messages import Message

LOCALE_DIR = Path(__file__).parent / "web" / "locale"
LANGUAGES = {"en": "English", "zh": "简体中文"}  # code → its own name, for the switch
CATALOGS = {"zh": "zh_Hans"}  # code → catalog folder
DEFAULT = "en"


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    wanted = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            wanted.append((quality, tag.strip()))
    for _, tag in sorted(wanted, key=lambda w: -w[0]):
        code = tag.split("-")[0].lower()
        if code in LANGUAGES:
            return code
    return DEFAULT


@cache
def translations(code: str) -> NullTranslations:
    folder = CATALOGS.get(code)
    if folder is None:
        return NullTranslations()
    with open(LOCALE_DIR / folder / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale=Locale.parse(folder))
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def say(message: Message, code: str) -> str:
    """``message`` in the language ``code``."""
    return message.render(translations(code).gettext)
