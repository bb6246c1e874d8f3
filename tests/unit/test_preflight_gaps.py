"""preflight_csv's bounds that surviving mutants showed unasserted: the memory estimate and its
boundary, and line lengths checked wherever the long line sits in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.data import MEMORY_PER_FILE_BYTE, DataError, preflight_csv


def _preflight(path: Path, max_line_bytes: int = 1 << 20, **kwargs: object) -> str:
    return preflight_csv(path, "s.csv", max_columns=100, max_line_bytes=max_line_bytes, **kwargs)


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
        (b"abcde\nf\n", False),  # the first line one byte over
        (b"a,b\n" + b"x" * 20 + b"\nc,d\n", False),  # a long line in the middle
    ],
)
def test_line_lengths_are_checked_at_the_limit_and_anywhere_in_the_file(
    tmp_path: Path, content: bytes, accepted: bool
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    if accepted:
        _preflight(path, max_line_bytes=4)
    else:
        with pytest.raises(DataError, match=r"has a line longer than KUBETRAIN_MAX_LINE_BYTES=4;"):
            _preflight(path, max_line_bytes=4)


def test_a_long_line_inside_one_mebibyte_block_is_still_measured(tmp_path: Path) -> None:
    limit = (1 << 20) + 100
    path = tmp_path / "d.csv"
    path.write_bytes(b"a\n" + b"x" * (limit + 50) + b"\n" + b"1\n" * 1000)
    with pytest.raises(DataError, match="has a line longer than"):
        _preflight(path, max_line_bytes=limit)
