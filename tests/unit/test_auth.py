"""Bearer tokens: the user comes from a valid token only, signed with this install's own secret
for steno's issuer and audience; a server reachable from elsewhere refuses a secret anyone knows."""

import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import HTTPException

from infra.settings import settings
from ingest_api.app import create_app
from ingest_api.auth import (
    ALGORITHM,
    SECRET_FILE,
    WELL_KNOWN_SECRETS,
    issue_token,
    signing_secret,
    user_from_token,
)

STEERED = {"iss": settings.api.jwt_issuer, "aud": settings.api.jwt_audience}


def claims(**fields: object) -> dict:
    return {"sub": "alice", "exp": int(time.time()) + 60, **STEERED, **fields}


def test_a_token_names_its_user() -> None:
    assert user_from_token(issue_token("alice")) == "alice"


@pytest.mark.parametrize(
    ("payload", "secret"),
    [
        (None, None),
        (claims(), "an-attacker-secret-that-is-long-enough-for-hs256"),
        ({"sub": "alice", **STEERED}, None),
        (claims(sub=""), None),
        ({"sub": "alice", "exp": int(time.time()) + 60}, None),
        (claims(aud="another-service"), None),
        (claims(iss="someone-else"), None),
    ],
    ids=[
        "malformed",
        "wrong-signature",
        "no-expiry",
        "empty-subject",
        "no-issuer-or-audience",
        "foreign-audience",
        "foreign-issuer",
    ],
)
def test_bad_tokens_are_401(payload: dict | None, secret: str | None) -> None:
    token = "not-a-jwt" if payload is None else jwt.encode(payload, secret or signing_secret(), algorithm=ALGORITHM)
    with pytest.raises(HTTPException) as raised:
        user_from_token(token)
    assert raised.value.status_code == 401


def test_expired_token_is_401_and_says_so() -> None:
    with pytest.raises(HTTPException) as raised:
        user_from_token(issue_token("alice", ttl_s=-10))
    assert raised.value.status_code == 401
    assert "expired" in raised.value.detail


def test_a_token_is_checked_once_then_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request carries the client's token: PyJWT checks it once, later requests only its expiry."""
    token = issue_token("alice", ttl_s=60)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counted(jwt: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(jwt)
        return real_decode(jwt, *args, **kwargs)

    monkeypatch.setattr("ingest_api.auth.jwt.decode", counted)
    assert [user_from_token(token) for _ in range(3)] == ["alice"] * 3
    assert len(decoded) == 1
    expiry = real_decode(token, options={"verify_signature": False})["exp"]
    monkeypatch.setattr("ingest_api.auth.time.time", lambda: expiry)  # the remembered token's expiry has come
    with pytest.raises(HTTPException) as raised:
        user_from_token(token)
    assert raised.value.status_code == 401 and "expired" in raised.value.detail


def test_a_remembered_token_is_checked_again_under_another_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_token("alice")
    assert user_from_token(token) == "alice"
    monkeypatch.setattr(settings.api, "jwt_secret", "another-secret-that-is-long-enough-for-hs256")
    with pytest.raises(HTTPException) as raised:
        user_from_token(token)
    assert raised.value.status_code == 401


def test_each_install_generates_its_own_private_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "jwt_secret", "")
    secrets = []
    for install in ("one", "two"):
        monkeypatch.setattr(settings.stack, "root", tmp_path / install)
        secrets.append(signing_secret())
        token = issue_token("alice")
        assert user_from_token(token) == "alice"
        assert (tmp_path / install / SECRET_FILE).read_text() == secrets[-1]
        assert stat.S_IMODE((tmp_path / install / SECRET_FILE).stat().st_mode) == 0o600

    assert secrets[0] != secrets[1] and len(secrets[0]) >= 32
    assert secrets[0] not in WELL_KNOWN_SECRETS


@pytest.mark.parametrize("secret", ["", "steno-local-dev-secret-change-me-in-production", "short"])
def test_an_api_bound_beyond_loopback_refuses_to_start_with_a_missing_or_well_known_secret(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings.api, "host", "0.0.0.0")
    monkeypatch.setattr(settings.api, "jwt_secret", secret)

    with pytest.raises(RuntimeError, match="STENO_API__JWT_SECRET"):
        create_app()


def test_an_api_bound_beyond_loopback_starts_with_a_secret_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "host", "0.0.0.0")
    monkeypatch.setattr(settings.api, "jwt_secret", "k3Q9v" * 10)

    assert create_app().title == "steno"
