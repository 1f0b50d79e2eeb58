"""`python -m core users ...`: manage the per-user password sign-in accounts (core.web.accounts)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def cmd_users(ns: argparse.Namespace) -> dict[str, Any]:
    """Add (or change the password of), remove or list the accounts in $XRT_HOME/users.json."""
    from core.web import accounts

    if ns.action == "list":
        return {"users": sorted(accounts.all_users()), "file": str(accounts.users_file())}
    if not ns.name:
        raise ValueError(f"users {ns.action} needs a user name")
    if ns.action == "remove":
        if not accounts.remove(ns.name):
            raise ValueError(f"no account named {ns.name!r} in {accounts.users_file()}")
        return {"removed": ns.name.strip().lower(), "sessions": "ended"}
    name = accounts.set_password(ns.name, _read_password(ns.password_stdin))
    return {"user": name, "file": str(accounts.users_file()), "sessions": "any earlier ones ended"}


def _read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a prompt (never an argument: it would show in ps)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def add_commands(sub: Any) -> None:
    """The `users` command."""
    p = sub.add_parser(
        "users",
        help="per-user sign-in accounts for a hosted server: add NAME (or change its password), remove NAME, list",
    )
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("name", nargs="?", default="", help="the user name (case and surrounding spaces ignored)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    p.set_defaults(func=cmd_users)
