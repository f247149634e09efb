"""Bearer tokens: the user comes from a valid token only."""

import time

import jwt
import pytest
from fastapi import HTTPException

from infra.settings import settings
from ingest_api.auth import ALGORITHM, issue_token, user_from_token


def test_a_token_names_its_user() -> None:
    assert user_from_token(issue_token("alice")) == "alice"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 60},
            "an-attacker-secret-that-is-long-enough-for-hs256",
            algorithm=ALGORITHM,
        ),
        jwt.encode({"sub": "alice"}, settings.api.jwt_secret, algorithm=ALGORITHM),  # no expiry
        jwt.encode({"sub": "", "exp": int(time.time()) + 60}, settings.api.jwt_secret, algorithm=ALGORITHM),
    ],
    ids=["malformed", "wrong-signature", "no-expiry", "empty-subject"],
)
def test_bad_tokens_are_401(token: str) -> None:
    with pytest.raises(HTTPException) as raised:
        user_from_token(token)
    assert raised.value.status_code == 401


def test_expired_token_is_401_and_says_so() -> None:
    with pytest.raises(HTTPException) as raised:
        user_from_token(issue_token("alice", ttl_s=-10))
    assert raised.value.status_code == 401
    assert "expired" in raised.value.detail
