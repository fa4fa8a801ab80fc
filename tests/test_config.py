"""Environment settings: a mistake stops the start with a message naming the variable."""

from __future__ import annotations

import asyncio

import pytest

from postback.config import Settings
from postback.delivery.curl import CurlSender
from postback.delivery.drivers import sender_for
from postback.delivery.http import AiohttpSender, Sender


@pytest.mark.parametrize(("env", "message"), [
    ({"POSTBACK_HTTP_CLIENT": "requests"}, "POSTBACK_HTTP_CLIENT must be curl or aiohttp"),
    ({"POSTBACK_TLS_CA_FILE": "/nonexistent.pem"}, "POSTBACK_TLS_CA_FILE '/nonexistent.pem'"),
    ({"POSTBACK_CONNECT_TIMEOUT": "soon"}, "POSTBACK_CONNECT_TIMEOUT must be a number"),
    ({"POSTBACK_ALLOW_TARGETS": "10.0.0.0/33"}, "POSTBACK_ALLOW_TARGETS must be"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value)


def test_the_http_client_is_chosen_by_name() -> None:
    async def made(env: dict[str, str]) -> type[Sender]:
        return type(sender_for(Settings.from_env(env), 1))

    assert asyncio.run(made({})) is CurlSender
    assert asyncio.run(made({"POSTBACK_HTTP_CLIENT": "aiohttp"})) is AiohttpSender
    with pytest.raises(TypeError):
        Sender(1.0, 1.0, 1, "x")  # type: ignore[abstract]  # the base sends nothing
