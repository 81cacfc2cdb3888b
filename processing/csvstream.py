"""Streaming CSV parsing of a blob that may be far larger than memory.

The blob arrives as async byte chunks; Python's `csv` module is a pull parser over a
synchronous line iterator. We run the parser in a worker thread fed through a small
bounded queue, so memory stays flat whatever the file size, quoted fields may span any
number of lines and chunks, and the event loop is free to enqueue rows meanwhile.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from processing.errors import JobInputError

BATCH_ROWS = 500
_EOL = re.compile(r"\r\n|\r|\n")
_SENTINEL = object()


@dataclass(frozen=True)
class _Failure:
    """The download failed: the parser must raise it, never mistake it for the end of the file."""

    error: BaseException


_CANDIDATES = (",", ";", "\t", "|")
# Files people rename to .csv by mistake, by their first bytes.
_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook is one)",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
}


def binary_kind(head: bytes) -> str | None:
    for signature, kind in _SIGNATURES.items():
        # A short head (tiny first chunk) that matches as far as it goes counts too.
        if head and (head.startswith(signature) or signature.startswith(head)):
            return kind
    return None


@dataclass(frozen=True)
class ParsedRow:
    index: int  # 0-based data row (the header is not a row)
    line: int  # 1-based physical line where the row ends, for error messages
    cells: list[str]


def sniff_delimiter(first_line: str) -> str:
    """The candidate that splits the header most often, outside quotes; comma on a tie."""
    counts = dict.fromkeys(_CANDIDATES, 0)
    quoted = False
    for ch in first_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(_CANDIDATES, key=lambda c: counts[c])
    return best if counts[best] > counts[","] else ","


class _Lines:
    """Decode byte chunks incrementally and yield lines with their endings (CRLF, LF or CR)."""

    def __init__(self, chunks: queue.Queue, name: str, encoding: str) -> None:
        self._chunks = chunks
        self._name = name
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.offset = 0  # bytes consumed so far, to name the first bad byte
        self._head = b""
        self._wide = encoding.lower().replace("-", "").startswith(("utf16", "utf32"))

    def _binary(self, kind: str, where: int) -> JobInputError:
        return JobInputError(
            f"{self._name} is not a text CSV file: it looks like {kind}",
            where=f"byte {where}",
            fix="upload a CSV file; a spreadsheet must be saved as CSV first",
        )

    def _decode(self, data: bytes, final: bool) -> str:
        self._held = self._decoder.getstate()[0]
        if len(self._head) < 8:
            self._head += data[: 8 - len(self._head)]
        try:
            return self._decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            kind = binary_kind(self._head)
            if kind:
                raise self._binary(kind, 0) from None
            # exc.start counts from the bytes the decoder still held back from the last chunk.
            where = self.offset - len(self._held) + exc.start
            bad = exc.object[exc.start : exc.end]
            raise JobInputError(
                f"{self._name} is not valid UTF-8: bad byte sequence {bad.hex(' ')} at byte offset {where}",
                where=f"byte {where}",
                fix="save the file as UTF-8 (Excel: 'CSV UTF-8'), or name its encoding in the pipeline",
            ) from None

    def __iter__(self) -> Iterator[str]:
        pending = ""
        while True:
            data = self._chunks.get()
            if data is _SENTINEL:
                break
            if isinstance(data, _Failure):
                raise data.error
            if not self._wide and b"\x00" in data:
                # NUL never occurs in a UTF-8 text file; it is the mark of a binary file.
                nul = self.offset + data.index(b"\x00")
                kind = binary_kind(self._head + data[:8]) or f"a binary file (a NUL byte at offset {nul})"
                raise self._binary(kind, nul)
            text = pending + self._decode(data, final=False)
            self.offset += len(data)
            # `pending` holds no line end (but perhaps a trailing CR), so only the new text is
            # scanned: a long line split over many chunks costs linear, not quadratic, time.
            start, pos = 0, max(0, len(pending) - 1)
            while (match := _EOL.search(text, pos)) is not None:
                # A lone CR at the very end may be the first half of a CRLF split across chunks.
                if match.group() == "\r" and match.end() == len(text):
                    break
                yield text[start : match.end()]
                start = pos = match.end()
            pending = text[start:]
        pending += self._decode(b"", final=True)
        if pending:
            yield pending


class CsvStream:
    """Parse CSV from async byte chunks; `header` then `batches()` of `ParsedRow`."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        name: str,
        delimiter: str = "",
        encoding: str = "utf-8-sig",
        field_limit: int = 1 << 20,
        skip_rows: int = 0,
    ) -> None:
        self._chunks = chunks
        self._name = name
        self._delimiter = delimiter
        self._encoding = encoding
        self._field_limit = field_limit
        self._skip = skip_rows
        self._in: queue.Queue = queue.Queue(maxsize=4)
        self._out: asyncio.Queue = asyncio.Queue(maxsize=4)
        self._stop = threading.Event()
        self._feeder: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self.header: list[str] = []
        self.delimiter = delimiter

    async def __aenter__(self) -> CsvStream:
        loop = asyncio.get_running_loop()
        self._feeder = asyncio.create_task(self._feed())
        self._thread = threading.Thread(target=self._parse, args=(loop,), daemon=True, name="csv-parse")
        self._thread.start()
        try:
            kind, value = await self._next()
        except BaseException:
            await self.__aexit__()  # stop the feeder and the parser; the download is abandoned
            raise
        if kind == "header":
            self.header, self.delimiter = value
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._feeder:
            self._feeder.cancel()
        # Unblock the parser if it waits for input, then let it run out.
        while self._thread and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._in.put_nowait(_SENTINEL)
            while not self._out.empty():
                self._out.get_nowait()
            await asyncio.sleep(0.01)

    async def _feed(self) -> None:
        end: object = _SENTINEL
        try:
            async for chunk in self._chunks:
                await self._offer(chunk)
        except Exception as exc:
            end = _Failure(exc)
        await self._offer(end)

    async def _offer(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._in.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.002)

    def _put(self, loop: asyncio.AbstractEventLoop, item: tuple) -> None:
        future = asyncio.run_coroutine_threadsafe(self._out.put(item), loop)
        while not self._stop.is_set():
            try:
                future.result(timeout=0.2)
                return
            except TimeoutError:
                continue
        future.cancel()

    def _csv_error(self, exc: csv.Error, line: int, row_start: int) -> JobInputError:
        text = str(exc)
        if "field larger than field limit" in text:
            return JobInputError(
                f"{self._name}: a field ending on line {line} is longer than {self._field_limit - 1} characters",
                where=f"line {line}",
                fix="shorten the field, or raise ROWSMITH_MAX_ROW_BYTES",
            )
        if "unexpected end of data" in text:
            return JobInputError(
                f"{self._name}: a quoted field in the row starting on line {row_start} is never closed "
                f"(the file ends inside quotes, at line {line})",
                where=f"line {row_start}",
                fix='find the field with an opening quote and no closing quote; a quote inside a field is written ""',
            )
        return JobInputError(
            f"{self._name} is not valid CSV at line {line}: {text}",
            where=f"line {line}",
            fix="check quoting: a field with the delimiter, a quote or a line break must be quoted",
        )

    def _parse(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = None
        last_line = 0  # where the last complete row ended: an error is in the row after it
        try:
            lines = iter(_Lines(self._in, self._name, self._encoding))
            first = next(lines, None)
            if first is None:
                raise JobInputError(f"{self._name} is empty", where="line 1", fix="upload a CSV with a header row")
            delimiter = self._delimiter or sniff_delimiter(first)
            csv.field_size_limit(self._field_limit)

            def all_lines() -> Iterator[str]:
                yield first
                yield from lines

            # strict: an unclosed quote is an error, not a cell that swallows the rest of the file.
            reader = csv.reader(all_lines(), delimiter=delimiter, strict=True)
            header = next(reader)
            last_line = reader.line_num
            self._put(loop, ("header", (header, delimiter)))
            batch: list[ParsedRow] = []
            index = 0
            for cells in reader:
                last_line = reader.line_num
                if not cells:  # a blank line: trailing empty lines are not rows
                    continue
                if index >= self._skip:
                    batch.append(ParsedRow(index, reader.line_num, cells))
                    if len(batch) >= BATCH_ROWS:
                        self._put(loop, ("rows", batch))
                        batch = []
                index += 1
                if self._stop.is_set():
                    return
            self._put(loop, ("rows", batch))
            self._put(loop, ("end", index))
        except JobInputError as exc:
            self._put(loop, ("error", exc))
        except csv.Error as exc:
            self._put(loop, ("error", self._csv_error(exc, reader.line_num if reader else 0, last_line + 1)))
        except Exception as exc:  # the download's own error, or a bug: never a silent end of file
            self._put(loop, ("error", exc))

    async def _next(self) -> tuple[str, object]:
        kind, value = await self._out.get()
        if kind == "error":
            raise value  # type: ignore[misc]
        return kind, value

    async def batches(self) -> AsyncIterator[list[ParsedRow]]:
        while True:
            kind, value = await self._next()
            if kind == "end":
                self.total_rows = value
                return
            if value:
                yield value  # type: ignore[misc]
