"""Body templates are checked as the documents they claim to be, and a template that passes
cannot be turned into anything else by a value.

The property tests vary the templates as well as the values: they generate well-formed
templates (which must pass), then mutate them at random; for every template the check
accepts, hostile values must still render a valid document of the same shape (the same
keys, elements, attributes and pairs) as harmless values do.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postback.core.render import BodyFormat, TemplateError, compile_template
from postback.core.template_syntax import check_body
from postback.core.tokens import ACTION_TOKENS
from tests.conftest import World
from tests.test_web import browser as browser_client
from tests.test_web import sign_in

VOCAB = {t.name: t for t in ACTION_TOKENS}
#: one token of each kind: text, int, money, date, items
NAMES = ("SubId1", "CampaignId", "Payout", "EventDate", "Items")
ITEMS = [{"sku": 'S"<1>&', "name": "x]]>y", "quantity": 2, "amount": "10.00"}]
HARMLESS: dict[str, Any] = {"SubId1": "x", "CampaignId": "1", "Payout": "1.00",
                            "EventDate": "2026-01-01T00:00:00+00:00", "Items": ITEMS}

any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
attack_text = st.one_of(any_text, st.sampled_from([
    '"]}, "evil": true, "x": ["', '\\', '\\"', '1\u0661', "\u0661\u0662.\u0660\u0660", "1e5",
    "-0", "</a><evil/>",
    "]]><evil/><![CDATA[", "-->", "?>", "&x=1", "a=b&c=d", "\r\n", "\u2028", "&amp;", "'\"",
    "", ">", "]", "]]", "><evil/><![CDATA[", "1" * 5000, "1e999", "' d='1",
]))
hostile_values = st.fixed_dictionaries(
    {name: attack_text for name in NAMES if name != "Items"}).map(
    lambda values: {**values, "Items": ITEMS})


def check(text: str, fmt: BodyFormat) -> None:
    check_body(text, compile_template(text, "body", VOCAB, fmt), fmt)


def problem(text: str, fmt: BodyFormat) -> tuple[int | None, int | None, str]:
    with pytest.raises(TemplateError) as caught:
        check(text, fmt)
    found = caught.value.problems[0]
    assert found.field == "body"
    return found.line, found.column, found.message


def render(text: str, fmt: BodyFormat, values: dict[str, Any]) -> str:
    return compile_template(text, "body", VOCAB, fmt).render(values)


# -- what the issue found, and the messages a person gets --------------------------------


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    ('{"id": {ActionId}, "payout": ', 1, 30, "ends too early"),
    ('{"id": "x\\{SubId1}"}', 1, 10, "backslash just before {SubId1}"),
    ('{"id": 1{Payout}}', 1, 9, "comma is missing before {Payout}"),
    ('{"{SubId1}": 1}', 1, 3, "{SubId1} stands in a name"),
    ('{\n  "a": 1,\n  "b": [1, 2,]\n}', 3, 14, "a value is missing here"),
    ('{"a": NaN}', 1, 7, "NaN is not JSON"),
    ('{"a": 1}\n{"b": 2}', 2, 1, "more after the end"),
    ('{"a": "line\nbreak"}', 1, 12, "line break or tab inside a string"),
])
def test_json_problems_name_line_column_and_fix(text: str, line: int, column: int,
                                                words: str) -> None:
    got_line, got_column, message = problem(text, BodyFormat.JSON)
    assert (got_line, got_column) == (line, column)
    assert message.startswith(f"line {line}, column {column}: ")
    assert words in message


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    ("<a><{ActionId}/></a>", 1, 5, "{ActionId} cannot stand here"),
    ('<a {ActionId}="1"/>', 1, 4, "{ActionId} cannot stand here"),
    ("<a>\n  <!-- {SubId1} -->\n</a>", 2, 8, "{SubId1} cannot stand inside a comment"),
    ("<a><!-- <![CDATA[ {SubId1} --></a>", 1, 19, "inside a comment"),
    ("<a><?pi {SubId1}?></a>", 1, 9, "inside a processing instruction"),
    ('<a b="{Items}"/>', 1, 7, "{Items} cannot stand here"),
    ("<a>\n<b></a>", 2, 6, "does not match"),
    ("<a>{SubId1}", 1, 12, "ends too early"),
    ("<!DOCTYPE a><a/>", 1, 12, "remove the <!DOCTYPE"),
    ("<a/><b/>", 1, 5, "exactly one outer element"),
])
def test_xml_problems_name_line_column_and_fix(text: str, line: int, column: int,
                                               words: str) -> None:
    assert problem(text, BodyFormat.XML)[:2] == (line, column)
    assert words in problem(text, BodyFormat.XML)[2]


@pytest.mark.parametrize(("text", "column", "words"), [
    ("{SubId1}=1", 1, "{SubId1} stands in a name"),
    ("id={ActionId}&", 14, "remove the & at the end"),
    ("id={ActionId}&&p=1", 15, "remove the extra &"),
    ("id={ActionId}&x", 15, "“x” has no value"),
    ("id=a b", 5, "a space; write it as +"),
    ("id=é", 4, "write %C3%A9"),
    ("id=1\n", 5, "a line break"),
    ("id=1=2", 5, "write = inside a value as %3D"),
    ("id=1;p=2", 5, "%3B"),
    ("id=%zz", 4, "a percent sign must be followed by two hex digits"),
    ("=1", 1, "needs a name"),
])
def test_form_problems_name_column_and_fix(text: str, column: int, words: str) -> None:
    line, got, message = problem(text, BodyFormat.FORM)
    assert (line, got) == (1, column)
    assert words in message


@pytest.mark.parametrize(("text", "fmt"), [
    ('{"id": "{ActionId}", "payout": {Payout}, "items": {Items}, "d": "{EventDate:%Y}"}',
     BodyFormat.JSON),
    ('[{SubId1}, "a\\\\{SubId1}", {"k": [null, true, -1.5e3]}]', BodyFormat.JSON),
    ('<?xml version="1.0"?>\n<pb id="{ActionId}" p=\'{Payout}\'><!-- a note -->'
     "<s>{SubId1}</s><c><![CDATA[{SubId1}]]></c><items>{Items}</items></pb>", BodyFormat.XML),
    ("id={ActionId}&payout={Payout}&note=a+b%20c&empty=", BodyFormat.FORM),
    ("", BodyFormat.JSON),
])
def test_well_formed_templates_pass(text: str, fmt: BodyFormat) -> None:
    check(text, fmt)


def test_unicode_digits_are_never_a_bare_json_number() -> None:
    body = render('{"p": {Payout}, "c": {CampaignId}}', BodyFormat.JSON,
                  {"Payout": "1\u0661", "CampaignId": "\u0661\u0662"})
    assert json.loads(body) == {"p": "1\u0661", "c": "\u0661\u0662"}


def test_the_backslash_attack_from_the_issue_is_refused_at_save() -> None:
    text = '{"ids": ["x\\{SubId1}"]}'
    with pytest.raises(TemplateError):
        check(text, BodyFormat.JSON)
    # what it would have sent: invalid JSON whose leading part carries an extra key
    sent = render(text, BodyFormat.JSON, {"SubId1": '"]}, "evil": true, "x": ["'})
    with pytest.raises(json.JSONDecodeError):
        json.loads(sent)


# -- generated templates ----------------------------------------------------------------

space = st.sampled_from(["", " ", "\n", "\t", "  "])
token = st.sampled_from(NAMES).map(lambda n: "{" + n + "}")
text_token = st.sampled_from(NAMES[:-1]).map(lambda n: "{" + n + "}")
# braces that can never make a token with their neighbours ("{" before "a}" would)
string_piece = st.one_of(st.sampled_from(["a", "B c", "\\\"", "\\\\", "\\n", "\\u00e9", "日本",
                                          "{ ", " }", "{1", ":", ","]), text_token)


@st.composite
def json_string(draw: st.DrawFn, tokens: bool = True) -> str:
    pieces = draw(st.lists(string_piece if tokens else st.sampled_from(["a", "k", "\\\""]),
                           max_size=4))
    return '"' + "".join(pieces) + '"'


def json_value() -> st.SearchStrategy[str]:
    scalar = st.one_of(st.sampled_from(["1", "-2.5", "true", "false", "null", "0e1"]),
                       token, json_string())
    return st.recursive(scalar, lambda inner: st.one_of(
        st.lists(st.tuples(space, inner, space), max_size=3).map(
            lambda xs: "[" + ",".join(a + v + b for a, v, b in xs) + "]"),
        st.dictionaries(st.sampled_from(["a", "b", "id", "x y", "ü"]),
                        st.tuples(space, inner), max_size=3).map(
            lambda d: "{" + ",".join(f'"{k}":{s}{v}' for k, (s, v) in d.items()) + "}")),
        max_leaves=8)


def json_shape(value: object) -> object:
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v) for v in value]
    return "scalar"


MUTATIONS = {
    BodyFormat.JSON: ['"', "\\", "{SubId1}", "{Payout}", "{Items}", ",", ":", "{", "}", "[", "]",
                      " ", "1", "\\u", "null", '":"', "'"],
    BodyFormat.XML: ["<", ">", "/", '"', "'", "=", "&", ";", "{SubId1}", "{Items}", "<!--",
                     "-->", "<![CDATA[", "]]>", "<?", "?>", " ", "a", "&#", "b=", "</a>", "]",
                     "]]", " xmlns:p='u'", "p:", ' xmlns="{SubId1}"', "\r"],
    BodyFormat.FORM: ["&", "=", "{SubId1}", "{Payout}", "%", "%2", "+", " ", "a", ";", "#"],
}


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str], fmt: BodyFormat) -> str:
    text = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and text:
            text = text[:at] + text[at + draw(st.integers(1, 3)):]
        else:
            text = text[:at] + draw(st.sampled_from(MUTATIONS[fmt])) + text[at:]
    return text


def accepted(text: str, fmt: BodyFormat) -> bool:
    """Whether the check passes a non-empty template (an empty body sends nothing)."""
    if not text:
        return False
    try:
        check(text, fmt)
    except TemplateError:
        return False
    return True


PROPERTY = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@given(json_value(), hostile_values)
@PROPERTY
def test_property_generated_json_templates_pass_and_keep_their_shape(
        text: str, values: dict[str, Any]) -> None:
    check(text, BodyFormat.JSON)
    assert json_shape(json.loads(render(text, BodyFormat.JSON, values))) == json_shape(
        json.loads(render(text, BodyFormat.JSON, HARMLESS)))


@given(mutated(json_value(), BodyFormat.JSON), hostile_values)
@PROPERTY
def test_property_no_accepted_json_template_and_no_value_adds_structure(
        text: str, values: dict[str, Any]) -> None:
    if not accepted(text, BodyFormat.JSON):
        return
    assert json_shape(json.loads(render(text, BodyFormat.JSON, values))) == json_shape(
        json.loads(render(text, BodyFormat.JSON, HARMLESS)))


xml_text_piece = st.one_of(st.sampled_from(["a", " ", "&amp;", "&#233;", "\n", "日"]), token)
cdata_piece = st.one_of(st.sampled_from(["a", "<b>", "&", "]]"]), token)


def xml_element() -> st.SearchStrategy[str]:
    attribute = st.tuples(st.sampled_from(["'", '"']),
                          st.lists(st.one_of(st.sampled_from(["v", "&lt;", " "]), text_token),
                                   max_size=3))
    leaf = st.one_of(
        st.lists(xml_text_piece, min_size=1, max_size=3).map("".join),
        st.lists(cdata_piece, max_size=3).map(lambda xs: "<![CDATA[" + "".join(xs) + "]]>"),
        st.just("<!-- note -->"))

    def element(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
        return st.tuples(st.sampled_from(["a", "b", "pb"]),
                         st.dictionaries(st.sampled_from(["id", "p", "x"]), attribute,
                                         max_size=2), children).map(_element_text)

    return element(st.lists(st.recursive(
        leaf, lambda inner: element(st.lists(inner, max_size=3)), max_leaves=6), max_size=3))


def _element_text(parts: tuple[str, dict[str, tuple[str, list[str]]], list[str]]) -> str:
    tag, attributes, children = parts
    attrs = "".join(f" {name}={quote}{''.join(value)}{quote}"
                    for name, (quote, value) in attributes.items())
    return f"<{tag}{attrs}>{''.join(children)}</{tag}>"


def xml_shape(element: ET.Element) -> object:
    return (element.tag, sorted(element.attrib), [xml_shape(child) for child in element])


@given(xml_element(), hostile_values)
@PROPERTY
def test_property_generated_xml_templates_pass_and_keep_their_shape(
        text: str, values: dict[str, Any]) -> None:
    check(text, BodyFormat.XML)
    assert xml_shape(ET.fromstring(render(text, BodyFormat.XML, values))) == xml_shape(
        ET.fromstring(render(text, BodyFormat.XML, HARMLESS)))


@given(mutated(xml_element(), BodyFormat.XML), hostile_values)
@PROPERTY
def test_property_no_accepted_xml_template_and_no_value_adds_markup(
        text: str, values: dict[str, Any]) -> None:
    if not accepted(text, BodyFormat.XML):
        return
    assert xml_shape(ET.fromstring(render(text, BodyFormat.XML, values))) == xml_shape(
        ET.fromstring(render(text, BodyFormat.XML, HARMLESS)))


form_value = st.lists(st.one_of(st.sampled_from(["a", "%20", "+", "-", "~", "%C3%A9"]), token),
                      max_size=3).map("".join)
form_body = st.lists(st.tuples(st.sampled_from(["id", "p", "sub_1", "a.b"]), form_value),
                     min_size=1, max_size=4).map(lambda ps: "&".join(f"{k}={v}" for k, v in ps))


def form_names(body: str) -> list[str]:
    return [k for k, _ in parse_qsl(body, keep_blank_values=True, strict_parsing=True)]


@given(form_body, hostile_values)
@PROPERTY
def test_property_generated_form_templates_pass_and_keep_their_names(
        text: str, values: dict[str, Any]) -> None:
    check(text, BodyFormat.FORM)
    assert form_names(render(text, BodyFormat.FORM, values)) == form_names(
        render(text, BodyFormat.FORM, HARMLESS))


@given(mutated(form_body, BodyFormat.FORM), hostile_values)
@PROPERTY
def test_property_no_accepted_form_template_and_no_value_adds_a_pair(
        text: str, values: dict[str, Any]) -> None:
    if not accepted(text, BodyFormat.FORM):
        return
    assert form_names(render(text, BodyFormat.FORM, values)) == form_names(
        render(text, BodyFormat.FORM, HARMLESS))


# -- where templates enter: the API, the test tool, the web form and its live preview -----

BROKEN = '{"id": "{ActionId}",\n "payout": {Payout},\n "sub": "x\\{SubId1}"}'


def test_every_way_in_refuses_a_broken_body_and_saves_nothing(world: World) -> None:
    call, partner, brand = world.service.call, world.partner_key, world.brand_key
    setting = {"url": "http://127.0.0.1:9/pb", "method": "POST", "body_format": "json",
               "body": BROKEN}
    refusals = [
        call("PUT", "/v1/event-notifications/action-lifecycle", partner, 422, json=setting),
        call("POST", "/v1/event-notifications/action-lifecycle/event-level", partner, 422,
             json={**setting, "program_id": world.program_id,
                   "event_type_id": world.event_type_id}),
        call("POST", f"/v1/partners/{world.partner_id}/postbacks", brand, 422,
             json={**setting, "event_type_id": world.event_type_id}),
        call("POST", "/v1/event-notifications/action-lifecycle/test", partner, 422,
             json=setting),
    ]
    for answer in refusals:
        assert answer["error"] == "invalid"
        assert answer["field"] == "body"
        assert answer["message"] == (
            "body: line 3, column 11: the backslash just before {SubId1} would let its value "
            "end the string; remove the backslash")
        assert answer["problems"][0] | {"suggestions": []} == {
            "field": "body", "token": "SubId1", "position": BROKEN.index("\\{"), "line": 3,
            "column": 11,
            "message": answer["message"].removeprefix("body: "), "suggestions": []}
    assert [t["setting"] for t in call("GET", "/v1/event-notifications", partner,
                                       200)["items"]] == [None] * 4
    assert call("GET", "/v1/event-notifications/action-lifecycle/event-level", partner,
                200) == {"items": [], "next_cursor": None}
    assert call("GET", f"/v1/partners/{world.partner_id}/postbacks", brand,
                200) == {"items": [], "next_cursor": None}


def test_the_web_form_and_preview_say_where_the_body_is_broken(world: World) -> None:
    client = browser_client(world)
    token = sign_in(client, world.partner_key)
    path = "/partner/event-notifications/action-lifecycle"
    preview = client.post(f"{path}/preview", headers={"X-CSRF-Token": token}, json={
        "url": "http://127.0.0.1:9/pb", "method": "POST", "body_format": "xml",
        "body": "<pb>\n  <id>{ActionId}</id>\n  <{SubId1}/>\n</pb>"}).json()
    assert preview["problems"][0]["message"].startswith(
        "line 3, column 4: {SubId1} cannot stand here")
    saved = client.post(path, data={"csrf_token": token, "url": "http://127.0.0.1:9/pb",
                                    "method": "POST", "body_format": "form",
                                    "body": "id={ActionId}&note=two words"})
    assert saved.status_code == 422
    assert "line 1, column 23: a space; write it as + (or %20)" in saved.text
    assert "id={ActionId}&amp;note=two words</textarea>" in saved.text  # what was typed stays


def test_a_broken_body_is_explained_in_the_callers_language(world: World) -> None:
    answer = world.service.client.put(
        "/v1/event-notifications/action-lifecycle",
        headers={"Authorization": f"Bearer {world.partner_key}", "Accept-Language": "zh-CN"},
        json={"url": "http://127.0.0.1:9/pb", "method": "POST", "body_format": "json",
              "body": BROKEN})
    assert answer.status_code == 422
    assert answer.json()["message"] == (
        "body：第 3 行第 11 列：{SubId1} 前面的反斜杠会让它的值提前结束字符串；请删掉这个反斜杠")
    client = browser_client(world)
    token = sign_in(client, world.partner_key)
    client.cookies.set("pb_lang", "zh")
    preview = client.post("/partner/event-notifications/action-lifecycle/preview",
                          headers={"X-CSRF-Token": token}, json={
        "url": "http://127.0.0.1:9/pb", "method": "POST", "body_format": "form",
        "body": "id={ActionId}&note=two words"}).json()
    assert preview["problems"][0]["message"] == "第 1 行第 23 列：这里有空格；请写成 +（或 %20）"


# -- what a hostile review found (each was accepted, then broke or reshaped the body) -----

@pytest.mark.parametrize(("text", "values"), [
    ("<a><![CDATA[]]{SubId1}><b/><![CDATA[]]></a>", {"SubId1": ""}),
    ("<a><![CDATA[{SubId1}><b/><![CDATA[]]></a>", {"SubId1": "]]"}),
    ("<a><![CDATA[x]]{SubId1}]]></a>", {"SubId1": "><evil/><![CDATA["}),
    ("<a><![CDATA[{SubId1}>{SubId2}]]></a>", {"SubId1": "]]", "SubId2": "<evil/><![CDATA["}),
    ("<a><![CDATA[{Items}]>]]></a>", {"Items": ITEMS}),
    ("<a>{SubId1}></a>", {"SubId1": "x]]"}),
    ("<a>]{SubId1}></a>", {"SubId1": "]"}),
])
def test_cdata_and_content_values_cannot_close_a_section_with_the_text_beside_them(
        text: str, values: dict[str, Any]) -> None:
    check(text, BodyFormat.XML)
    assert xml_shape(ET.fromstring(render(text, BodyFormat.XML, {**HARMLESS, **values}))) == \
        xml_shape(ET.fromstring(render(text, BodyFormat.XML, HARMLESS)))


@pytest.mark.parametrize(("text", "words"), [
    ("<a><!--<![CDATA[-->{SubId1}</a>", "{SubId1} cannot stand here"),
    ("<a><?p <![CDATA[?><b c='{SubId1}'/></a>", "{SubId1} cannot stand here"),
    ("<a>]]{SubId1}></a>", "{SubId1}: left empty (a missing value)"),
    ("<p:a>{SubId1}</p:a>", "namespace prefix that is not declared"),
    ('<a xmlns:p="{SubId1}"><p:b/></a>', "cannot stand inside a namespace declaration"),
    ('<a xmlns="{SubId1}"><b/></a>', "cannot stand inside a namespace declaration"),
    ('<?xml version="1.0" encoding="big5"?><a/>', 'declare encoding="UTF-8"'),
    ('<?xml version="1.0" encoding="rot13"?><a/>', 'declare encoding="UTF-8"'),
    ('<?xml version="1.0" encoding="US-ASCII"?><a>{SubId1}</a>', 'declare encoding="UTF-8"'),
    ("<a>\ud800</a>", "a lone surrogate"),
])
def test_xml_the_parser_places_every_token(text: str, words: str) -> None:
    assert words in problem(text, BodyFormat.XML)[2]


def test_hostile_json_texts_are_problems_not_crashes() -> None:
    assert "nest too deeply" in problem("[" * 1000 + "]" * 1000, BodyFormat.JSON)[2]
    assert "more than 4,000 digits" in problem('{"a": ' + "1" * 5000 + "}", BodyFormat.JSON)[2]
    assert problem('{"NaN": NaN}', BodyFormat.JSON)[:2] == (1, 9)
    assert problem('{"a":\n "Infinity",\n "b": Infinity}', BodyFormat.JSON)[:2] == (3, 7)
    check('{"\U000f0000": "{SubId1}"}', BodyFormat.JSON)  # a literal private-use name
    assert problem("a=\ud800", BodyFormat.FORM)[2].endswith("a lone surrogate: this is not "
                                                            "Unicode text; type the "
                                                            "character again")
    assert problem("<a>\r\r<b></a>", BodyFormat.XML)[:2] == (3, 6)  # CR ends a line too


def test_only_plain_decimals_stand_bare_in_json() -> None:
    body = '{"p": {Payout}, "s": {Status:A=1,B=2}}'
    for value in ("1" * 5000, "1e999", "1E5", "0x10"):
        assert json.loads(render(body, BodyFormat.JSON, {"Payout": value, "Status": value})) \
            == {"p": value, "s": value}
    assert json.loads(render(body, BodyFormat.JSON, {"Payout": "27.75", "Status": "B"})) == {
        "p": 27.75, "s": 2}
