"""keys.py: the signing key from the environment or a keystore; errors that say what to do; the
key never shown."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from eth_account import Account

from dataflows.chain.keys import (
    ENV_KEY,
    ENV_PASSWORD,
    ChainKeyError,
    SigningKey,
    ephemeral_key,
    key_from_hex,
    load_key,
    resolve_key,
)
from models.errors import HedgeflowError


@pytest.fixture
def acct():
    return Account.create()  # random, never a constant


@pytest.fixture
def keystore(tmp_path, acct):
    """An encrypted keystore written here (pbkdf2 with few rounds, to keep the test fast)."""
    path = tmp_path / "reporter.json"
    path.write_text(json.dumps(Account.encrypt(acct.key, "correct horse", kdf="pbkdf2", iterations=2)))
    return path


def _hex(acct) -> str:
    return acct.key.hex().removeprefix("0x")


def test_key_from_environment(acct):
    for text in (_hex(acct), "0x" + _hex(acct), "  0X" + _hex(acct).upper() + "\n"):
        key = load_key("", {ENV_KEY: text})
        assert isinstance(key, SigningKey) and key.address == acct.address
        assert key.source == "environment" and not key.ephemeral


def test_key_from_keystore(keystore, acct):
    key = load_key(keystore, {ENV_PASSWORD: "correct horse"})
    assert key.address == acct.address and key.source == f"keystore {keystore}"
    signed = key.sign_transaction({"to": acct.address, "value": 1, "gas": 21_000, "nonce": 0,
                                   "maxFeePerGas": 2, "maxPriorityFeePerGas": 1, "chainId": 1})
    assert Account.recover_transaction(signed.raw_transaction) == acct.address


def test_keystore_errors_name_the_fix(keystore, tmp_path):
    with pytest.raises(ChainKeyError, match=f"{ENV_PASSWORD} is not set"):
        load_key(keystore, {})
    with pytest.raises(ChainKeyError, match="wrong password"):
        load_key(keystore, {ENV_PASSWORD: "wrong"})
    with pytest.raises(ChainKeyError, match="not found"):
        load_key(tmp_path / "missing.json", {ENV_PASSWORD: "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ChainKeyError, match="JSON keystore"):
        load_key(bad, {ENV_PASSWORD: "x"})
    bad.write_text("{}")
    with pytest.raises(ChainKeyError, match="cannot decrypt"):
        load_key(bad, {ENV_PASSWORD: "x"})


def test_malformed_hex_key_is_never_quoted():
    secretish = "ab" * 31 + "zz"  # 64 characters, not hex
    for text in (secretish, "12345", "0x" + "00" * 32):
        with pytest.raises(ChainKeyError) as info:
            key_from_hex(text)
        msg = str(info.value)
        assert ENV_KEY in msg
        assert text not in msg and text.removeprefix("0x") not in msg
        exc = info.value  # no chained exception (whose text could quote the key) is shown
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert issubclass(ChainKeyError, HedgeflowError)


def test_both_sources_or_none(keystore, acct):
    with pytest.raises(ChainKeyError, match="two signing keys"):
        load_key(keystore, {ENV_KEY: _hex(acct), ENV_PASSWORD: "correct horse"})
    assert load_key("", {}) is None
    assert load_key("", {ENV_KEY: "  "}) is None
    with pytest.raises(ChainKeyError) as info:
        resolve_key("rpc", "", {})
    assert ENV_KEY in str(info.value) and "chain.keystore_path" in str(info.value)
    a, b = resolve_key("embedded", "", {}), resolve_key("embedded", "", {})
    assert a.ephemeral and b.ephemeral and a.address != b.address
    assert resolve_key("rpc", "", {ENV_KEY: _hex(acct)}).address == acct.address


def test_key_is_redacted_and_not_picklable(acct):
    key = key_from_hex(_hex(acct))
    secret = _hex(acct)
    old_style = "%s" % (key,)  # noqa: UP031 - the %-format path too
    for text in (repr(key), str(key), f"{key}", f"{key!r}", old_style):
        assert secret not in text.lower() and "<redacted>" in text and acct.address in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert copy.deepcopy(key) is key
    assert ephemeral_key().source == "ephemeral"
