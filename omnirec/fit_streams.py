"""The streams ``omnirec fit-weights`` fits the ranking defaults on (docs/weights.md), written
so that anyone can re-run the procedure:

    python -m omnirec.fit_streams DIR [--tafeng-customers 1200] [--demo-customers 120]

1. ``tafeng.jsonl`` (+ ``tafeng_catalog.jsonl``): a Ta-Feng slice with the retailer's own
   category codes (``omnirec.datasets``);
2. ``norepeat.jsonl``: the same slice with every repeat purchase removed (each customer's first
   purchase of each item only): a stream without repeat purchases;
3. ``demo.jsonl``: the demo catalogue's simulated shoppers (``omnirec.simulate``), products first.

The last line printed is the ``omnirec fit-weights`` command that reads them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from omnirec import datasets, simulate

DEMO_START_MS = 1_780_000_000_000
DEMO_DAYS = 60
DEMO_SEED = 11


def first_purchases_only(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each customer's purchases without the items they bought before (a purchase left empty
    is dropped): the stream a retailer without repeat purchases would send.

    >>> stream = [{"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}, {"sku": "B"}]},
    ...           {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}]},
    ...           {"type": "purchase", "customer_id": "c", "items": [{"sku": "A"}, {"sku": "C"}]}]
    >>> [[item["sku"] for item in e["items"]] for e in first_purchases_only(stream)]
    [['A', 'B'], ['C']]
    """
    bought: dict[str, set[str]] = {}
    for event in events:
        if event.get("type") != "purchase":
            yield event
            continue
        seen = bought.setdefault(str(event.get("customer_id")), set())
        items = [item for item in event.get("items", ()) if item["sku"] not in seen]
        seen.update(item["sku"] for item in items)
        if items:
            yield {**event, "items": items}


def _write(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                yield orjson.loads(line)


def make(out: Path, tafeng_customers: int = 1200, demo_customers: int = 120) -> list[str]:
    """Write the three streams into ``out``; returns fit-weights' arguments for them."""
    out.mkdir(parents=True, exist_ok=True)
    tafeng, catalog = out / "tafeng.jsonl", out / "tafeng_catalog.jsonl"
    datasets.tafeng_to_jsonl(tafeng, catalog, limit_customers=tafeng_customers)
    _write(out / "norepeat.jsonl", first_purchases_only(_read(tafeng)))
    products = simulate.load_demo_catalog()
    _write(out / "demo.jsonl", [{"type": "product", **p} for p in products]
           + list(simulate.iter_events(demo_customers, DEMO_START_MS, DEMO_SEED, products, days=DEMO_DAYS)))
    return [f"{tafeng},{catalog}", f"{out / 'norepeat.jsonl'},{catalog}", str(out / "demo.jsonl")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnirec.fit_streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tafeng-customers", type=int, default=1200)
    parser.add_argument("--demo-customers", type=int, default=120)
    args = parser.parse_args(argv)
    streams = make(args.out, args.tafeng_customers, args.demo_customers)
    print("omnirec fit-weights " + " ".join(streams) + " --workers 3 --json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
