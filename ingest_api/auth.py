"""Bearer-token authentication: HS256 JWTs whose subject is the user id, issued for steno's audience.

Locally the secret is generated per install (`.stack/jwt_secret`, created on first use, readable by
its owner only) and `steno token <user>` prints a token; in production the same check runs against
the identity provider's shared secret, set in settings, and its issuer and audience. An API bound
beyond loopback refuses to start with no secret set or a well-known one (`require_safe_secret`).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infra.settings import settings

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"
MIN_SECRET_CHARS = 32
# Secrets anyone can read in a repository or a tutorial: they sign nothing a server should trust.
WELL_KNOWN_SECRETS = frozenset(
    {"steno-local-dev-secret-change-me-in-production", "secret", "changeme", "change-me", "your-256-bit-secret"}
)

VERIFIED_TOKENS = 100_000  # tokens remembered as checked (one per active client), the oldest forgotten first

_bearer = HTTPBearer(auto_error=False)
_verified: dict[
    tuple[str, str, str, str], tuple[str, float]
] = {}  # (token, secret or install, aud, iss) -> (user, exp)


def signing_secret() -> str:
    """The configured secret, else this install's own (created on first use)."""
    return settings.api.jwt_secret or _install_secret(settings.stack.root / SECRET_FILE)


@functools.cache
def _install_secret(path: Path) -> str:
    """Read the install's secret, creating it first if there is none.

    It is written to a private (0600) temporary file, then linked into place: a link never
    replaces a file, so processes starting together all end up reading the one that won.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_FILE}.")
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                os.link(scratch, path)
        finally:
            os.unlink(scratch)
    return path.read_text().strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0: reachable from elsewhere


def require_safe_secret(host: str) -> None:
    """Refuse to serve beyond loopback with tokens anyone could forge (a missing or well-known secret)."""
    if is_loopback(host):
        return
    configured = settings.api.jwt_secret
    if len(configured) < MIN_SECRET_CHARS or configured in WELL_KNOWN_SECRETS:
        raise RuntimeError(
            f"the API binds {host}, beyond loopback, so its tokens must be signed with a secret of your own: "
            f"set STENO_API__JWT_SECRET to {MIN_SECRET_CHARS}+ random characters (e.g. `openssl rand -base64 48`), "
            "the same on every API instance"
        )


def issue_token(user_id: str, ttl_s: int | None = None) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iss": settings.api.jwt_issuer,
        "aud": settings.api.jwt_audience,
        "iat": now,
        "exp": now + (ttl_s or settings.api.jwt_ttl_s),
    }
    return jwt.encode(claims, signing_secret(), algorithm=ALGORITHM)


def user_from_token(token: str) -> str:
    """The token's user id; raises 401 for expired, malformed, wrongly signed or foreign tokens.

    A client sends the same token with every request, and checking it costs ~50 µs (PyJWT's
    parsing and HMAC), two checks per message: a token that passed is remembered with its expiry,
    under the secret (or the install whose secret it is), audience and issuer it was checked
    against, and only its expiry is checked again until then."""
    key = (
        token,
        settings.api.jwt_secret or str(settings.stack.root),
        settings.api.jwt_audience,
        settings.api.jwt_issuer,
    )
    if (known := _verified.get(key)) is not None:
        subject, expires = known
        if time.time() >= expires:
            raise _expired()
        return subject
    subject, expires = _checked(token, signing_secret(), settings.api.jwt_audience, settings.api.jwt_issuer)
    _verified[key] = (subject, expires)
    if len(_verified) > VERIFIED_TOKENS:
        del _verified[next(iter(_verified))]  # the oldest
    return subject


def _checked(token: str, secret: str, audience: str, issuer: str) -> tuple[str, float]:
    """The subject and expiry of a token that passes every check now."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={"require": ["sub", "exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise _expired() from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise _unauthorized("invalid token: `sub` must name the user")
    return subject, float(claims["exp"])


async def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Async so that FastAPI calls it on the event loop: a plain `def` would run in its thread pool,
    a thread hop per request that costs more than the signature check itself (~20 µs)."""
    if credentials is None:
        raise _unauthorized("missing `Authorization: Bearer <token>` header")
    return user_from_token(credentials.credentials)


User = Annotated[str, Depends(current_user)]


def _expired() -> HTTPException:
    return _unauthorized("token expired: ask for a new one (`steno token <user>` locally)")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})
