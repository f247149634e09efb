"""Local sign-in: a well-formed username gets a token for that user, unless the server turned it off."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infra.settings import settings
from ingest_api import login
from ingest_api.auth import user_from_token


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(login.router)
    return TestClient(app)


def test_a_username_signs_in_as_that_user(client: TestClient) -> None:
    session = client.post("/v1/auth/login", json={"username": "ada.lovelace"}).json()

    assert user_from_token(session["token"]) == session["user"] == "ada.lovelace"
    assert session["expires_in"] == settings.api.jwt_ttl_s


def test_turned_off_the_server_says_where_tokens_come_from(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "local_login", False)

    refused = client.post("/v1/auth/login", json={"username": "ada"})

    assert refused.status_code == 403
    assert "identity provider" in refused.json()["detail"]
