"""slice_segments against the obvious bytes model, wherever the cuts and the range fall."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfsframe.fuse.wire import ProtocolError, slice_segments


@given(st.lists(st.binary(max_size=24), max_size=6), st.data())
def test_views_hold_exactly_the_range(chunks: list[bytes], data: st.DataObject) -> None:
    joined = b"".join(chunks)
    start = data.draw(st.integers(0, len(joined)))
    length = data.draw(st.integers(0, len(joined) - start))
    segments = [memoryview(c) for c in chunks]
    views = slice_segments(segments, start, length)
    assert b"".join(bytes(v) for v in views) == joined[start : start + length]
    # Told the total (as READ and WRITE tell it), the same views.
    told = slice_segments(segments, start, length, total=len(joined))
    assert [(bytes(v), v.obj) for v in told] == [(bytes(v), v.obj) for v in views]


def test_a_range_past_the_end_is_refused() -> None:
    with pytest.raises(ProtocolError):
        slice_segments([memoryview(b"abc"), memoryview(b"de")], 2, 4)
