"""Compile the project's Vyper contracts with the vyper Python API.

Nothing is checked in as bytecode: each ``contracts/<Name>.vy`` is compiled on first use and
the result kept in memory, keyed by the SHA-256 of its source, the EVM version and the
compiler version, so an edited source is recompiled and an unchanged one never twice.

The EVM version is pinned (Vyper 0.4 targets the newest fork by default): ``cancun`` runs on
the embedded py-evm chain (eth-tester's backend is Prague, which executes Cancun code) and on
current JSON-RPC nodes (Hardhat 2, Anvil, Geth).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
EVM_VERSION = "cancun"
CONTRACT_NAMES = ("Oracle", "Parameters", "PolicyRegistry")


@dataclass(frozen=True)
class CompiledContract:
    """One compiled contract: its ABI (a list of JSON entries) and deployable bytecode (0x-hex)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    evm_version: str
    source_sha256: str
    compiler_version: str

    def function_signatures(self) -> list[str]:
        """``name(type,...)`` of every function in the ABI, sorted (for docs and checks)."""
        sigs = []
        for entry in self.abi:
            if entry.get("type") == "function":
                args = ",".join(_abi_type(i) for i in entry.get("inputs", []))
                sigs.append(f"{entry['name']}({args})")
        return sorted(sigs)

    def event_names(self) -> list[str]:
        return sorted(e["name"] for e in self.abi if e.get("type") == "event")


def _abi_type(item: dict[str, Any]) -> str:
    typ = item["type"]
    if typ.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item.get("components", []))
        return f"({inner}){typ[len('tuple'):]}"
    return typ


_cache: dict[tuple[str, str, str], CompiledContract] = {}
_lock = threading.Lock()


def vyper_version() -> str:
    import vyper

    return vyper.__version__


def compile_source(source: str, name: str = "Contract", evm_version: str = EVM_VERSION) -> CompiledContract:
    """Compile Vyper ``source`` for ``evm_version``; cached by (source hash, EVM, compiler)."""
    import vyper
    from vyper.compiler.settings import Settings

    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    key = (digest, evm_version, vyper.__version__)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit if hit.name == name else _renamed(hit, name)
        out = vyper.compile_code(
            source,
            output_formats=["abi", "bytecode"],
            settings=Settings(evm_version=evm_version),
        )
        bytecode = out["bytecode"]
        if not bytecode.startswith("0x"):
            bytecode = "0x" + bytecode
        compiled = CompiledContract(
            name=name,
            abi=out["abi"],
            bytecode=bytecode,
            evm_version=evm_version,
            source_sha256=digest,
            compiler_version=vyper.__version__,
        )
        _cache[key] = compiled
        return compiled


def _renamed(c: CompiledContract, name: str) -> CompiledContract:
    return CompiledContract(name, c.abi, c.bytecode, c.evm_version, c.source_sha256, c.compiler_version)


def source_path(name: str) -> Path:
    path = CONTRACTS_DIR / f"{name}.vy"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONTRACTS_DIR.glob("*.vy")))
        raise KeyError(f"no contract {name!r} in {CONTRACTS_DIR} (known: {known})")
    return path


def compile_contract(name: str, evm_version: str = EVM_VERSION) -> CompiledContract:
    """Compile ``contracts/<name>.vy`` (read afresh each call; compiled once per source)."""
    return compile_source(source_path(name).read_text(encoding="utf-8"), name=name, evm_version=evm_version)


def compile_all(evm_version: str = EVM_VERSION) -> dict[str, CompiledContract]:
    """Every contract in ``contracts/``, by name."""
    return {
        p.stem: compile_contract(p.stem, evm_version) for p in sorted(CONTRACTS_DIR.glob("*.vy"))
    }


def clear_cache() -> None:
    with _lock:
        _cache.clear()
