"""Local sign-in: a username in, the same HS256 JWT every endpoint checks out.

There is no password: this is how the chat page signs in on a local stack, where `steno token`
would do the same. A shared deployment turns it off (`settings.api.local_login`) and its
clients bring tokens from the identity provider instead.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, field_validator

from infra.settings import settings
from ingest_api.auth import issue_token

router = APIRouter(prefix="/v1/auth", tags=["auth"])

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str

    @field_validator("username")
    @classmethod
    def _well_formed(cls, username: str) -> str:
        if not USERNAME.fullmatch(username):
            raise ValueError(
                "a username is 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
            )
        return username


class Session(BaseModel):
    token: str
    user: str
    expires_in: int


@router.post("/login", response_model=Session)
async def login(body: Login) -> Session:
    if not settings.api.local_login:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="local sign-in is turned off on this server: sign in with a token from your identity provider",
        )
    return Session(token=issue_token(body.username), user=body.username, expires_in=settings.api.jwt_ttl_s)
