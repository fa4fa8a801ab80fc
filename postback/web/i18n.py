"""The web app's languages: ``postback/i18n.py`` (the catalogs are shared with the API's
refusals), under the names the pages and the extractor use."""

from __future__ import annotations

from postback.i18n import CATALOGS as _CATALOG
from postback.i18n import DEFAULT, LANGUAGES, LOCALE_DIR, negotiate, say, translations

__all__ = ["DEFAULT", "LANGUAGES", "LOCALE_DIR", "_CATALOG", "negotiate", "say",
           "translations"]
