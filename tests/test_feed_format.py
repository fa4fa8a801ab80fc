"""Golden files: every feed format, byte for byte, and read back by its own parser."""

from __future__ import annotations

import csv
import gzip
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from postback.core.feed_format import FORMATS, FeedWriter, content_type, file_suffix

COLUMNS = ["ActionId", "Amount", "SubId1", "Items"]
ITEMS = [{"sku": "S-1", "name": "Run & <fun>", "category": None, "quantity": 2,
          "amount": "10.00", "payout": "1.00"}]
ROWS: list[dict[str, Any]] = [
    {"ActionId": "1", "Amount": "100.00", "SubId1": 'a,"b"\r\nc', "Items": ITEMS},
    {"ActionId": "2", "Amount": "-5.50", "SubId1": "tab\there|pipe é", "Items": []},
    {"ActionId": "3", "Amount": "", "Items": None},  # SubId1 missing: an empty cell
]
ITEMS_CSV = ('"[{""sku"":""S-1"",""name"":""Run & <fun>"",""category"":null,""quantity"":2,'
             '""amount"":""10.00"",""payout"":""1.00""}]"')

GOLDEN = {
    "csv": ("ActionId,Amount,SubId1,Items\r\n"
            f'1,100.00,"a,""b""\r\nc",{ITEMS_CSV}\r\n'
            "2,-5.50,tab\there|pipe é,[]\r\n"
            "3,,,\r\n").encode(),
    "tab": ("ActionId\tAmount\tSubId1\tItems\r\n"
            f'1\t100.00\t"a,""b""\r\nc"\t{ITEMS_CSV}\r\n'
            '2\t-5.50\t"tab\there|pipe é"\t[]\r\n'
            "3\t\t\t\r\n").encode(),
    "pipe": ("ActionId|Amount|SubId1|Items\r\n"
             f'1|100.00|"a,""b""\r\nc"|{ITEMS_CSV}\r\n'
             '2|-5.50|"tab\there|pipe é"|[]\r\n'
             "3|||\r\n").encode(),
    "xml": ('<?xml version="1.0" encoding="UTF-8"?>\n<Actions>\n'
            '<Action><ActionId>1</ActionId><Amount>100.00</Amount>'
            '<SubId1>a,"b"&#13;\nc</SubId1><Items><Item><Sku>S-1</Sku>'
            "<Name>Run &amp; &lt;fun&gt;</Name><Category></Category><Quantity>2</Quantity>"
            "<Amount>10.00</Amount><Payout>1.00</Payout></Item></Items></Action>\n"
            "<Action><ActionId>2</ActionId><Amount>-5.50</Amount>"
            "<SubId1>tab\there|pipe é</SubId1><Items></Items></Action>\n"
            "<Action><ActionId>3</ActionId><Amount></Amount><SubId1></SubId1>"
            "<Items></Items></Action>\n"
            "</Actions>\n").encode(),
    "jsonl": ('{"ActionId":"1","Amount":"100.00","SubId1":"a,\\"b\\"\\r\\nc","Items":'
              '[{"sku":"S-1","name":"Run & <fun>","category":null,"quantity":2,'
              '"amount":"10.00","payout":"1.00"}]}\n'
              '{"ActionId":"2","Amount":"-5.50","SubId1":"tab\\there|pipe é","Items":[]}\n'
              '{"ActionId":"3","Amount":"","SubId1":"","Items":""}\n').encode(),
}


def write(fmt: str, rows: list[dict[str, Any]] = ROWS, **options: Any) -> bytes:
    out = io.BytesIO()
    writer = FeedWriter(out, fmt, COLUMNS, root="Actions", element="Action", **options)
    for row in rows:
        writer.write(row)
    writer.close()
    assert writer.rows == len(rows)
    return out.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_its_golden_file(fmt: str) -> None:
    assert write(fmt) == GOLDEN[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_gzip_holds_the_same_bytes_and_is_the_same_every_time(fmt: str) -> None:
    zipped = write(fmt, gzip=True)
    assert zipped[:2] == b"\x1f\x8b"
    assert gzip.decompress(zipped) == GOLDEN[fmt]
    assert write(fmt, gzip=True) == zipped  # no time or name inside: reproducible
    assert file_suffix(fmt, True).endswith(".gz") and content_type(fmt, True) == \
        "application/gzip"


def expected_cells(row: dict[str, Any]) -> list[str]:
    items = row.get("Items")
    return [row.get("ActionId") or "", row.get("Amount") or "", row.get("SubId1") or "",
            json.dumps(items, separators=(",", ":"), ensure_ascii=False) if items is not None
            else ""]


@pytest.mark.parametrize(("fmt", "dialect"), [("csv", csv.excel), ("tab", csv.excel_tab),
                                              ("pipe", None)])
def test_delimited_files_read_back_exactly(fmt: str, dialect: Any) -> None:
    text = io.StringIO(write(fmt).decode(), newline="")
    reader = csv.reader(text, dialect=dialect) if dialect else csv.reader(text, delimiter="|")
    header, *cells = list(reader)
    assert header == COLUMNS
    assert cells == [expected_cells(r) for r in ROWS]


def test_xml_reads_back_exactly() -> None:
    root = ET.fromstring(write("xml"))
    assert root.tag == "Actions"
    got = [{c.tag: c.text or "" for c in el if c.tag != "Items"} for el in root]
    assert got == [{"ActionId": "1", "Amount": "100.00", "SubId1": 'a,"b"\r\nc'},
                   {"ActionId": "2", "Amount": "-5.50", "SubId1": "tab\there|pipe é"},
                   {"ActionId": "3", "Amount": "", "SubId1": ""}]
    item = root[0].find("Items/Item")
    assert item is not None and item.findtext("Name") == "Run & <fun>"


def test_jsonl_reads_back_exactly() -> None:
    lines = write("jsonl").decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"ActionId": "1", "Amount": "100.00", "SubId1": 'a,"b"\r\nc', "Items": ITEMS},
        {"ActionId": "2", "Amount": "-5.50", "SubId1": "tab\there|pipe é", "Items": []},
        {"ActionId": "3", "Amount": "", "SubId1": "", "Items": ""}]


def test_without_a_header_row_and_with_characters_xml_cannot_carry() -> None:
    assert write("csv", header=False) == GOLDEN["csv"].split(b"\r\n", 1)[1]
    odd = [{"ActionId": "1\x01\x0b", "Amount": "x]]>y", "SubId1": "\ufffe", "Items": []}]
    root = ET.fromstring(write("xml", odd))
    assert root[0].findtext("ActionId") == "1\ufffd\ufffd"
    assert root[0].findtext("Amount") == "x]]>y"
    assert root[0].findtext("SubId1") == "\ufffd"


def test_an_empty_feed_is_a_valid_file() -> None:
    assert write("csv", []) == b"ActionId,Amount,SubId1,Items\r\n"
    assert ET.fromstring(write("xml", [])).tag == "Actions"
    assert write("jsonl", []) == b""
