"""compile.py: the vyper API, EVM version pinned, cached by source hash."""

from __future__ import annotations

import pytest

from dataflows.chain import compile as cc


def test_every_contract_compiles(compiled):
    assert set(compiled) == {"Oracle", "Parameters", "PolicyRegistry"} == set(cc.CONTRACT_NAMES)
    for name, c in compiled.items():
        assert c.name == name
        assert c.evm_version == cc.EVM_VERSION == "cancun"
        assert c.compiler_version.startswith("0.4.")
        assert c.bytecode.startswith("0x") and len(c.bytecode) > 1000
        assert any(e["type"] == "constructor" for e in c.abi)


def test_abis(compiled):
    oracle = compiled["Oracle"].function_signatures()
    for sig in ("submit(bytes32,uint256,uint256,uint256,uint256)", "latestRoundData(bytes32)",
                "decimals()", "add_reporter(address)", "remove_reporter(address)", "pause()",
                "unpause()", "set_bounds(bytes32,uint256,uint256)", "reset_breaker(bytes32)"):
        assert sig in oracle
    assert {"PriceUpdated", "ReporterAdded", "ReporterRemoved", "Paused", "Unpaused", "BoundsSet",
            "BreakerTripped", "BreakerReset"} <= set(compiled["Oracle"].event_names())
    params = compiled["Parameters"].function_signatures()
    for sig in ("propose(string,int256)", "approve(uint256)", "execute(uint256)", "get(string)"):
        assert sig in params
    registry = compiled["PolicyRegistry"].function_signatures()
    for sig in ("create(address,bytes32,uint256,uint256,uint256,uint256)", "activate(uint256)",
                "exercise(uint256)", "expire(uint256)"):
        assert sig in registry
    latest = next(e for e in compiled["Oracle"].abi if e.get("name") == "latestRoundData")
    assert [o["type"] for o in latest["outputs"]] == ["uint80", "int256", "uint256", "uint256", "uint80"]


def test_cached_by_source(compiled):
    assert cc.compile_contract("Oracle") is compiled["Oracle"]
    src = cc.source_path("Oracle").read_text()
    again = cc.compile_source(src, name="Oracle")
    assert again is compiled["Oracle"]
    assert again.source_sha256 == compiled["Oracle"].source_sha256


def test_evm_version_is_pinned():
    src = "# pragma version ~=0.4.0\n@external\ndef f(a: uint256) -> uint256:\n    return a + 0\n"
    cancun = cc.compile_source(src, "T", evm_version="cancun")
    paris = cc.compile_source(src, "T", evm_version="paris")
    assert cancun.source_sha256 == paris.source_sha256
    assert cancun is not paris and paris.evm_version == "paris"
    # PUSH0 (0x5f) is Shanghai+: the paris build must not start with it, cancun's may
    assert cancun.bytecode != paris.bytecode


def test_unknown_contract():
    with pytest.raises(KeyError, match="Oracle"):
        cc.compile_contract("NoSuchContract")
