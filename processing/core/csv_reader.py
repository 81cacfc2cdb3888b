"""Streaming CSV parsing of a blob that may be far larger than memory.

The blob arrives as async byte chunks; Python's `csv` module is a pull parser over a
synchronous line iterator. We run the parser in a worker thread fed through a small
bounded queue, so memory stays flat whatever the file size, quoted fields may span any
number of lines and chunks, and the event loop is free to enqueue rows meanwhile.

Encoding: a byte-order mark decides (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE); without one the
file is read as UTF-8, or in the encoding its pipeline names. Bytes that do not decode fail
the job, naming the byte offset; binary files (a NUL byte, or a ZIP/PNG/PDF... signature)
are rejected, never parsed into garbage.

Memory is bounded by bytes, not only rows. The limits, for `max_row_bytes` (the app's
ROWSMITH_MAX_ROW_BYTES, 1 MiB by default):
- a row over `max_row_bytes` (its cells' UTF-8 size) is passed on cut short, with `sizes`
  set, and ingest records it as a row error: the rest of the file is still processed;
- a row (or a single line) over `HARD_LIMIT_FACTOR * max_row_bytes` characters (8 MiB by
  default) fails the job: the parser must hold a row to find its end, and such a row is
  almost always a quote that is never closed, swallowing the rest of the file;
- a batch ends after `BATCH_ROWS` rows or `BATCH_CHARS` characters, and at most
  `QUEUED_BATCHES` batches wait for the consumer, so a file of large rows cannot fill memory.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import itertools
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from processing.core.errors import JobInputError

BATCH_ROWS = 500
BATCH_CHARS = 1 << 20
QUEUED_BATCHES = 4
CHUNKS_AHEAD = 4
HARD_LIMIT_FACTOR = 8
# Cells of a row over the size limit are cut to at most this many characters (and fewer for
# very wide rows) in its error record, so the error stays small wherever it is stored.
CUT_CHARS = 200
CUT_MARK = "…"
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
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def binary_kind(head: bytes, *, partial: bool = True) -> str | None:
    for signature, kind in _SIGNATURES.items():
        # A short head (tiny file) that matches as far as it goes counts too, if `partial`.
        if head and (head.startswith(signature) or (partial and signature.startswith(head))):
            return kind
    return None


def hard_limit(max_row_bytes: int) -> int:
    """Characters of one row (or line) beyond which the job fails instead of the row."""
    return HARD_LIMIT_FACTOR * max_row_bytes


def _utf16_without_bom(sample: bytes) -> str | None:
    """'little-endian' or 'big-endian' if `sample` looks like UTF-16 text with no byte-order mark."""
    n = len(sample) // 2 * 2
    if n < 4:
        return None
    even, odd = sample[0:n:2], sample[1:n:2]
    if not odd.strip(b"\x00") and b"\x00" not in even:
        return "little-endian"
    if not even.strip(b"\x00") and b"\x00" not in odd:
        return "big-endian"
    return None


def _is_wide(encoding: str) -> bool:
    """UTF-16 and UTF-32 have NUL bytes in ordinary text; other encodings do not."""
    return len(codecs.lookup(encoding).encode("\n")[0]) > 1


def _display(encoding: str) -> str:
    return {"utf-8": "UTF-8"}.get(encoding, encoding)


@dataclass(frozen=True)
class ParsedRow:
    index: int  # 0-based data row (the header is not a row)
    line: int  # 1-based physical line where the row ends, for error messages
    cells: list[str]
    first_line: int = 0  # 1-based physical line where the row starts (0: unknown, take `line`)
    # Set only for a row over `max_row_bytes`: each cell's UTF-8 size; `cells` are then cut short.
    sizes: tuple[int, ...] = ()

    @property
    def lines(self) -> str:
        """`line 7`, or `lines 7-9` for a row with line breaks inside quotes."""
        start = self.first_line or self.line
        return f"line {self.line}" if start == self.line else f"lines {start}-{self.line}"


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


def _utf8_size(cells: Sequence[str]) -> int:
    return sum(len(c.encode("utf-8", "surrogatepass")) for c in cells)


def _cut(cells: Sequence[str], max_row_bytes: int) -> list[str]:
    keep = min(CUT_CHARS, max_row_bytes // (8 * max(1, len(cells))))
    return [c if len(c) <= keep else c[:keep] + CUT_MARK for c in cells]


class _Lines:
    """Decode byte chunks incrementally and yield lines with their endings (CRLF, LF or CR)."""

    def __init__(self, chunks: queue.Queue, name: str, encoding: str, max_row_bytes: int) -> None:
        self._chunks = chunks
        self._name = name
        self._setting = encoding  # the pipeline's encoding; empty: UTF-8 unless a byte-order mark says otherwise
        self._max_row_bytes = max_row_bytes
        self._max_row = hard_limit(max_row_bytes)
        self.encoding = ""
        self.bom = False  # the file starts with a byte-order mark (which chose `encoding`)
        self.offset = 0  # bytes consumed so far, to name the first bad byte
        self.line = 0  # lines yielded so far
        # The parser resets these after each row: a row (or a line) over `_max_row` characters stops the file.
        self.row_start = 1
        self.row_chars = 0
        self._head = b""
        self._held = b""
        self._wide = False
        self._decoder: codecs.IncrementalDecoder | None = None

    def _binary(self, kind: str, where: int) -> JobInputError:
        return JobInputError(
            f"{self._name} is not a text CSV file: it looks like {kind}",
            where=f"byte {where}",
            fix="upload a CSV file; a spreadsheet must be saved as CSV first",
        )

    def _raw(self) -> Iterator[bytes]:
        while True:
            data = self._chunks.get()
            if data is _SENTINEL:
                return
            if isinstance(data, _Failure):
                raise data.error
            yield data

    def _begin(self, raw: Iterator[bytes]) -> bytes:
        """Read the first bytes, choose the codec (a byte-order mark wins), return the bytes after the mark."""
        head = b""
        for data in raw:
            head += data
            if len(head) >= 4:
                break
        self._head = head[:8]
        kind = binary_kind(head[:8], partial=False)
        if kind:
            raise self._binary(kind, 0)
        encoding = self._setting or "utf-8"
        for bom, codec in _BOMS:
            if head.startswith(bom):
                encoding, head = codec, head[len(bom) :]
                self.offset = len(bom)
                self.bom = True
                break
        self.encoding = encoding
        self._wide = _is_wide(encoding)
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        return head

    def _decode(self, data: bytes, final: bool) -> str:
        assert self._decoder is not None
        self._held = self._decoder.getstate()[0]
        try:
            return self._decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            kind = binary_kind(self._head)
            if kind:
                raise self._binary(kind, 0) from None
            # exc.start counts from the bytes the decoder still held back from the last chunk.
            where = self.offset - len(self._held) + exc.start
            bad = exc.object[exc.start : exc.end]
            if self._setting and self.encoding == self._setting:
                fix = f"the pipeline says encoding = {self._setting!r}: save the file in it, or correct the setting"
            else:
                fix = (
                    "save the file as UTF-8 (Excel: 'CSV UTF-8'), or name its encoding in the pipeline (encoding = ...)"
                )
            raise JobInputError(
                f"{self._name} is not valid {_display(self.encoding)}: bad byte sequence {bad.hex(' ')} "
                f"at byte offset {where}",
                where=f"byte {where}",
                fix=fix,
            ) from None

    def _check_nul(self, data: bytes, first: bool) -> None:
        if self._wide or b"\x00" not in data:
            return
        # NUL never occurs in a text file in a one-byte encoding or UTF-8; it is the mark of a binary file.
        nul = self.offset + data.index(b"\x00")
        order = _utf16_without_bom(data[:64]) if first else None
        if order:
            codec = "utf-16-le" if order == "little-endian" else "utf-16-be"
            raise JobInputError(
                f"{self._name} looks like UTF-16 ({order}) text without a byte-order mark",
                where="byte 0",
                fix=f'save the file as UTF-8, or set encoding = "{codec}" in the pipeline',
            )
        kind = binary_kind(self._head + data[:8]) or f"a binary file (a NUL byte at offset {nul})"
        raise self._binary(kind, nul)

    def too_long(self, line: int) -> JobInputError:
        start = min(self.row_start, line)
        what = (
            f"line {line} is over {self._max_row:,} characters long"
            if start == line
            else f"the row starting on line {start} is over {self._max_row:,} characters by line {line}"
        )
        return JobInputError(
            f"{self._name}: {what} (8 x ROWSMITH_MAX_ROW_BYTES), so the file is not read further. Rows over "
            f"{self._max_row_bytes:,} bytes become row errors; one this long is usually a quote that is never "
            "closed, or not CSV text",
            where=f"line {start}",
            fix=f'look for an unbalanced " on or after line {start} (a quote inside a field is written ""); '
            "or shorten the row, or split it into several rows",
        )

    def __iter__(self) -> Iterator[str]:
        raw = self._raw()
        pending = ""
        first = True
        for data in itertools.chain((self._begin(raw),), raw):
            if not data:
                continue
            self._check_nul(data, first)
            first = False
            text = pending + self._decode(data, final=False)
            self.offset += len(data)
            # `pending` holds no line end (but perhaps a trailing CR), so only the new text is
            # scanned: a long line split over many chunks costs linear, not quadratic, time.
            start, pos = 0, max(0, len(pending) - 1)
            while (match := _EOL.search(text, pos)) is not None:
                # A lone CR at the very end may be the first half of a CRLF split across chunks.
                if match.group() == "\r" and match.end() == len(text):
                    break
                self.line += 1
                self.row_chars += match.end() - start
                if self.row_chars > self._max_row:
                    raise self.too_long(self.line)
                yield text[start : match.end()]
                start = pos = match.end()
            pending = text[start:]
            if self.row_chars + len(pending) > self._max_row:
                raise self.too_long(self.line + 1)
        pending += self._decode(b"", final=True)
        if self.row_chars + len(pending) > self._max_row:
            raise self.too_long(self.line + 1)
        if pending:
            self.line += 1
            yield pending


class CsvStream:
    """Parse CSV from async byte chunks; `header` then `batches()` of `ParsedRow`."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        name: str,
        delimiter: str = "",
        encoding: str = "",
        max_row_bytes: int = 1 << 20,
        skip_rows: int = 0,
    ) -> None:
        self._chunks = chunks
        self._name = name
        self._delimiter = delimiter
        self._encoding = encoding
        self._max_row_bytes = max_row_bytes
        self._hard_limit = hard_limit(max_row_bytes)
        self._skip = skip_rows
        self._in: queue.Queue = queue.Queue(maxsize=CHUNKS_AHEAD)
        self._out: asyncio.Queue = asyncio.Queue(maxsize=QUEUED_BATCHES)
        self._stop = threading.Event()
        self._feeder: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self.header: list[str] = []
        self.delimiter = delimiter
        self.encoding = ""  # the codec used, once the header is read
        self.bom = False  # whether the file started with a byte-order mark, once the header is read

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
            self.header, self.delimiter, self.encoding, self.bom = value
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

    def _csv_error(self, exc: csv.Error, lines: _Lines, line: int, row_start: int) -> JobInputError:
        text = str(exc)
        if "field larger than field limit" in text:  # a backstop: our own row limit stops first
            return lines.too_long(line)
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

    def _row(self, index: int, start: int, end: int, cells: list[str]) -> tuple[ParsedRow, int]:
        """The parsed row (cut short if over the size limit) and the characters it keeps in memory."""
        chars = sum(map(len, cells))
        # A character is 1 to 4 bytes in UTF-8: encode only when the count alone cannot decide.
        if chars > self._max_row_bytes or (chars * 4 > self._max_row_bytes and _utf8_size(cells) > self._max_row_bytes):
            sizes = tuple(_utf8_size((c,)) for c in cells)
            cut = _cut(cells, self._max_row_bytes)
            return ParsedRow(index, end, cut, start, sizes), sum(map(len, cut))
        return ParsedRow(index, end, cells, start), chars

    def _parse(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = None
        last_line = 0  # where the last complete row ended: an error is in the row after it
        lines = _Lines(self._in, self._name, self._encoding, self._max_row_bytes)
        try:
            line_iter = iter(lines)
            first = next(line_iter, None)
            if first is None:
                raise JobInputError(f"{self._name} is empty", where="line 1", fix="upload a CSV with a header row")
            delimiter = self._delimiter or sniff_delimiter(first)
            # Our own row limit (in _Lines) stops first; csv's field limit is only a backstop.
            csv.field_size_limit(max(csv.field_size_limit(), self._hard_limit + 1))
            # strict: an unclosed quote is an error, not a cell that swallows the rest of the file.
            reader = csv.reader(itertools.chain((first,), line_iter), delimiter=delimiter, strict=True)
            header = next(reader)
            last_line = reader.line_num
            lines.row_start, lines.row_chars = last_line + 1, 0
            self._put(loop, ("header", (header, delimiter, lines.encoding, lines.bom)))
            batch: list[ParsedRow] = []
            batch_chars = 0
            index = 0
            for cells in reader:
                start, last_line = last_line + 1, reader.line_num
                lines.row_start, lines.row_chars = last_line + 1, 0
                if not cells:  # a blank line: trailing empty lines are not rows
                    continue
                if index >= self._skip:
                    row, chars = self._row(index, start, last_line, cells)
                    batch.append(row)
                    batch_chars += chars
                    if len(batch) >= BATCH_ROWS or batch_chars >= BATCH_CHARS:
                        self._put(loop, ("rows", batch))
                        batch, batch_chars = [], 0
                index += 1
                if self._stop.is_set():
                    return
            self._put(loop, ("rows", batch))
            self._put(loop, ("end", index))
        except JobInputError as exc:
            self._put(loop, ("error", exc))
        except csv.Error as exc:
            line = reader.line_num if reader else 0
            self._put(loop, ("error", self._csv_error(exc, lines, line, last_line + 1)))
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
