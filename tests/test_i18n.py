"""Every string the web app shows is in each language's catalog, with the same
placeholders; the language comes from the switch or the browser."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from postback.web.i18n import LOCALE_DIR, negotiate, translations
from postback.web.messages import extract

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def test_the_chinese_catalog_translates_every_string_with_its_placeholders() -> None:
    zh = translations("zh")
    messages = extract()
    assert len(messages) > 200  # the extractor found the templates and the handlers
    with open(LOCALE_DIR / "zh_Hans" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    untranslated = [m for m in messages if not (catalog.get(m) and catalog.get(m).string)]
    assert untranslated == []
    assert zh.gettext("Event Notifications") == "事件通知"
    for message in messages:
        assert set(PLACEHOLDER.findall(zh.gettext(message))) == \
            set(PLACEHOLDER.findall(message)), message


@pytest.mark.parametrize("cookie,header,expected", [
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    (None, "zh-Hans", "zh"),
    (None, "fr-FR,fr;q=0.9,zh;q=0.5", "zh"),
    (None, "en-GB,zh;q=0.1", "en"),
    (None, "zh;q=0, en;q=0.5", "en"),
    (None, "de-DE", "en"),
    (None, None, "en"),
    ("zh", "en-US", "zh"),
    ("xx", "zh-TW", "zh"),
])
def test_language_negotiation(cookie: str | None, header: str | None, expected: str) -> None:
    assert negotiate(cookie, header) == expected
