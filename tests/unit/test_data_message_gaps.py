"""Data error messages that surviving mutants showed unasserted: which failure each file gets,
and the bounds that keep a message short whatever the input (issue: values quoted in messages
are truncated)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from kubetrain.data import DataError, read_csv, read_csv_chunks, validate_frame


def _read_all(path: Path, chunked: bool) -> object:
    return list(read_csv_chunks(path, "d.csv", 10)) if chunked else read_csv(path, "d.csv")


@pytest.mark.parametrize("chunked", [False, True], ids=["read_csv", "read_csv_chunks"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"^data d\.csv is empty \(0 bytes\); expected a CSV with a header row$"),
        (b"\n", r"^data d\.csv has no columns; expected a CSV with a header$"),
        (b"a,b\n1,2\n3,4,5,6\n", r"^data d\.csv is not a readable CSV: Error tokenizing data"),
    ],
    ids=["0-bytes", "1-byte-newline", "ragged-row"],
)
def test_each_unreadable_file_gets_its_own_message(
    tmp_path: Path, content: bytes, message: str, chunked: bool
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        _read_all(path, chunked)


def _validate(frame: pd.DataFrame, **kwargs: object) -> None:
    options: dict = {"target": "y", "drop_columns": [], "folds": 2, "source": "d.csv"}
    options.update(kwargs)
    validate_frame(frame, sha256="0" * 64, **options)


def test_a_long_class_label_is_quoted_truncated_at_60_characters() -> None:
    label = "c" * 100
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [label, label]})
    with pytest.raises(DataError) as raised:
        _validate(frame)
    assert "single class ('" + "c" * 58 + "…(+" in str(raised.value)


def test_column_lists_show_twenty_names_then_how_many_more() -> None:
    twenty = {f"col{i:02d}": [1.0] for i in range(20)}
    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame(twenty))
    listed = ", ".join(f"'col{i:02d}'" for i in range(20))
    assert f"columns are [{listed}]. Set target" in str(raised.value)  # all 20, nothing more

    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame({**twenty, "col20": [1.0], "col21": [1.0], "col22": [1.0]}))
    assert f"columns are [{listed}, … 3 more]. Set target" in str(raised.value)


def test_each_listed_column_name_is_truncated_at_60_characters() -> None:
    name = "n" * 100
    with pytest.raises(DataError) as raised:
        _validate(pd.DataFrame({name: [1.0]}))
    assert "columns are ['" + "n" * 58 + "…(+" in str(raised.value)


def test_a_long_parser_error_is_cut_at_300_characters(tmp_path: Path) -> None:
    from kubetrain.data import _short

    shown = _short(ValueError("e" * 1000))
    assert shown.startswith("e" * 298 + "…(+")
    assert len(shown) < 320


def test_shape_errors_of_load_dataset_name_the_data_it_was_given(tmp_path: Path) -> None:
    from kubetrain.data import load_dataset

    path = tmp_path / "wide.csv"
    path.write_text("a,b,c,y\n1,2,3,p\n")
    with pytest.raises(DataError, match=rf"^data {re.escape(str(path))} "):
        load_dataset(str(path), "y", [], 2, max_columns=2)
