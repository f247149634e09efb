"""Local sign-in: a well-formed username gets a token for that user, only where nobody else can
reach the server (bound to loopback, a loopback client) unless it is turned on or off explicitly."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infra.settings import settings
from ingest_api import login
from ingest_api.auth import user_from_token

LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.7", 50000)


def client_from(address: tuple[str, int]) -> TestClient:
    app = FastAPI()
    app.include_router(login.router)
    return TestClient(app, client=address)


def test_a_username_signs_in_as_that_user() -> None:
    session = client_from(LOOPBACK).post("/v1/auth/login", json={"username": "ada.lovelace"}).json()

    assert user_from_token(session["token"]) == session["user"] == "ada.lovelace"
    assert session["expires_in"] == settings.api.jwt_ttl_s


def test_turned_off_the_server_says_where_tokens_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "local_login", False)

    refused = client_from(LOOPBACK).post("/v1/auth/login", json={"username": "ada"})

    assert refused.status_code == 403
    assert "identity provider" in refused.json()["detail"]


@pytest.mark.parametrize(("host", "client"), [("0.0.0.0", LOOPBACK), ("127.0.0.1", ELSEWHERE)])
def test_unset_it_is_off_for_a_server_or_client_beyond_loopback(
    host: str, client: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings.api, "host", host)

    assert client_from(client).post("/v1/auth/login", json={"username": "ada"}).status_code == 403


def test_turned_on_explicitly_it_serves_any_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "host", "0.0.0.0")
    monkeypatch.setattr(settings.api, "local_login", True)

    assert client_from(ELSEWHERE).post("/v1/auth/login", json={"username": "ada"}).status_code == 200


def test_an_unknown_field_is_refused() -> None:
    refused = client_from(LOOPBACK).post("/v1/auth/login", json={"username": "ada", "password": "x"})

    assert refused.status_code == 422
