"""The one exception every layer may raise for a mistake the user can fix."""

from __future__ import annotations


class HedgeflowError(Exception):
    """Base of the errors a user can fix (bad configuration, missing file, damaged archive, ...).

    The command line prints these as one message without a traceback; any other exception is a
    bug and keeps its traceback.
    """
