"""Data feed files, written a row at a time into a binary stream: CSV, TAB, PIPE, XML and
JSON Lines, optionally gzip-compressed.

Every cell is the token's value exactly as a postback carries it (the same strings:
money as ``"27.75"``, dates as ISO 8601 UTC, an empty string for a value the change does
not have). ``Items``, the one JSON-valued token, is compact JSON text in CSV, TAB and PIPE
cells, a JSON array in JSON Lines, and ``<Item>`` elements in XML, as in JSON and XML
postbacks.

* ``csv``: RFC 4180 (the csv module's ``excel`` dialect: comma, ``"`` quoting when
  needed, CRLF line ends), a header row of the column names unless turned off;
* ``tab`` and ``pipe``: the same with a tab or ``|`` between cells;
* ``xml``: ``<?xml version="1.0" encoding="UTF-8"?>``, then one root element and one
  element per row whose children are the columns, named as the tokens are; text escaped
  as XML postbacks escape it (characters XML 1.0 cannot carry become U+FFFD);
* ``jsonl``: one JSON object per line (``\\n``), keys the column names in their order.

Pure: the writer is given the stream; nothing here opens a file.
"""

from __future__ import annotations

import csv
import gzip as gzip_module
import io
import json
from collections.abc import Mapping, Sequence
from typing import IO, Literal

from postback.core.render import Value

Format = Literal["csv", "tab", "pipe", "xml", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "tab", "pipe", "xml", "jsonl")

EXTENSIONS: dict[str, str] = {"csv": "csv", "tab": "tsv", "pipe": "txt", "xml": "xml",
                              "jsonl": "jsonl"}
CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "tab": "text/tab-separated-values; charset=utf-8",
    "pipe": "text/plain; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
GZIP_CONTENT_TYPE = "application/gzip"


class _Pipe(csv.excel):
    delimiter = "|"


_DIALECTS: dict[str, type[csv.Dialect]] = {"csv": csv.excel, "tab": csv.excel_tab,
                                           "pipe": _Pipe}


def _items_json(value: Sequence[Mapping[str, object]]) -> str:
    return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))


def cell_text(value: Value) -> str:
    """A value as one text cell: the string itself; ``Items`` as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _items_json(value)


_XML_INVALID = {c: "\ufffd" for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20),
                                      0xFFFE, 0xFFFF)}
_XML_ESCAPES = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord("\r"): "&#13;"}
_ITEM_FIELDS = (("sku", "Sku"), ("name", "Name"), ("category", "Category"),
                ("quantity", "Quantity"), ("amount", "Amount"), ("payout", "Payout"))


def xml_text(text: str) -> str:
    """Text content, escaped: ``&``, ``<``, ``>``, and CR as a reference (a parser would
    turn a bare CR into LF); characters XML 1.0 cannot carry become U+FFFD."""
    return text.translate(_XML_INVALID).translate(_XML_ESCAPES)


def _xml_value(value: Value) -> str:
    if value is None or isinstance(value, str):
        return xml_text(value or "")
    return "".join(
        "<Item>" + "".join(
            f"<{tag}>{xml_text('' if item.get(key) is None else str(item.get(key)))}</{tag}>"
            for key, tag in _ITEM_FIELDS) + "</Item>"
        for item in value)


def file_suffix(fmt: str, gzip: bool) -> str:
    """``.csv``, ``.xml.gz``, ...: the ending of a feed file's name."""
    return "." + EXTENSIONS[fmt] + (".gz" if gzip else "")


def content_type(fmt: str, gzip: bool) -> str:
    return GZIP_CONTENT_TYPE if gzip else CONTENT_TYPES[fmt]


class FeedWriter:
    """Write rows of ``{column: value}`` into ``out`` (a binary stream it does not close).

    ``root`` and ``element`` name the XML document's root and each row's element (e.g.
    ``Actions`` and ``Action``). Call :meth:`close` once, after the last row: it writes
    what ends the document and finishes the gzip stream. ``rows`` counts the rows written.
    """

    def __init__(self, out: IO[bytes], fmt: str, columns: Sequence[str], *,
                 gzip: bool = False, header: bool = True, root: str = "Rows",
                 element: str = "Row") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown feed format {fmt!r}")
        if not columns:
            raise ValueError("a feed needs at least one column")
        self.fmt = fmt
        self.columns = tuple(columns)
        self.rows = 0
        self._zip = (gzip_module.GzipFile(fileobj=out, mode="wb", mtime=0, filename="")
                     if gzip else None)
        raw: IO[bytes] = self._zip if self._zip is not None else out  # type: ignore[assignment]
        self._text = io.TextIOWrapper(raw, encoding="utf-8", newline="",
                                      write_through=False)
        self._element = element
        self._root = root
        self._csv = (csv.writer(self._text, dialect=_DIALECTS[fmt])
                     if fmt in _DIALECTS else None)
        if self._csv is not None and header:
            self._csv.writerow(self.columns)
        elif fmt == "xml":
            self._text.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>\n')

    def write(self, values: Mapping[str, Value]) -> None:
        """One row: each column's value (a column the values lack is an empty cell)."""
        if self._csv is not None:
            self._csv.writerow([cell_text(values.get(c)) for c in self.columns])
        elif self.fmt == "xml":
            cells = "".join(f"<{c}>{_xml_value(values.get(c))}</{c}>" for c in self.columns)
            self._text.write(f"<{self._element}>{cells}</{self._element}>\n")
        else:
            row = {c: (v if isinstance(v := values.get(c), list) else cell_text(v))
                   for c in self.columns}
            self._text.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            self._text.write("\n")
        self.rows += 1

    def close(self) -> None:
        if self.fmt == "xml":
            self._text.write(f"</{self._root}>\n")
        self._text.flush()
        self._text.detach()
        if self._zip is not None:
            self._zip.close()  # writes the trailer; ``out`` itself stays open
