"""The verification code that docs/security.md prints ("Verifying a postback") works: each
language's block is taken from the document itself (the fenced block holding a
``verify: <language>`` comment line), so the document cannot drift from what is tested,
and run with that language's own interpreter against real postbacks that a running service
sent to a real receiver on loopback: GET and POST, v1 and v1a, a rotation and a test, and
tampered copies of them. Python and Node run everywhere; PHP and Go where ``php`` and
``go`` are installed (skipped, saying so, where they are not)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from postback.core.signing import new_secret, public_key, secret_key, signature_headers
from postback.core.urls import url_template, wire_url
from tests.conftest import World
from tests.receiver import Received, Receiver

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
LIFECYCLE = "/v1/event-notifications/action-lifecycle"
FENCE = re.compile(r"^```([a-z]+)\n(.*?)^```$", re.S | re.M)
TAG = re.compile(r"^(?:#|//) verify: ([a-z]+)$", re.M)


def documented_blocks() -> dict[str, str]:
    """The tagged code blocks of docs/security.md, by language."""
    found: dict[str, str] = {}
    for _, code in FENCE.findall(DOC.read_text()):
        tag = TAG.search(code)
        if tag is not None:
            assert tag.group(1) not in found, f"two blocks tagged verify: {tag.group(1)}"
            found[tag.group(1)] = code
    return found


# -- each language: where its block goes, and a harness that feeds it the cases ----------
# A case is one request as the receiver got it: {key, method, scheme, target (the request
# target), headers (as received, Host included), body (base64)}; a harness rebuilds the URL
# with the block's own function from the Host header and the target, calls its verify
# function, and prints a JSON list of booleans.

PY_HARNESS = """\
import base64, json, runpy, sys
block = runpy.run_path(sys.argv[1])
out = []
for c in json.load(sys.stdin):
    host = next(v for k, v in c["headers"].items() if k.lower() == "host")
    url = block["received_url"](c["scheme"], host, c["target"])
    out.append(block["verify_postback"](c["key"], c["method"], url, c["headers"],
                                        base64.b64decode(c["body"])))
print(json.dumps(out))
"""

NODE_HARNESS = """\
const { receivedUrl, verifyPostback } = require(process.argv[2]);
const cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const out = cases.map((c) => {
  // what Node's http server hands a handler: names in lower case, the raw target as req.url
  const headers = Object.fromEntries(
    Object.entries(c.headers).map(([name, value]) => [name.toLowerCase(), value]));
  const req = { method: c.method, url: c.target, headers };
  return verifyPostback(c.key, req.method, receivedUrl(req, c.scheme), req.headers,
                        Buffer.from(c.body, 'base64'));
});
console.log(JSON.stringify(out));
"""

PHP_HARNESS = """\
<?php
require $argv[1];
$out = [];
foreach (json_decode(file_get_contents('php://stdin'), true) as $c) {
    // what PHP's SAPI sets for a request
    $_SERVER['HTTP_HOST'] = array_change_key_case($c['headers'], CASE_LOWER)['host'];
    $_SERVER['REQUEST_URI'] = $c['target'];
    $out[] = postback_verify($c['key'], $c['method'], postback_received_url($c['scheme']),
                             $c['headers'], base64_decode($c['body'], true));
}
echo json_encode($out), "\\n";
"""

GO_HARNESS = """\
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

type testCase struct {
	Key     string            `json:"key"`
	Method  string            `json:"method"`
	Scheme  string            `json:"scheme"`
	Target  string            `json:"target"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := []bool{}
	for _, c := range cases {
		// what net/http hands a handler: Host in r.Host, the raw target in r.RequestURI
		header := http.Header{}
		for name, value := range c.Headers {
			header.Add(name, value)
		}
		r := &http.Request{Method: c.Method, Host: header.Get("Host"), RequestURI: c.Target,
			Header: header}
		body, err := base64.StdEncoding.DecodeString(c.Body)
		if err != nil {
			panic(err)
		}
		out = append(out, VerifyPostback(c.Key, r.Method, ReceivedURL(r, c.Scheme), r.Header,
			body) == nil)
	}
	printed, _ := json.Marshal(out)
	fmt.Println(string(printed))
}
"""


@dataclass(frozen=True)
class Language:
    name: str
    executable: str
    block_file: str
    harness_file: str
    harness: str

    def command(self, folder: Path) -> list[str]:
        block, harness = str(folder / self.block_file), str(folder / self.harness_file)
        if self.name == "python":
            return [sys.executable, harness, block]
        if self.name == "go":
            return ["go", "run", block, harness]
        return [self.executable, harness, block]

    def prepare(self, code: str) -> str:
        """The block as the file it is run from: Go's becomes part of the harness's package
        main (a receiver pastes it into its own package)."""
        if self.name == "go":
            code, n = re.subn(r"^package \w+$", "package main", code, count=1, flags=re.M)
            assert n == 1, "the Go block has no package clause"
        return code


LANGUAGES = {
    "python": Language("python", sys.executable, "verify.py", "harness.py", PY_HARNESS),
    "node": Language("node", "node", "verify.js", "harness.js", NODE_HARNESS),
    "php": Language("php", "php", "verify.php", "harness.php", PHP_HARNESS),
    "go": Language("go", "go", "verify.go", "main.go", GO_HARNESS),
}


def _language_param(name: str) -> Any:
    exe = LANGUAGES[name].executable
    missing = shutil.which(exe) is None
    return pytest.param(name, id=name, marks=pytest.mark.skipif(
        missing, reason=f"{exe} is not installed: the {name} block of docs/security.md "
                        "is not run here"))


def run_block(language: Language, cases: list[Case], folder: Path) -> list[bool]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / language.block_file).write_text(language.prepare(documented_blocks()[
        language.name]))
    (folder / language.harness_file).write_text(language.harness)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod",
           "GO111MODULE": "auto"}
    done = subprocess.run(language.command(folder), input=json.dumps([c.wire() for c in cases]),
                          capture_output=True, text=True, timeout=300, cwd=folder, env=env)
    assert done.returncode == 0, f"{language.name} failed:\n{done.stdout}\n{done.stderr}"
    results: list[bool] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    return results


# -- the requests -------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One request as the receiver got it, the key it is checked with, and whether the
    documented code must accept it."""

    label: str
    expect: bool
    key: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    scheme: str = "http"

    @classmethod
    def of(cls, label: str, expect: bool, key: str, req: Received) -> Case:
        return cls(label, expect, key, req.method, req.path, dict(req.headers), req.body)

    def wire(self) -> dict[str, Any]:
        return {"key": self.key, "method": self.method, "scheme": self.scheme,
                "target": self.target, "headers": self.headers,
                "body": base64.b64encode(self.body).decode()}

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers.items() if k.lower() == name)

    def with_headers(self, label: str, expect: bool, **changes: str | None) -> Case:
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in {n.replace("_", "-") for n in changes}}
        headers.update({k.replace("_", "-"): v for k, v in changes.items() if v is not None})
        return replace(self, label=label, expect=expect, headers=headers)

    def resigned(self, label: str, expect: bool, live_secret: str, age: int) -> Case:
        """This request signed again, genuinely, with the live key but a timestamp ``age``
        seconds in the past (negative: ahead), as the service would have signed it then."""
        content = (self.body if self.method != "GET"
                   else f"{self.scheme}://{self.header('host')}{self.target}".encode())
        signed = signature_headers(self.header("webhook-id"), int(time.time()) - age, content,
                                   (secret_key(live_secret),))
        return self.with_headers(label, expect, webhook_timestamp=signed["webhook-timestamp"],
                                 webhook_signature=signed["webhook-signature"])


def _verifying_key(secret: str, public: str | None) -> str:
    """What a receiver holds: the whsec_ secret of a v1 setting, the whpk_ key of a v1a."""
    return public if secret.startswith("whsk_") and public else secret


def _save(world: World, url: str, scheme: str, **extra: Any) -> dict[str, Any]:
    return world.subscribe(url, signed=True, signing_scheme=scheme, **extra)


def capture(world: World, receiver: Receiver, scheme: str) -> list[Case]:
    """Real postbacks of one signed setting, and tampered copies, with what the documented
    code must say of each."""
    # 1. a GET whose URL holds what a sender might rewrite: a lower-case escape in the path
    #    (libcurl upper-cases those), dot segments (kept: PATH_AS_IS), brackets, a value
    #    that needs encoding
    saved = _save(world, f"{receiver.url}/in/%c3%a9/./a/../b?id={{ActionId}}&sub={{SubId1}}"
                         "&e=%7e&r=[1]", scheme)
    live = saved["signing_secret"]
    assert live.startswith("whsk_" if scheme == "v1a" else "whsec_")
    key = _verifying_key(live, saved["signing_public_key"])
    assert saved["url"].startswith(f"{receiver.url}/in/%C3%A9/./a/../b?")  # saved as sent
    world.report(sub_id1="a b&c/é%")
    get = Case.of("GET", True, key, receiver.wait_for(1)[0])
    assert get.method == "GET" and get.target.startswith("/in/%C3%A9/./a/../b?id=")
    assert "&sub=a%20b%26c%2F%C3%A9%25&e=%7e&r=[1]" in get.target
    # 2. a GET to a URL with no path: sent as "/", and signed so
    again = _save(world, f"http://127.0.0.1:{receiver.port}?id={{ActionId}}", scheme)
    assert "signing_secret" not in again  # saving again keeps the key
    assert again["signing_public_key"] == saved["signing_public_key"]
    no_sub = world.report()  # no SubId1: an empty value, for the test below
    bare = Case.of("GET, no path", True, key, receiver.wait_for(2)[1])
    assert bare.target.startswith("/?id=")
    # 3. a POST (its body has non-ASCII characters and quotes)
    _save(world, f"{receiver.url}/post?src=pb", scheme, method="POST",
          body='{"id": "{ActionId}", "sub": "{SubId1}", "payout": {Payout}}')
    world.report(sub_id1='é "quoted"')
    post = Case.of("POST", True, key, receiver.wait_for(3)[2])
    assert post.method == "POST" and '"sub": "é \\"quoted\\""'.encode() in post.body
    # 4. tests from the test tool: signed with the test key, never the live one
    test = world.partner("POST", f"{LIFECYCLE}/test", 200, json={})
    test_key = test["test_signing_public_key"] if scheme == "v1a" else test["test_signing_secret"]
    tested = Case.of("test POST", True, test_key, receiver.wait_for(4)[3])
    assert tested.header("webhook-test") == "true"
    test = world.partner("POST", f"{LIFECYCLE}/test", 200, json={
        "method": "GET", "url": f"{receiver.url}/t?{{SubId1}}", "sample_id": no_sub["id"]})
    tested_get = Case.of("test GET", True, test_key, receiver.wait_for(5)[4])
    assert tested_get.target == "/t"  # an empty query is not sent, nor signed
    # 5. a rotation: two signatures, and a receiver holding either key accepts
    rotated = world.partner("POST", f"{LIFECYCLE}/signing-secret/rotate", 200, json={})
    new_key = _verifying_key(rotated["signing_secret"], rotated["signing_public_key"])
    world.report()
    both = Case.of("rotation, previous key", True, key, receiver.wait_for(6)[5])
    assert len(both.header("webhook-signature").split(" ")) == 2
    stranger = new_secret(scheme)
    wrong = public_key(stranger) or stranger

    changed_query = get.target.replace("sub=a%20b", "sub=a%20c")
    assert changed_query != get.target
    flipped = bytearray(post.body)
    flipped[post.body.index(b'"id": "') + 7] ^= 1
    return [
        get,
        replace(get, label="GET, a query parameter changed", expect=False,
                target=changed_query),
        replace(get, label="GET, an escape in another case", expect=False,
                target=get.target.replace("%C3%A9", "%c3%a9", 1)),
        replace(get, label="GET, rebuilt with another scheme", expect=False, scheme="https"),
        replace(get, label="GET, a wrong key", expect=False, key=wrong),
        get.resigned("GET, 10 minutes old", False, live, 600),
        bare,
        post,
        replace(post, label="POST, a body byte changed", expect=False, body=bytes(flipped)),
        replace(post, label="POST, one byte added", expect=False, body=post.body + b" "),
        # only the body is signed: a POST's query is not covered (docs/security.md says so)
        replace(post, label="POST, its (unsigned) query changed", target="/post?src=other"),
        post.resigned("POST, signed again now", True, live, 0),
        post.resigned("POST, 10 minutes old", False, live, 600),
        post.resigned("POST, 10 minutes ahead", False, live, -600),
        post.resigned("POST, 4 minutes old", True, live, 240),
        replace(post, label="POST, a wrong key", expect=False, key=wrong),
        post.with_headers("POST, no signature", False, webhook_signature=None),
        post.with_headers("POST, the signature of another postback", False,
                          webhook_signature=get.header("webhook-signature")),
        tested,
        replace(tested, label="test POST, the live key", expect=False, key=key),
        tested_get,
        replace(tested_get, label="test GET, the live key", expect=False, key=key),
        both,
        replace(both, label="rotation, new key", key=new_key),
        replace(both, label="rotation, a wrong key", expect=False, key=wrong),
    ]


# -- the tests ----------------------------------------------------------------------------

def test_the_docs_print_verification_code_for_each_language() -> None:
    blocks = documented_blocks()
    assert sorted(blocks) == sorted(LANGUAGES)
    for name, code in blocks.items():
        # v1 and v1a, the whsec_/whpk_ keys and the 5 minutes, in every one of them
        for needle in ("whsec_", "whpk_", "v1a", "webhook-signature", "webhook-timestamp"):
            assert needle in code, (name, needle)


@pytest.mark.parametrize("scheme", ["v1", "v1a"])
@pytest.mark.parametrize("language", [_language_param(n) for n in LANGUAGES])
def test_the_documented_code_verifies_real_postbacks(language: str, scheme: str, world: World,
                                                     receiver: Receiver,
                                                     tmp_path: Path) -> None:
    cases = capture(world, receiver, scheme)
    got = run_block(LANGUAGES[language], cases, tmp_path / language)
    assert {c.label: ok for c, ok in zip(cases, got, strict=True)} == {
        c.label: c.expect for c in cases}


@pytest.mark.parametrize(("url", "sent"), [
    ("http://example.test:80/x", "http://example.test/x"),
    ("https://example.test:443/x", "https://example.test/x"),
    ("https://example.test:0443/x", "https://example.test/x"),
    ("http://example.test:08080/x", "http://example.test:8080/x"),
    ("http://example.test?a={ActionId}", "http://example.test/?a={ActionId}"),
    ("http://example.test", "http://example.test/"),
    ("http://example.test/p?", "http://example.test/p"),
    ("http://example.test/%c3%a9/%2f?q=%c3%a9", "http://example.test/%C3%A9/%2F?q=%c3%a9"),
])
def test_urls_are_saved_and_signed_as_a_receiver_rebuilds_them(url: str, sent: str) -> None:
    """What docs/security.md promises of a URL (no default port, "/" for no path, no empty
    "?", upper-case escapes in the path), so that scheme + Host + the request target is the
    signed URL: the cases a real request cannot show on loopback (the default ports)."""
    assert url_template(url) == sent
    rendered = sent.replace("{ActionId}", "1042")
    assert wire_url(rendered) == rendered
    assert wire_url(url.replace("{ActionId}", "1042")) == rendered
