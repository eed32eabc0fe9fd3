"""The operator's channel to a running ``hedgeflow run``: files in the data folder, so only
someone who may write there can act. ``hedgeflow pause|resume|flatten`` and the admin page write
them; the hedge desk's node (``HedgeNode.on_tick``) and the chain publisher read them at their
next tick.

- the trading pause file (``[hedge] pause_file``): while it exists the desk opens nothing
  (reducing orders still pass); its text is the reason;
- the flatten file (``[hedge] flatten_file``): the desk closes its futures once and removes it;
  a flatten also writes the pause file, so trading stays paused until it is resumed;
- the publishing pause file (``[chain] pause_file``): while it exists nothing is published; when
  its first line is ``on-chain`` the Oracle contract is paused too.
"""

from __future__ import annotations

from pathlib import Path

ON_CHAIN = "on-chain"


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n", encoding="utf-8")
    return path


def lift(path: str | Path) -> bool:
    """Remove a pause file; whether there was one."""
    path = Path(path)
    if not path.exists():
        return False
    path.unlink()
    return True


def pause_trading(pause_file: str | Path, why: str) -> Path:
    return _write(pause_file, why)


def request_flatten(pause_file: str | Path, flatten_file: str | Path, why: str) -> Path:
    """The flatten file, and the pause file first: trading stays paused after the flatten."""
    _write(pause_file, why)
    return _write(flatten_file, why)


def pause_publishing(pause_file: str | Path, on_chain: bool) -> Path:
    # Only the marker goes in (no reason, no name): the publisher reads the first line for it.
    return _write(pause_file, ON_CHAIN if on_chain else "off-chain")


def pauses_contract(text: str) -> bool:
    """Whether a publishing pause file's text asks for the Oracle contract's pause too."""
    return text.partition("\n")[0].strip().lower() == ON_CHAIN
