import asyncio

import pytest

from processing.csvstream import CsvStream, sniff_delimiter
from processing.errors import JobInputError


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


async def test_an_oversized_field_names_its_line_and_the_setting():
    with pytest.raises(JobInputError, match="line 3") as err:
        await parse(b"a\nshort\n" + b"z" * 2000 + b"\n", field_limit=1001)
    assert "ROWSMITH_MAX_ROW_BYTES" in err.value.fix


async def test_a_file_rejected_at_open_leaves_no_task_behind():
    with pytest.raises(JobInputError):
        await parse(b"PK\x03\x04" + b"\x00" * 100, 8)
    await asyncio.sleep(0.05)
    pending = [t for t in asyncio.all_tasks() if "_feed" in repr(t.get_coro())]
    assert pending == []
