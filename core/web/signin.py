"""Who a hosted user is: owner ids derived from the signed-in identity, and signed, expiring sign-in tokens.

Ownership follows the identity (an OIDC subject / e-mail, or the user name typed at the shared-password
sign-in), never a token in a URL: the owner id is an HMAC of the identity with this installation's secret,
so it can be neither guessed from a name nor pasted from a link. A sign-in token (kept in a browser
cookie) is a random session id with a keyed signature; who signed in, until when and with which credential
stamp lives server-side (core.web.sessions), so log-out and a password change revoke it.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable

from core.base import paths, privacy
from core.web import sessions

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


def make_token(identity: str, ttl_s: float = TOKEN_TTL_S, now: float | None = None, stamp: str = "") -> str:
    """A new server-side session for `identity`, valid for ttl_s seconds: its cookie value (random id + signature).
    `stamp` is the credential stamp at sign-in (see core.web.accounts.stamp): a later password change ends it."""
    session_id = secrets.token_urlsafe(32)
    sessions.create(session_id, identity, (time.time() if now is None else now) + ttl_s, stamp)
    return f"{session_id}.{_mac(session_id.encode())}"


def read_token(
    token: str, now: float | None = None, stamp_of: Callable[[str], str] | None = None
) -> str | None:
    """The identity of a live session: the signature right, the session not revoked or expired, and (with
    `stamp_of`) the identity's credential stamp unchanged since sign-in; else None."""
    session_id, _, mac = (token or "").partition(".")
    if not session_id or not hmac.compare_digest(mac, _mac(session_id.encode())):
        return None
    found = sessions.lookup(session_id, now)
    if found is None:
        return None
    identity, stamp = found
    if stamp_of is not None and not hmac.compare_digest(stamp, stamp_of(identity)):
        return None
    return identity


def revoke_token(token: str) -> None:
    """End the session behind a cookie value (log-out); nothing for a malformed one."""
    session_id, _, mac = (token or "").partition(".")
    if session_id and hmac.compare_digest(mac, _mac(session_id.encode())):
        sessions.revoke(session_id)
