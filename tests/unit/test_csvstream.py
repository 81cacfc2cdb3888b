import asyncio
import codecs

import pytest

from processing.core import csv_reader
from processing.core.csv_reader import BATCH_ROWS, CsvStream, hard_limit, sniff_delimiter
from processing.core.errors import JobInputError


async def chunks_of(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


async def parse(data: bytes, size: int = 7, **kwargs):
    async with CsvStream(chunks_of(data, size), name="input/t.csv", **kwargs) as stream:
        rows = [r async for batch in stream.batches() for r in batch]
        return stream.header, stream.delimiter, rows


@pytest.mark.parametrize("size", [1, 2, 5, 4096])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
async def test_quoted_fields_span_lines_and_chunks(size, newline):
    text = newline.join(["id,text", '1,"a, ""quoted""', 'multi-line"', "2,plain", ""]) + newline
    header, _, rows = await parse(text.encode(), size)
    assert header == ["id", "text"]
    assert [r.cells for r in rows] == [["1", f'a, "quoted"{newline}multi-line'], ["2", "plain"]]
    assert [r.index for r in rows] == [0, 1]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
async def test_delimiter_is_sniffed_from_the_header(delimiter):
    text = f"a{delimiter}b{delimiter}c\n1{delimiter}2,5{delimiter}3\n"
    header, found, rows = await parse(text.encode())
    assert found == delimiter
    assert header == ["a", "b", "c"]
    if delimiter != ",":
        assert rows[0].cells == ["1", "2,5", "3"]


def test_sniff_ignores_delimiters_inside_quotes_and_prefers_comma_on_ties():
    assert sniff_delimiter('"a;b;c",d\n') == ","
    assert sniff_delimiter("a;b,c\n") == ","


async def test_bom_is_stripped_and_whitespace_kept():
    header, _, rows = await parse("\ufeffname, note \n x , y \n".encode())
    assert header == ["name", " note "]
    assert rows[0].cells == [" x ", " y "]


async def test_blank_trailing_lines_are_not_rows():
    _, _, rows = await parse(b"a\n1\n\n\n")
    assert [r.cells for r in rows] == [["1"]]


async def test_not_utf8_names_the_byte_offset():
    data = "a,b\ncafé,1\n".encode("cp1252")
    with pytest.raises(JobInputError, match="byte offset 7") as err:
        await parse(data, 3)
    assert "input/t.csv" in str(err.value)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00", "ZIP archive"),
        (b"abc,def\n\x00\x01\x02", "NUL byte at offset 8"),
    ],
)
async def test_binary_file_is_rejected_not_parsed(data, kind):
    with pytest.raises(JobInputError, match="not a text CSV") as err:
        await parse(data, 3)
    assert kind in str(err.value)


async def test_empty_file_is_an_input_error():
    with pytest.raises(JobInputError, match="empty"):
        await parse(b"")


async def test_skip_rows_resumes_after_a_checkpoint():
    data = "n\n" + "".join(f"{i}\n" for i in range(10))
    _, _, rows = await parse(data.encode(), skip_rows=7)
    assert [r.cells[0] for r in rows] == ["7", "8", "9"]
    assert [r.index for r in rows] == [7, 8, 9]


async def test_a_consumer_that_stops_early_does_not_hang():
    data = ("n\n" + "x\n" * 50_000).encode()
    async with CsvStream(chunks_of(data, 1024), name="big.csv") as stream:
        async for _batch in stream.batches():
            break


class DownloadBroke(Exception):
    pass


async def failing_after(data: bytes):
    yield data
    raise DownloadBroke("connection reset")


async def test_a_failed_download_is_an_error_never_a_short_file():
    # The cut-off last row must not be mistaken for the end of the file.
    with pytest.raises(DownloadBroke):
        async with CsvStream(failing_after(b"a,b\n1,2\n3,4\n5,"), name="t.csv") as stream:
            async for _ in stream.batches():
                pass


async def test_an_unclosed_quote_fails_with_its_line_instead_of_swallowing_rows():
    with pytest.raises(JobInputError, match=r"starting on line 3 is never closed") as err:
        await parse(b'a,b\n1,2\n3,"x\n7,8\n')
    assert "quote" in err.value.fix


async def test_a_quote_inside_an_unquoted_field_is_kept_as_written():
    _, _, rows = await parse(b'size,name\n5" screen,tv\n')
    assert rows[0].cells == ['5" screen', "tv"]


async def test_a_long_line_over_many_small_chunks():
    long = "x" * 300_000
    _, _, rows = await parse(f"a,b\n1,{long}\r\n2,y\n".encode(), 1024)
    assert [r.cells for r in rows] == [["1", long], ["2", "y"]]


async def test_a_file_rejected_at_open_leaves_no_task_behind():
    with pytest.raises(JobInputError):
        await parse(b"PK\x03\x04" + b"\x00" * 100, 8)
    await asyncio.sleep(0.05)
    pending = [t for t in asyncio.all_tasks() if "_feed" in repr(t.get_coro())]
    assert pending == []


# --- encodings -------------------------------------------------------------------------

TEXT = 'id,text\r\n1,café ✓\r\n2,"a, ""b""\r\nc"\r\n'
ROWS = [["1", "café ✓"], ["2", 'a, "b"\r\nc']]


@pytest.mark.parametrize("size", [1, 3, 4096])
@pytest.mark.parametrize(
    ("encoded", "codec"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16-le"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16-be"),
        (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "utf-32-le"),
    ],
)
async def test_the_byte_order_mark_decides_the_encoding(encoded, codec, size):
    async with CsvStream(chunks_of(encoded, size), name="t.csv") as stream:
        rows = [r async for batch in stream.batches() for r in batch]
    assert stream.header == ["id", "text"]  # no BOM left in the first name
    assert stream.encoding == codec
    assert [r.cells for r in rows] == ROWS


async def test_a_byte_order_mark_wins_over_the_pipeline_encoding():
    header, _, rows = await parse(codecs.BOM_UTF8 + "n\nü\n".encode(), encoding="cp1252")
    assert header == ["n"] and rows[0].cells == ["ü"]


async def test_utf16_without_a_byte_order_mark_says_how_to_read_it():
    with pytest.raises(JobInputError, match=r"UTF-16 \(little-endian\) text without a byte-order mark") as err:
        await parse("id,text\n1,x\n".encode("utf-16-le"))
    assert 'encoding = "utf-16-le"' in err.value.fix
    # ... and with the encoding named in the pipeline, it is read.
    header, _, rows = await parse("id,text\n1,x\n".encode("utf-16-le"), encoding="utf-16-le")
    assert header == ["id", "text"] and rows[0].cells == ["1", "x"]


async def test_a_named_encoding_decodes_what_utf8_cannot():
    data = "name,note\ncafé,€5\n".encode("cp1252")
    _, _, rows = await parse(data, 2, encoding="cp1252")
    assert rows[0].cells == ["café", "€5"]


async def test_bytes_the_named_encoding_lacks_are_named_with_their_offset():
    # 0x81 has no character in Windows-1252.
    with pytest.raises(JobInputError, match="not valid cp1252: bad byte sequence 81 at byte offset 5") as err:
        await parse(b"a,b\nx\x81\n", 2, encoding="cp1252")
    assert "encoding = 'cp1252'" in err.value.fix


async def test_the_offset_of_a_bad_byte_counts_the_byte_order_mark():
    with pytest.raises(JobInputError, match="byte offset 10"):
        await parse(codecs.BOM_UTF8 + b"a,b\nok,\xe9\n", 1)


async def test_a_binary_signature_is_rejected_before_anything_is_parsed():
    # The first chunk of this PDF decodes as text; its signature rejects it all the same.
    with pytest.raises(JobInputError, match="a PDF document"):
        await parse(b"%PDF-1.7\n" + b"x" * 100, 64)


# --- row and line limits ------------------------------------------------------------------


async def test_a_row_over_the_size_limit_is_passed_on_cut_short_and_flagged():
    big = "z" * 5000
    data = f'id,text\n1,ok\n2,{big}\n3,"two\nlines"\n'.encode()
    _, _, rows = await parse(data, 100, max_row_bytes=1024)
    assert [r.cells for r in (rows[0], rows[2])] == [["1", "ok"], ["3", "two\nlines"]]
    assert rows[0].sizes == () and rows[2].sizes == ()
    flagged = rows[1]
    assert flagged.sizes == (1, 5000)
    assert flagged.cells[0] == "2" and flagged.cells[1].endswith("…") and len(flagged.cells[1]) <= 201
    assert (flagged.first_line, flagged.line, flagged.lines) == (3, 3, "line 3")
    assert rows[2].lines == "lines 4-5"


async def test_the_size_limit_counts_utf8_bytes_not_characters():
    euro = "€" * 400  # 400 characters, 1200 bytes
    _, _, rows = await parse(f"a\n{euro}\n{'e' * 400}\n".encode(), max_row_bytes=1024)
    assert rows[0].sizes == (1200,)
    assert rows[1].sizes == () and rows[1].cells == ["e" * 400]


async def test_a_line_over_the_hard_limit_fails_the_job_naming_it():
    assert hard_limit(1024) == 8192
    with pytest.raises(JobInputError, match="line 3 is over 8,192 characters") as err:
        await parse(b"a\nshort\n" + b"z" * 20_000 + b"\nnever read\n", 1000, max_row_bytes=1024)
    assert err.value.where == "line 3"


async def test_an_unclosed_quote_stops_at_the_hard_limit_not_at_the_end_of_the_file():
    # A stray quote would otherwise swallow the rest of a file of any size into one field.
    data = b'a,b\n1,2\n3,"oops\n' + b"4,5\n" * 10_000
    with pytest.raises(JobInputError, match="row starting on line 3 is over 8,192 characters") as err:
        await parse(data, 512, max_row_bytes=1024)
    assert "unbalanced" in err.value.fix


async def test_many_fields_add_up_to_the_hard_limit():
    data = b"a\n" + b",".join([b"x" * 1000] * 10) + b"\n"
    with pytest.raises(JobInputError, match="line 2 is over 8,192 characters"):
        await parse(data, 4096, max_row_bytes=1024)


# --- streaming ---------------------------------------------------------------------------


def fixed_row(i: int) -> bytes:
    return f"{i:07d},text of row {i:07d}\n".encode()


async def test_the_parser_never_runs_far_ahead_of_its_consumer():
    """200,000 rows: the rows read from the source but not yet consumed stay bounded."""
    total, width = 200_000, len(fixed_row(0))
    pulled = 0

    async def source():
        nonlocal pulled
        yield b"id,text\n"
        per_chunk = 64 * 1024 // width
        for start in range(0, total, per_chunk):
            chunk = b"".join(fixed_row(i) for i in range(start, min(total, start + per_chunk)))
            pulled += chunk.count(b"\n")
            yield chunk

    consumed = ahead = batches = 0
    async with CsvStream(source(), name="big.csv") as stream:
        async for batch in stream.batches():
            consumed += len(batch)
            ahead = max(ahead, pulled - consumed)
            batches += 1
            if batches <= 20:
                await asyncio.sleep(0.005)  # a slow consumer at first: the queues fill up
    assert consumed == total == stream.total_rows
    rows_per_chunk = 64 * 1024 // width
    bound = (csv_reader.QUEUED_BATCHES + 2) * BATCH_ROWS + (csv_reader.CHUNKS_AHEAD + 2) * rows_per_chunk
    assert BATCH_ROWS <= ahead <= bound < total / 10


async def test_batches_of_large_rows_are_bounded_by_characters():
    row = "y" * 100_000
    data = ("a\n" + f"{row}\n" * 60).encode()
    async with CsvStream(chunks_of(data, 256 * 1024), name="t.csv") as stream:
        sizes = [sum(len(r.cells[0]) for r in batch) async for batch in stream.batches()]
    assert sum(sizes) == 60 * 100_000
    assert max(sizes) < csv_reader.BATCH_CHARS + 100_000
