"""The template renderer: every context's escaping, and proofs that values cannot inject."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postback.core.render import BodyFormat, TemplateError, compile_template
from postback.core.tokens import ACTION_TOKENS

VOCAB = {t.name: t for t in ACTION_TOKENS}
HOSTILE = 'a&b=c#d?e"f\\g<h>i]]>j\r\nk\tl ü 日本 \U0001f600 \'m%20n+o'

# Text XML 1.0 can carry (it has no way to carry most C0 controls, even as references).
_XML_CANNOT = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]))
xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters=_XML_CANNOT + "\ufffe\uffff"))
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


def url(template: str) -> str:
    return compile_template(template, "url", VOCAB).render({"SubId1": HOSTILE, "Payout": "7.50"})


def test_url_values_are_percent_encoded_and_cannot_add_parameters() -> None:
    rendered = url("https://pb.example/in?sub={SubId1}&payout={Payout}#frag")
    assert rendered == (
        "https://pb.example/in?sub=a%26b%3Dc%23d%3Fe%22f%5Cg%3Ch%3Ei%5D%5D%3Ej%0D%0Ak%09l%20"
        "%C3%BC%20%E6%97%A5%E6%9C%AC%20%F0%9F%98%80%20%27m%2520n%2Bo&payout=7.50#frag"
    )
    parts = urlsplit(rendered)
    assert dict(parse_qsl(parts.query)) == {"sub": HOSTILE, "payout": "7.50"}
    assert parts.fragment == "frag"


@given(any_text)
def test_property_no_url_value_can_add_a_parameter_path_or_fragment(value: str) -> None:
    template = compile_template("https://pb.example/a/{SubId1}?x={SubId1}&y=1", "url", VOCAB)
    parts = urlsplit(template.render({"SubId1": value}))
    assert parts.netloc == "pb.example"
    assert parts.fragment == ""
    assert parts.path.count("/") == 2
    assert parse_qsl(parts.query, keep_blank_values=True) == [("x", value), ("y", "1")]
    assert "\r" not in parts.geturl() and "\n" not in parts.geturl()


def test_json_string_context_escapes_and_bare_context_keeps_numbers() -> None:
    body = compile_template(
        '{"sub": "{SubId1}", "payout": {Payout}, "name": {CampaignName}, "lock": {LockingDate},'
        ' "items": {Items}}',
        "body", VOCAB, BodyFormat.JSON)
    items = [{"sku": 'S"1', "quantity": 2, "amount": "10.00"}]
    rendered = body.render({"SubId1": HOSTILE, "Payout": "7.50", "CampaignName": 'x", "y": "z',
                            "LockingDate": "", "Items": items})
    assert json.loads(rendered) == {"sub": HOSTILE, "payout": 7.50, "name": 'x", "y": "z',
                                    "lock": None, "items": items}
    assert '"payout": 7.50' in rendered  # money stays a bare number with 2 decimals


@given(any_text, any_text)
def test_property_no_json_value_can_add_structure(sub: str, name: str) -> None:
    body = compile_template('{"a": "{SubId1}", "b": {CampaignName}, "c": [{SubId1}]}',
                            "body", VOCAB, BodyFormat.JSON)
    parsed = json.loads(body.render({"SubId1": sub, "CampaignName": name}))
    assert parsed == {"a": sub, "b": name or None, "c": [sub or None]}


def test_xml_text_attribute_and_cdata_contexts() -> None:
    body = compile_template(
        '<pb sub="{SubId1}"><s>{SubId1}</s><c><![CDATA[{SubId1}]]></c><items>{Items}</items></pb>',
        "body", VOCAB, BodyFormat.XML)
    rendered = body.render({"SubId1": HOSTILE, "Items": [{"sku": "<a&b>", "quantity": 1}]})
    root = ET.fromstring(rendered)
    assert root.get("sub") == HOSTILE
    assert root.findtext("s") == HOSTILE
    assert root.findtext("c") == HOSTILE
    assert root.find("items/Item/Sku").text == "<a&b>"  # type: ignore[union-attr]


@given(xml_text)
@settings(max_examples=200)
def test_property_no_xml_value_can_add_markup(value: str) -> None:
    body = compile_template('<r a="{SubId1}"><t>{SubId1}</t><c><![CDATA[{SubId1}]]></c></r>',
                            "body", VOCAB, BodyFormat.XML)
    root = ET.fromstring(body.render({"SubId1": value}))
    assert [child.tag for child in root] == ["t", "c"]
    assert root.get("a") == value
    assert (root.findtext("t") or "") == value
    assert (root.findtext("c") or "") == value
    assert list(root.attrib) == ["a"]


def test_xml_replaces_characters_xml_cannot_carry() -> None:
    body = compile_template("<t>{SubId1}</t>", "body", VOCAB, BodyFormat.XML)
    assert ET.fromstring(body.render({"SubId1": "a\x01b"})).text == "a\ufffdb"


@given(any_text)
def test_property_no_form_value_can_add_a_field(value: str) -> None:
    body = compile_template("sub={SubId1}&payout={Payout}", "body", VOCAB, BodyFormat.FORM)
    rendered = body.render({"SubId1": value, "Payout": "1.00"})
    assert parse_qsl(rendered, keep_blank_values=True) == [("sub", value), ("payout", "1.00")]


def test_missing_values_render_empty() -> None:
    template = compile_template("https://x.example/?p={PromoCode}&c={ClearedDate}", "url", VOCAB)
    assert template.render({}) == "https://x.example/?p=&c="


def test_unknown_tokens_are_all_reported_with_the_closest_names() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template("https://x.example/?a={subid1}&b={ActionID}&c={Nope}", "url", VOCAB)
    problems = err.value.problems
    assert [p.token for p in problems] == ["subid1", "ActionID", "Nope"]
    assert problems[0].suggestions[0] == "SubId1"
    assert problems[1].suggestions[0] == "ActionId"
    assert "unknown token {subid1}; did you mean {SubId1}" in problems[0].message


def test_tokens_may_not_choose_the_host() -> None:
    with pytest.raises(TemplateError, match="scheme or host"):
        compile_template("https://{SubId1}.example.com/x", "url", VOCAB)
    compile_template("https://example.com/{SubId1}", "url", VOCAB)


def test_templates_over_64_kib_are_refused() -> None:
    with pytest.raises(TemplateError, match="64 KiB"):
        compile_template("x" * (64 * 1024 + 1), "body", VOCAB, BodyFormat.JSON)


def test_literal_braces_that_are_not_tokens_stay() -> None:
    body = compile_template('{"a": {"b": "{Oid}"}}', "body", VOCAB, BodyFormat.JSON)
    assert json.loads(body.render({"Oid": "O-1"})) == {"a": {"b": "O-1"}}


def test_value_maps_and_date_formats() -> None:
    body = compile_template(
        '{"s": {Status:PENDING=0,APPROVED=1,REVERSED=2}, "d": "{EventDate:%Y-%m-%d}", '
        '"t": "{Trigger:TRACKED=new}"}', "body", VOCAB, BodyFormat.JSON)
    rendered = body.render({"Status": "APPROVED", "EventDate": "2026-11-02T18:04:05+00:00",
                            "Trigger": "MODIFIED"})
    assert json.loads(rendered) == {"s": 1, "d": "2026-11-02", "t": "MODIFIED"}
    url = compile_template("https://x.example/?d={LockingDate:%d/%m/%Y %H:%M}", "url", VOCAB)
    assert url.render({"LockingDate": "2026-12-02T18:04:05+00:00"}) == (
        "https://x.example/?d=02%2F12%2F2026%2018%3A04")
    assert url.render({}) == "https://x.example/?d="


@pytest.mark.parametrize(("template", "message"), [
    ("{EventDate:YYYY}", "a date format needs strftime codes"),
    ("{Status:PENDING}", "a value map is KEY=VALUE pairs"),
    ("{Items:x=1}", "{Items} takes no format"),
])
def test_bad_specs_are_refused(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        compile_template(f"https://x.example/?a={template}", "url", VOCAB)
