"""preflight_csv's bounds that surviving mutants showed unasserted: the memory estimate and its
boundary, and line lengths checked wherever the long line sits in the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubetrain.data import MEMORY_PER_FILE_BYTE, DataError, preflight_csv


def _preflight(path: Path, max_line_bytes: int = 1 << 20, memory_limit: int | None = None) -> str:
    return preflight_csv(
        path, "s.csv", max_columns=100, max_line_bytes=max_line_bytes, memory_limit=memory_limit
    )


def test_the_memory_estimate_is_refused_only_above_what_is_available(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 249)  # 1000 bytes
    _preflight(path, memory_limit=1000 * MEMORY_PER_FILE_BYTE)  # exactly enough: accepted
    with pytest.raises(DataError, match="needs about"):
        _preflight(path, memory_limit=1000 * MEMORY_PER_FILE_BYTE - 1)


def test_the_memory_message_gives_the_sizes_in_mib_and_the_fixes(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a\n" + b"1\n" * ((2 << 20) // 2 - 1))  # 2 MiB
    with pytest.raises(DataError) as raised:
        _preflight(path, memory_limit=1 << 20)
    assert str(raised.value) == (
        f"data s.csv (2 MiB) needs about {2 * MEMORY_PER_FILE_BYTE} MiB of memory to load, but "
        "this process may use only 1 MiB more; give it more memory (in Kubernetes the "
        "memory_limit job variable) or train on a sample"
    )


@pytest.mark.parametrize(
    ("content", "accepted"),
    [
        (b"abcd\nefgh\n", True),  # lines of exactly the limit (4), one starting a block
        (b"a\nb\nabcd\n", True),  # the line after a block's last newline counts, not its first
        (b"ab\nabcd", True),  # a last line of exactly the limit, without a final newline
        (b"ab\ncdefg\n", False),  # a line over the limit that starts mid-block
        (b"abcde\nf\n", False),  # the first line one byte over
        (b"a,b\n" + b"x" * 20 + b"\nc,d\n", False),  # a long line in the middle
    ],
)
def test_line_lengths_are_checked_at_the_limit_and_anywhere_in_the_file(
    tmp_path: Path, content: bytes, accepted: bool
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    if accepted:  # and the whole file is fingerprinted, not just up to the longest line
        assert _preflight(path, max_line_bytes=4) == hashlib.sha256(content).hexdigest()
    else:
        with pytest.raises(
            DataError,
            match=r"^data s\.csv has a line longer than KUBETRAIN_MAX_LINE_BYTES=4; is it really a "
            r"CSV with one row per line\? Raise the limit if so$",
        ):
            _preflight(path, max_line_bytes=4)


def test_a_long_line_inside_one_mebibyte_block_is_still_measured(tmp_path: Path) -> None:
    limit = (1 << 20) + 100
    path = tmp_path / "d.csv"
    path.write_bytes(b"a\n" + b"x" * (limit + 50) + b"\n" + b"1\n" * 1000)
    with pytest.raises(DataError, match="has a line longer than"):
        _preflight(path, max_line_bytes=limit)


@pytest.mark.parametrize(
    ("content", "max_columns", "accepted"),
    [
        (b"a,bc\n1,2\n", 2, True),  # the header fills the first block exactly: 2 columns
        (b"a,bc\n1,2\n", 1, False),
        (b"a,\xff\n1,2\n", 2, True),  # an undecodable byte in a name still counts as a name
    ],
)
def test_columns_are_counted_from_the_header_up_to_the_limit(
    tmp_path: Path, content: bytes, max_columns: int, accepted: bool
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    run = lambda: preflight_csv(path, "s.csv", max_columns=max_columns, max_line_bytes=4)  # noqa: E731
    if accepted:
        run()
    else:
        with pytest.raises(DataError, match=r"^data s\.csv has 2 columns, more than KUBETRAIN_MAX"):
            run()


def test_load_dataset_strips_a_byte_order_mark_from_the_first_name_only(tmp_path: Path) -> None:
    from kubetrain.data import load_dataset

    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff a ,b,y\n1,2,p\n3,4,q\n5,6,p\n7,8,q\n".encode())
    dataset = load_dataset(str(path), "y", [], 2)
    assert dataset.columns == [" a ", "b", "y"]


def test_load_dataset_read_errors_name_the_data_given(tmp_path: Path) -> None:
    from kubetrain.data import load_dataset

    path = tmp_path / "ragged.csv"
    path.write_bytes(b"a,y\n1,p\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"^data \S*ragged\.csv is not a readable CSV"):
        load_dataset(str(path), "y", [], 2)
