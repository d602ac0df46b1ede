"""One PNG from several `omnirec evaluate --json` outputs: omnirec vs the baselines by protocol.

    python -m bench.quality_plot OUT.png RUN.json [RUN.json ...] [--title T]

Each RUN file is either the JSON object itself or the captured stdout of
``omnirec evaluate ... --json`` (its last line is the object).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omnirec.quality_plot import plot_results


def load(path: Path) -> dict:
    text = path.read_text().strip()
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.splitlines()[-1])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    out = plot_results([load(p) for p in args.runs], args.out, args.title)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
