"""How the command-line tools end: with `--json`, one JSON object as the last line of stdout."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def print_json_last(result: Any) -> None:
    """After the table (which may go through rich), so scripts can read `tail -1`."""
    sys.stdout.flush()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
