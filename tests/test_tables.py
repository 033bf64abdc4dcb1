"""Spreadsheet-safe CSV cells and file-system-safe names, on hand-picked hostile values."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from labelkit.tables import MAX_NAME_BYTES, safe_cell, safe_name, spreadsheet_safe, to_csv


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("salmon", "salmon"),
        ("a=b", "a=b"),  # only the first character makes a formula
        ("", ""),
        (-5, -5),  # numbers are numbers, not text
        (None, None),
    ],
)
def test_safe_cell_prefixes_only_text_that_starts_a_formula(value, expected) -> None:
    assert safe_cell(value) == expected


def test_a_csv_of_hostile_names_reads_back_as_text_with_the_prefix() -> None:
    table = pd.DataFrame(
        {"class": ["=1+1", "trout"], "annotator": ["@bob", "ana"], "confidence": [-0.5, 0.9]}
    )
    text = to_csv(table)
    back = pd.read_csv(io.StringIO(text))
    assert back["class"].tolist() == ["'=1+1", "trout"]
    assert back["annotator"].tolist() == ["'@bob", "ana"]
    assert back["confidence"].tolist() == [-0.5, 0.9]
    assert table["class"].tolist() == ["=1+1", "trout"]  # the caller's table is not changed
    assert spreadsheet_safe(pd.DataFrame({"=x": [1]})).columns.tolist() == ["'=x"]


def test_safe_name_bounds_bytes_and_avoids_reserved_and_unsafe_names() -> None:
    long = "é" * 200  # 400 bytes of UTF-8: over NAME_MAX (255), Errno 36 before
    cut = safe_name(long)
    assert len(cut.encode()) <= MAX_NAME_BYTES and cut == "é" * (MAX_NAME_BYTES // 2)
    assert safe_name("x" * 300) == "x" * MAX_NAME_BYTES
    for reserved in ("CON", "con", "Nul", "COM1", "lpt9", "aux.txt"):
        assert safe_name(reserved) == reserved + "_"
    assert safe_name("console") == "console"
    assert safe_name("a/b\\c\x00d\x1fe") == "a_b_c_d_e"
    assert safe_name(" .. ") == "_" and safe_name("") == "_"
