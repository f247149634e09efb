"""Bearer-token authentication: HS256 JWTs whose subject is the user id.

Locally the secret comes from settings (`steno token <user>` prints a token); in production
the same check runs against the identity provider's shared secret.
"""

from __future__ import annotations

import time
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infra.settings import settings

ALGORITHM = "HS256"

_bearer = HTTPBearer(auto_error=False)


def issue_token(user_id: str, ttl_s: int | None = None) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + (ttl_s or settings.api.jwt_ttl_s)}
    return jwt.encode(claims, settings.api.jwt_secret, algorithm=ALGORITHM)


def user_from_token(token: str) -> str:
    """The token's user id; raises 401 for expired, malformed or wrongly signed tokens."""
    try:
        claims = jwt.decode(token, settings.api.jwt_secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired: ask for a new one (`steno token <user>` locally)") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise _unauthorized("invalid token: `sub` must name the user")
    return subject


def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise _unauthorized("missing `Authorization: Bearer <token>` header")
    return user_from_token(credentials.credentials)


User = Annotated[str, Depends(current_user)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})
