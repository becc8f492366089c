"""Byte-range reading (``midtrain.data.lines``): lines starting in a range keep the file's own line numbers."""

from __future__ import annotations

import gzip

import pytest

from midtrain.data.lines import NEWLINE_MARKS, raw_lines, text_lines
from midtrain.errors import DataError


def test_a_range_yields_the_lines_that_start_in_it_with_their_file_line_numbers(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"aa\nbbbb\nc\n\ndd\n")  # lines start at bytes 0, 3, 8, 10, 11
    assert list(raw_lines(path)) == [(1, b"aa\n"), (2, b"bbbb\n"), (3, b"c\n"), (4, b"\n"), (5, b"dd\n")]
    assert list(raw_lines(path, 0, 3)) == [(1, b"aa\n")]
    assert list(raw_lines(path, 1, 9)) == [(2, b"bbbb\n"), (3, b"c\n")]  # from inside line 1: skip to line 2
    assert list(raw_lines(path, 3, 4)) == [(2, b"bbbb\n")]  # a range starting exactly on a line start includes it
    assert list(raw_lines(path, 9, 100)) == [(4, b"\n"), (5, b"dd\n")]
    cuts = [0, 2, 5, 11, 14]  # any cut of the file gives every line exactly once
    assert [x for a, b in zip(cuts, cuts[1:]) for x in raw_lines(path, a, b)] == list(raw_lines(path))


def test_newline_counts_are_memoised_per_file_identity(tmp_path):
    path = tmp_path / "m.txt"
    path.write_bytes(b"x\n" * 100)
    list(raw_lines(path, 50, 60))
    st = path.stat()
    marks = NEWLINE_MARKS[(str(path), st.st_size, st.st_mtime_ns)]
    assert marks[49] == 24  # the newlines at bytes 1, 3, …, 47
    assert [n for n, _ in raw_lines(path, 120, 124)] == [61, 62]  # resumes from the mark, same numbering


def test_gzip_is_read_whole_and_bad_bytes_name_file_and_line(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wb") as f:
        f.write(b"one\ntwo\n")
    assert list(text_lines(tmp_path / "a.txt.gz", 5, 6)) == [(1, "one\n"), (2, "two\n")]
    (tmp_path / "bad.txt").write_bytes(b"fine\nno \xff here\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8"):
        list(text_lines(tmp_path / "bad.txt"))
    with pytest.raises(DataError, match=r"file not found: .*missing\.txt"):
        list(text_lines(tmp_path / "missing.txt"))
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"a\nb\n" * 1000)[:40])
    with pytest.raises(DataError, match=r"cut\.txt\.gz:\d+: cannot read"):
        list(text_lines(tmp_path / "cut.txt.gz"))
