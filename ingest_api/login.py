"""Local sign-in: a username in, the same HS256 JWT every endpoint checks out.

There is no password: this is how the chat page signs in on a local stack, where `steno token`
would do the same. So it is on only where nobody else can reach it (an API bound to loopback, a
client on loopback) unless `settings.api.local_login` says otherwise; a shared deployment's
clients bring tokens from the identity provider instead.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, field_validator

from infra.settings import settings
from ingest_api.auth import is_loopback, issue_token

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


def local_login_allowed(client_host: str) -> bool:
    """As configured; unset, only on an API bound to loopback, for a client on the same machine."""
    if settings.api.local_login is not None:
        return settings.api.local_login
    return is_loopback(settings.api.host) and is_loopback(client_host)


class Session(BaseModel):
    token: str
    user: str
    expires_in: int


@router.post("/login", response_model=Session)
async def login(body: Login, request: Request) -> Session:
    if not local_login_allowed(request.client.host if request.client else ""):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="local sign-in is turned off on this server: sign in with a token from your identity provider",
        )
    return Session(token=issue_token(body.username), user=body.username, expires_in=settings.api.jwt_ttl_s)
