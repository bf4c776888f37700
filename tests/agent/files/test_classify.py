from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zipfile
from pathlib import Path

import openpyxl
import pytest

from agent.files import samples
from agent.files.classify import Classifier
from agent.files.config import ClassifyConfig

RNG = random.Random(11)
IDS = [samples.resident_id(RNG) for _ in range(5)]
CARDS = [samples.bank_card(RNG) for _ in range(4)]
MOBILES = [samples.mobile(RNG) for _ in range(3)]
EXPECTED = {"cn_resident_id": 5, "bank_card": 4, "cn_mobile": 3, "email": 2}


def rows() -> list[list[str]]:
    out = [["name", "id", "card", "mobile", "email"]]
    for i in range(5):
        out.append([f"客户{i}", IDS[i], CARDS[i] if i < 4 else "", MOBILES[i] if i < 3 else "",
                    f"c{i}@bank.cn" if i < 2 else ""])
    return out


def classify(path: Path, **config: object) -> object:
    return Classifier(ClassifyConfig(**config)).classify(str(path))  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t"), (".txt", " | ")])
def test_delimited_text_files_are_counted_by_class(tmp_path: Path, suffix: str, sep: str) -> None:
    path = tmp_path / f"export{suffix}"
    path.write_text("\n".join(sep.join(r) for r in rows()) + "\n", encoding="utf-8")
    c = classify(path)
    assert c.counts == EXPECTED and c.caps_reached == [] and c.classified
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert c.size == path.stat().st_size


def test_json_and_json_lines_are_counted(tmp_path: Path) -> None:
    records = [dict(zip(rows()[0], r)) for r in rows()[1:]]
    (tmp_path / "a.json").write_text(json.dumps(records, ensure_ascii=False))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert classify(tmp_path / "a.json").counts == EXPECTED
    assert classify(tmp_path / "a.jsonl").counts == EXPECTED


def test_an_xlsx_workbook_is_counted_across_sheets_including_numeric_cells(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows()[:3]:
        ws.append(r)
    ws2 = wb.create_sheet("more")
    for r in rows()[3:]:
        ws2.append(r)
    ws2.append(["typed as a number", "", "", int(MOBILES[0]), ""])
    wb.save(tmp_path / "book.xlsx")
    c = classify(tmp_path / "book.xlsx")
    assert c.counts == {**EXPECTED, "cn_mobile": 4} and c.classified


def test_a_zip_of_csv_and_xlsx_is_counted_and_a_nested_zip_is_named_not_opened(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    for r in rows():
        wb.active.append(r)
    book = io.BytesIO()
    wb.save(book)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("hidden.csv", "\n".join(",".join(r) for r in rows()))
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/customers.csv", "\n".join(",".join(r) for r in rows()))
        z.writestr("b/customers.xlsx", book.getvalue())
        z.writestr("c/inner.zip", inner.getvalue())
        z.writestr("d/photo.jpg", b"\xff\xd8" + b"0" * 100)
    c = classify(tmp_path / "bundle.zip")
    assert c.counts == {k: 2 * v for k, v in EXPECTED.items()}
    assert c.caps_reached == ["zip_depth"]


def test_an_encrypted_zip_member_is_reported_as_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "locked.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("customers.csv", "\n".join(",".join(r) for r in rows()))
    data = bytearray(path.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" bit in both headers
        at = data.index(sig)
        struct.pack_into("<H", data, at + flag_at, struct.unpack_from("<H", data, at + flag_at)[0] | 1)
    path.write_bytes(bytes(data))
    c = classify(path)
    assert c.caps_reached == ["encrypted"] and c.counts["cn_resident_id"] == 0


def test_the_row_cap_stops_counting_and_is_named(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    expected = samples.write_customer_csv(path, 1000)
    c = classify(path, max_rows=101)
    assert c.caps_reached == ["rows"]
    assert c.counts["cn_resident_id"] == 100  # the header plus 100 customers
    assert expected.cn_resident_id == 1000


def test_the_byte_cap_stops_counting_and_is_named(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    samples.write_customer_csv(path, 5000)
    c = classify(path, max_bytes="64KiB")
    assert c.caps_reached == ["bytes"]
    assert 0 < c.counts["bank_card"] < 1000
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # the hash still covers the whole file


def test_the_time_cap_stops_counting_and_is_named(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    samples.write_customer_csv(path, 30000)
    ticks = iter(range(0, 10**6, 5))  # every look at the clock is five seconds later
    c = Classifier(ClassifyConfig(max_seconds="12s"), clock=lambda: float(next(ticks))).classify(str(path))
    assert c.caps_reached == ["seconds"]
    assert 0 < c.counts["cn_resident_id"] < 30000


def test_a_file_above_the_hash_cap_has_no_sha256_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n" * 1000)
    c = classify(path, hash_max_bytes="1KiB")
    assert c.sha256 is None and c.caps_reached == ["hash_bytes"]


def test_gb18030_text_from_chinese_excel_is_counted_with_custom_chinese_patterns(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    text = "\n".join(",".join(r) for r in rows()) + "\n客户号:12345\n"
    path.write_bytes(text.encode("gb18030"))
    c = classify(path, patterns={"customer_no": "客户号:\\d+"})
    assert c.counts == {**EXPECTED, "customer_no": 1}


def test_utf16_unicode_text_as_excel_saves_it_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("\n".join("\t".join(r) for r in rows()).encode("utf-16"))
    assert classify(path).counts == EXPECTED


def test_a_damaged_workbook_is_named_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a workbook")
    c = classify(path)
    assert c.caps_reached == ["unreadable"] and c.classified


def test_an_unsupported_format_is_hashed_but_not_classified(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.7 " + IDS[0].encode())
    c = classify(path)
    assert c.classified is False and c.counts == {}
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_single_line_json_larger_than_a_chunk_is_cut_between_values(tmp_path: Path) -> None:
    path = tmp_path / "one-line.json"
    records = [{"id": samples.resident_id(RNG), "card": samples.bank_card(RNG)} for _ in range(60_000)]
    path.write_text(json.dumps(records))
    assert path.stat().st_size > 2 * (1 << 20)
    c = classify(path)
    assert (c.counts["cn_resident_id"], c.counts["bank_card"]) == (60_000, 60_000)
