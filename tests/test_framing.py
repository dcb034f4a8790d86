"""Line splitting: any chunking of a stream gives the same lines; long lines are bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.framing import LineBuffer, TooLong


def split(chunks: list[bytes], limit: int = 16) -> list[bytes | TooLong]:
    buffer = LineBuffer(limit)
    items = [item for chunk in chunks for item in buffer.feed(chunk)]
    last = buffer.end()
    return items + ([last] if last else [])


def test_lines_keep_their_newlines_and_the_last_one_may_have_none() -> None:
    assert split([b"a\nbb\r\n", b"c"]) == [b"a\n", b"bb\r\n", b"c"]


def test_a_long_line_yields_its_head_once_and_the_next_line_is_whole() -> None:
    data = b"x" * 40 + b"\nok\n"
    assert split([data]) == [TooLong(b"x" * 16), b"ok\n"]
    assert split([data[:10], data[10:25], data[25:]]) == [TooLong(b"x" * 16), b"ok\n"]


@given(st.lists(st.binary(max_size=30), max_size=10), st.data())
@settings(max_examples=300, deadline=None)
def test_chunking_never_changes_the_lines(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"\n".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert split(chunks, limit=64) == split([stream], limit=64)
    assert b"".join(x for x in split([stream], limit=64) if isinstance(x, bytes)) == stream


def test_a_chunk_of_one_whole_line_is_bounded_like_any_other() -> None:
    # Chunks of one line each (the common case, taken without splitting), around the limit.
    for n in (15, 16, 17, 40):
        line = b"x" * n + b"\n"
        expected = [line] if n <= 16 else [TooLong(b"x" * 16)]
        assert split([line, b"ok\n"]) == [*expected, b"ok\n"]
    # The end of a long line that came before is skipped, even when it comes as one line.
    assert split([b"x" * 40, b"yy\n", b"ok\n"]) == [TooLong(b"x" * 16), b"ok\n"]
    # So is a line's start held back from the chunk before.
    assert split([b"ab", b"c\n"]) == [b"abc\n"]
