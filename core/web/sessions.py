"""Server-side sign-in records: revocable sessions and failed sign-in counts, in `$XRT_HOME/signin.sqlite3`.

A browser's sign-in cookie is only a random session id (with a keyed signature, so a forged one is turned away
without a lookup). The record says who signed in, until when, and the credential stamp at the time (a hash of
that user's password hash, or of the shared password): log-out deletes the record, a password change makes the
stamp differ, so a copied cookie stops working in both cases, across server restarts too. The database holds
only keyed hashes of session ids, never an id a browser could present.

Failed password sign-ins are counted per key (a user name, a client address): MAX_FAILS failures within
WINDOW_S lock that key out for WINDOW_S, whichever browser session the guesses come from.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

from core.base import paths, privacy

DB_NAME = "signin.sqlite3"
MAX_FAILS = 5  # failed sign-ins per user name / client address within WINDOW_S before a lock-out
WINDOW_S = 15 * 60
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, identity TEXT NOT NULL, expires REAL NOT NULL,"
    " stamp TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_identity ON sessions(identity)",
    "CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, count INTEGER NOT NULL, first REAL NOT NULL,"
    " locked_until REAL NOT NULL)",
)


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    """A connection to the sign-in database (created, mode 0600, on first use); one transaction."""
    path = paths.app_home() / DB_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            con.execute(statement)
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _key(session_id: str) -> str:
    """What the database stores for a session id (never the id itself)."""
    return privacy.keyed_hash(b"session:" + session_id.encode("utf-8"))


def create(session_id: str, identity: str, expires: float, stamp: str = "") -> None:
    """Record a new session (and drop expired ones)."""
    with _db() as con:
        con.execute("DELETE FROM sessions WHERE expires <= ?", (time.time(),))
        con.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
            (_key(session_id), identity, expires, stamp),
        )


def lookup(session_id: str, now: float | None = None) -> tuple[str, str] | None:
    """(identity, stamp) of a live session; None when unknown, revoked or expired."""
    with _db() as con:
        row = con.execute(
            "SELECT identity, stamp, expires FROM sessions WHERE id = ?", (_key(session_id),)
        ).fetchone()
    if row is None or float(row[2]) <= (time.time() if now is None else now):
        return None
    return str(row[0]), str(row[1])


def revoke(session_id: str) -> None:
    """End one session (log-out)."""
    with _db() as con:
        con.execute("DELETE FROM sessions WHERE id = ?", (_key(session_id),))


def revoke_identity(identity: str) -> int:
    """End every session of one identity (its password changed or its account was removed); how many."""
    with _db() as con:
        return con.execute("DELETE FROM sessions WHERE identity = ?", (identity,)).rowcount


def locked_for(keys: list[str], now: float | None = None) -> float:
    """Seconds until none of `keys` is locked out (0 when sign-in may be tried now)."""
    now = time.time() if now is None else now
    with _db() as con:
        rows = con.execute(
            f"SELECT locked_until FROM failures WHERE key IN ({','.join('?' * len(keys))})", keys
        ).fetchall()
    return max([float(r[0]) - now for r in rows] + [0.0])


def record_failure(keys: list[str], now: float | None = None) -> None:
    """Count one failed sign-in against each key; MAX_FAILS within WINDOW_S locks the key for WINDOW_S."""
    now = time.time() if now is None else now
    with _db() as con:
        for key in keys:
            row = con.execute("SELECT count, first FROM failures WHERE key = ?", (key,)).fetchone()
            count, first = (
                (0, now) if row is None or now - float(row[1]) > WINDOW_S else (int(row[0]), float(row[1]))
            )
            count += 1
            locked = now + WINDOW_S if count >= MAX_FAILS else 0.0
            con.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", (key, count, first, locked))


def clear_failures(keys: list[str]) -> None:
    """Forget the failures of these keys (after a successful sign-in)."""
    with _db() as con:
        con.executemany("DELETE FROM failures WHERE key = ?", [(k,) for k in keys])
