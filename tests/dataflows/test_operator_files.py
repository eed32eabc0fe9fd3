"""dataflows.operator_files: the files the CLI and the admin page write for a running pipeline."""

from __future__ import annotations

from dataflows import operator_files as ops


def test_flatten_writes_the_pause_file_too_and_lift_removes_it(tmp_path):
    pause, flatten = tmp_path / "data" / "trading.pause", tmp_path / "data" / "trading.flatten"
    assert ops.request_flatten(pause, flatten, "risk off") == flatten
    assert pause.read_text() == flatten.read_text() == "risk off\n"
    assert ops.lift(pause) and not pause.exists()
    assert not ops.lift(pause)  # nothing to lift


def test_only_the_on_chain_publishing_pause_pauses_the_contract(tmp_path):
    path = tmp_path / "chain.pause"
    ops.pause_publishing(path, on_chain=False)
    assert not ops.pauses_contract(path.read_text())  # "off-chain" contains "chain"
    ops.pause_publishing(path, on_chain=True)
    assert ops.pauses_contract(path.read_text())
    assert ops.pauses_contract(" ON-CHAIN \nwhy") and not ops.pauses_contract("why\non-chain")
