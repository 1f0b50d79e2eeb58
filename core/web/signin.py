"""Who a hosted user is: owner ids derived from the signed-in identity, and signed, expiring sign-in tokens.

Ownership follows the identity (an OIDC subject / e-mail, or the user name typed at the shared-password
sign-in), never a token in a URL: the owner id is an HMAC of the identity with this installation's secret,
so it can be neither guessed from a name nor pasted from a link. A sign-in token (kept in a browser
cookie) carries the identity and an expiry, signed with the same secret.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time

from core.base import paths, privacy

SECRET_FILE = paths.SECRET_KEY
TOKEN_TTL_S = 7 * 24 * 3600
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def clean_user_name(name: str) -> str:
    """A typed user name, normalised (case and spaces ignored); ValueError when it is not a plain name."""
    name = (name or "").strip().lower()
    if not USER_NAME.fullmatch(name):
        raise ValueError("a user name is 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def owner_for(identity: str) -> str:
    """The owner id of an identity ("user:alice", "oidc:<subject>", "anon:<random>"): 32 hex characters."""
    return privacy.keyed_hash(b"owner:" + identity.encode("utf-8"))[:32]


def _mac(payload: bytes) -> str:
    """The signature of a token payload."""
    return privacy.keyed_hash(b"signin:" + payload)


def make_token(identity: str, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
    """A signed token saying who signed in, valid for ttl_s seconds."""
    body = json.dumps({"id": identity, "exp": int((time.time() if now is None else now) + ttl_s)}).encode()
    payload = base64.urlsafe_b64encode(body)
    return f"{payload.decode()}.{_mac(payload)}"


def read_token(token: str, now: float | None = None) -> str | None:
    """The identity in a token when its signature is right and it has not expired; else None."""
    payload, _, mac = (token or "").partition(".")
    if not payload or not hmac.compare_digest(mac, _mac(payload.encode())):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    return data["id"] if float(data.get("exp", 0)) > (time.time() if now is None else now) else None
