"""The chain terminal's signing key: from the environment or an encrypted keystore, never logged.

Where the key comes from, in order:

1. ``HEDGEFLOW_CHAIN_KEY``: the private key as 64 hexadecimal digits (``0x`` prefix optional);
2. ``chain.keystore_path``: an encrypted JSON keystore (Web3 Secret Storage, as written by
   ``eth_account.Account.encrypt``, geth or ``cast wallet``), decrypted with the password in
   ``HEDGEFLOW_CHAIN_KEY_PASSWORD``;
3. neither, on the embedded chain only: an ephemeral random key made for this process (the
   embedded backend funds it and makes it the Oracle's owner and reporter). A JSON-RPC node
   needs a configured key; its absence is an error that says how to give one.

Giving both (1) and (2) is an error rather than a silent choice: the operator must know which
key signs.

The key lives only in memory, inside :class:`SigningKey`: its ``repr``/``str`` show the address
and where the key came from, never the key; it refuses to be pickled; errors about a malformed key
never quote it (and are raised ``from None``, so no traceback carries it). Nothing here writes
it anywhere; the terminal stores signed transactions (public once broadcast), never the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from models.errors import HedgeflowError

ENV_KEY = "HEDGEFLOW_CHAIN_KEY"
ENV_PASSWORD = "HEDGEFLOW_CHAIN_KEY_PASSWORD"

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class ChainKeyError(HedgeflowError):
    """No usable signing key: the message names what is missing and how to provide it."""


class SigningKey:
    """A private key held in memory for local signing. Its text forms never show the key."""

    __slots__ = ("_account", "source")

    def __init__(self, account: LocalAccount, source: str) -> None:
        self._account = account
        self.source = source  # "environment", "keystore <path>", "ephemeral"

    @property
    def address(self) -> str:
        return self._account.address

    @property
    def account(self) -> LocalAccount:
        """The eth-account signer (for ``LocalSigner`` and ``sign_transaction``)."""
        return self._account

    def sign_transaction(self, tx: Mapping[str, Any]) -> Any:
        return self._account.sign_transaction(dict(tx))

    @property
    def ephemeral(self) -> bool:
        return self.source == "ephemeral"

    def __repr__(self) -> str:
        return f"SigningKey(address={self.address}, source={self.source!r}, key=<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self):  # pickling would write the key out
        raise TypeError("SigningKey cannot be pickled (it would write the private key out)")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def key_from_hex(text: str, source: str = "environment") -> SigningKey:
    """A key from its hex text. A malformed value is described (length) but never quoted."""
    raw = (text or "").strip()
    if raw[:2].lower() == "0x":
        raw = raw[2:]
    if not _HEX_KEY.fullmatch(raw):
        raise ChainKeyError(
            f"{ENV_KEY} is not a private key: expected 64 hexadecimal digits (optionally "
            f"0x-prefixed), got {len(raw)} characters (not shown). "
            f"Fix the variable, or unset it and use chain.keystore_path with {ENV_PASSWORD}"
        )
    try:
        account = Account.from_key(bytes.fromhex(raw))
    except Exception:  # noqa: BLE001 - e.g. zero or >= curve order; the message may quote the key
        raise ChainKeyError(
            f"{ENV_KEY} is not a valid secp256k1 private key (zero or out of range); "
            "generate one, e.g. with `python -c \"from eth_account import Account; "
            "print(Account.create().key.hex())\"`"
        ) from None
    return SigningKey(account, source)


def key_from_keystore(path: str | os.PathLike[str], password: str | None) -> SigningKey:
    """Decrypt a JSON keystore file. ``password`` None means the password variable is unset."""
    shown = os.fspath(path)
    p = Path(path)
    if not p.is_file():
        raise ChainKeyError(
            f"keystore file {shown} (chain.keystore_path) not found; check the path, or give the key "
            f"in {ENV_KEY} instead"
        )
    if password is None:
        raise ChainKeyError(
            f"keystore {shown} is encrypted and {ENV_PASSWORD} is not set; export the keystore's "
            f"password in {ENV_PASSWORD}"
        )
    try:
        keyfile = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChainKeyError(
            f"cannot read keystore {shown}: {getattr(exc, 'strerror', None) or type(exc).__name__}; "
            "it must be a JSON keystore (Web3 Secret Storage)"
        ) from None
    try:
        secret = Account.decrypt(keyfile, password)
    except ValueError as exc:
        problem = "wrong password" if "mac mismatch" in str(exc).lower() else "not a usable keystore"
        raise ChainKeyError(
            f"cannot decrypt keystore {shown}: {problem}; check {ENV_PASSWORD} and the file"
        ) from None
    except Exception:  # noqa: BLE001 - malformed structure (missing crypto fields, ...)
        raise ChainKeyError(
            f"cannot decrypt keystore {shown}: not a JSON keystore (Web3 Secret Storage)"
        ) from None
    account = Account.from_key(secret)
    del secret
    return SigningKey(account, f"keystore {shown}")


def ephemeral_key() -> SigningKey:
    """A fresh random key for this process only (the embedded chain's default)."""
    return SigningKey(Account.create(), "ephemeral")


def load_key(keystore_path: str | os.PathLike[str] = "", env: Mapping[str, str] | None = None,
             ) -> SigningKey | None:
    """The configured key (environment or keystore), or None when neither is configured."""
    env = os.environ if env is None else env
    hex_key = env.get(ENV_KEY)
    has_hex = hex_key is not None and hex_key.strip() != ""
    if has_hex and keystore_path:
        raise ChainKeyError(
            f"two signing keys are configured: {ENV_KEY} and chain.keystore_path "
            f"({os.fspath(keystore_path)}); unset one so it is clear which key signs"
        )
    if has_hex:
        return key_from_hex(hex_key, "environment")
    if keystore_path:
        return key_from_keystore(keystore_path, env.get(ENV_PASSWORD))
    return None


def resolve_key(backend: str, keystore_path: str | os.PathLike[str] = "",
                env: Mapping[str, str] | None = None) -> SigningKey:
    """The key the terminal signs with: configured, or (embedded chain only) ephemeral."""
    key = load_key(keystore_path, env)
    if key is not None:
        return key
    if backend == "embedded":
        return ephemeral_key()
    raise ChainKeyError(
        f"no signing key for the {backend} chain backend: set {ENV_KEY} to the reporter's private "
        f"key (hex), or chain.keystore_path to an encrypted keystore with its password in "
        f"{ENV_PASSWORD}"
    )


__all__ = [
    "ENV_KEY",
    "ENV_PASSWORD",
    "ChainKeyError",
    "SigningKey",
    "ephemeral_key",
    "key_from_hex",
    "key_from_keystore",
    "load_key",
    "resolve_key",
]
