"""The admin users file: user names and their password hashes, for the Safety and admin page.

The file is TOML (``*.toml``) or JSON (any other name) with one table, ``users``, of name ->
hash::

    [users]
    alice = "pbkdf2_sha256$600000$<salt, base64>$<hash, base64>"

A hash is PBKDF2-HMAC-SHA256 (``hashlib.pbkdf2_hmac``) of the UTF-8 password with a random
16-byte salt; the iteration count is stored with it, so it can be raised later without
invalidating older entries. Passwords are never stored, logged or shown. Write the file with::

    python -m dataflows.admin_users add NAME [--file PATH]     # asks for the password twice
    python -m dataflows.admin_users remove NAME [--file PATH]
    python -m dataflows.admin_users list [--file PATH]

``--file`` defaults to the configured ``[admin] users_file`` (HEDGEFLOW_ADMIN__USERS_FILE). The
file is written atomically, readable by its owner only (mode 0600).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import tomllib
from pathlib import Path

from models.errors import HedgeflowError

__all__ = ["UsersFileError", "NAME_PATTERN", "DEFAULT_ITERATIONS", "hash_password",
           "verify_password", "read_users", "write_users", "main"]

SCHEME = "pbkdf2_sha256"
# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; about half a second here, computed off the loop.
DEFAULT_ITERATIONS = 600_000
MIN_ITERATIONS = 1_000
SALT_BYTES = 16
MIN_PASSWORD_CHARS = 8
# Bare TOML keys, and nothing that could be mistaken for markup on the page.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UsersFileError(HedgeflowError, ValueError):
    """The users file (or a name, a password, a hash) is not usable; the message says how to fix it."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` of ``password`` (a fresh random salt
    unless one is given)."""
    if iterations < MIN_ITERATIONS:
        raise UsersFileError(f"iterations must be >= {MIN_ITERATIONS}, got {iterations}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != SCHEME:
            raise ValueError(scheme)
        n = int(iterations)
        if n < MIN_ITERATIONS:
            raise ValueError(iterations)
        return n, base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
    except (ValueError, TypeError, AttributeError):
        raise UsersFileError(
            f"not a {SCHEME} hash: expected {SCHEME}$<iterations>$<salt>$<hash> as written by "
            "`python -m dataflows.admin_users add NAME`") from None


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` hashes to ``encoded`` (compared in constant time)."""
    iterations, salt, expected = _parse_hash(encoded)
    got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, expected)


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """Name -> hash from the users file; ``UsersFileError`` names what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsersFileError(f"admin users file {path} not found; create it with "
                             f"`python -m dataflows.admin_users add NAME --file {path}`") from None
    except OSError as exc:
        raise UsersFileError(f"cannot read admin users file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8")) if path.suffix == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise UsersFileError(f"cannot parse admin users file {path} as {kind}: {exc}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError(f"admin users file {path} has no users table "
                             '(expected {"users": {"NAME": "HASH"}})')
    for name, encoded in users.items():
        if not NAME_PATTERN.match(str(name)):
            raise UsersFileError(f"admin users file {path}: bad user name {name!r} "
                                 "(letters, digits, _ and -, at most 64)")
        if not isinstance(encoded, str):
            raise UsersFileError(f"admin users file {path}: the hash of {name} is not a string")
        _parse_hash(encoded)
    return dict(users)


def write_users(path: str | os.PathLike, users: dict[str, str]) -> None:
    """Write ``users`` to ``path`` atomically (a hidden file renamed into place), mode 0600."""
    path = Path(path)
    for name, encoded in users.items():
        if not NAME_PATTERN.match(name):
            raise UsersFileError(f"bad user name {name!r}: letters, digits, _ and -, at most 64")
        _parse_hash(encoded)
    if path.suffix == ".toml":
        # Names are bare keys and hashes hold only base64, digits and "$": no escaping needed.
        text = "[users]\n" + "".join(f'{n} = "{h}"\n' for n, h in sorted(users.items()))
    else:
        text = json.dumps({"users": dict(sorted(users.items()))}, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_file() -> str:
    from dataflows.config import load_config

    return load_config().admin.users_file


def _read_new_password(name: str) -> str:
    password = getpass.getpass(f"password for {name}: ")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersFileError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if getpass.getpass("again: ") != password:
        raise UsersFileError("the two passwords differ; nothing was written")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataflows.admin_users",
        description="Manage the admin users file of the Safety and admin page.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("add", "add a user or change their password (asks for it)"),
                               ("remove", "remove a user"), ("list", "list the user names")):
        p = sub.add_parser(command, help=help_text)
        if command != "list":
            p.add_argument("name")
        p.add_argument("--file", default=None,
                       help="the users file (default: [admin] users_file of the configuration)")
    args = parser.parse_args(argv)
    try:
        path = args.file or _default_file()
        if not path:
            raise UsersFileError("no users file: pass --file PATH, or set [admin] users_file "
                                 "(HEDGEFLOW_ADMIN__USERS_FILE)")
        users = read_users(path) if Path(path).exists() or args.command != "add" else {}
        if args.command == "list":
            print("\n".join(sorted(users)) or "(no users)")
            return 0
        if not NAME_PATTERN.match(args.name):
            raise UsersFileError(f"bad user name {args.name!r}: letters, digits, _ and -, at most 64")
        if args.command == "remove":
            if users.pop(args.name, None) is None:
                raise UsersFileError(f"no user {args.name} in {path}")
            write_users(path, users)
            print(f"removed {args.name} from {path}")
            return 0
        users[args.name] = hash_password(_read_new_password(args.name))
        write_users(path, users)
        print(f"{args.name} can now log in to the admin page ({path}); the running page reads "
              "the file at each login")
        return 0
    except HedgeflowError as exc:
        print(f"admin_users: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
