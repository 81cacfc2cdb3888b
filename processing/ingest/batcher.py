"""Grouping parsed rows into row messages: consecutive rows, never across a shard, within the
queue's size limit; rows that cannot be sent (ragged, too large) become error records at once.
"""

from __future__ import annotations

from processing.adapters import claims, shards
from processing.adapters.clients import Clients
from processing.adapters.queue_sender import Enqueuer
from processing.core.csv_reader import ParsedRow
from processing.core.manifest import Manifest
from processing.core.messages import Row, RowsMessage
from processing.core.pipelines import Pipeline
from processing.core.records import Record

# Row-error records held before they are appended early (they are otherwise written at checkpoints).
BAD_CHARS = 4 * 1024 * 1024


class Batcher:
    """Groups consecutive rows into messages, splitting at shard boundaries and size limits."""

    def __init__(self, manifest: Manifest, pipeline: Pipeline, clients: Clients, enqueuer: Enqueuer) -> None:
        self.job = manifest.job
        self.manifest = manifest
        self.per_message = pipeline.rows_per_message
        self.clients = clients
        self.enqueuer = enqueuer
        self.pending: list[Row] = []
        self.bad: dict[int, list[Record]] = {}
        self.bad_chars = 0  # characters held in `bad`
        self.max_row_bytes = clients.settings.max_row_bytes

    def shard(self, index: int) -> int:
        return self.manifest.shard_of(index)

    def _row_error(self, parsed: ParsedRow, width: int) -> tuple[str, str]:
        """(message, code) if the row cannot be sent to the model, else ("", "")."""
        where = f"row {parsed.index + 1} ({parsed.lines})"
        count = ""
        if len(parsed.cells) != width:
            count = f"has {len(parsed.cells)} field(s) but the header has {width}"
        if not parsed.sizes:  # CsvStream sets sizes only for a row over max_row_bytes
            if count:
                return f"{where} {count}; check for an unquoted delimiter or a missing quote", "bad_row"
            return "", ""
        big = max(range(len(parsed.sizes)), key=parsed.sizes.__getitem__)
        header = self.manifest.header
        column = f"column {big + 1}" + (f" ({header[big]!r})" if big < len(header) else "")
        error = (
            f"{where} is {sum(parsed.sizes):,} bytes, over the {self.max_row_bytes:,}-byte limit "
            f"(ROWSMITH_MAX_ROW_BYTES); its largest field is {column} with {parsed.sizes[big]:,} bytes. "
            "It was not sent to the model, and its long cells are cut short (ending in …) in the results"
        )
        if count:
            error += f"; it also {count}"
        if parsed.line - (parsed.first_line or parsed.line) >= 10:
            error += f"; it spans {parsed.lines}: if it should not, look for an unbalanced quote"
        return error, "row_too_large"

    async def add(self, parsed: ParsedRow, width: int) -> None:
        error, code = self._row_error(parsed, width)
        if error:
            rec = Record.failed(parsed.index, parsed.cells, code, error)
            self.bad.setdefault(self.shard(parsed.index), []).append(rec)
            self.bad_chars += sum(map(len, parsed.cells))
            await self.flush()  # keep rows contiguous in messages
            if self.bad_chars >= BAD_CHARS:
                await self._append_bad()  # a file of many bad rows must not fill memory before a checkpoint
            return
        if self.pending and (
            len(self.pending) >= self.per_message
            or self.shard(self.pending[0].index) != self.shard(parsed.index)
            or self.pending[-1].index + 1 != parsed.index
        ):
            await self.flush()
        self.pending.append(Row(parsed.index, tuple(parsed.cells)))

    async def flush(self) -> None:
        rows, self.pending = tuple(self.pending), []
        if rows:
            await self._send(rows)

    async def _send(self, rows: tuple[Row, ...]) -> None:
        message = RowsMessage(self.job, rows)
        if self.manifest.row_key:
            message = message.signed(self.manifest.row_key)
        text = claims.inline(message)
        if text is not None:
            await self.enqueuer.send(text)
        elif len(rows) > 1:
            half = len(rows) // 2
            await self._send(rows[:half])
            await self._send(rows[half:])
        else:
            # Claim check: the row goes to a blob and the message names it.
            await self.enqueuer.send(await claims.store(self.clients.jobs, message))

    async def checkpoint(self) -> None:
        await self.flush()
        await self._append_bad()
        await self.enqueuer.drain()

    async def _append_bad(self) -> None:
        for shard, records in self.bad.items():
            await shards.append(self.clients.jobs, self.job, shard, records, max_blocks=self.manifest.shard_max_blocks)
        self.bad.clear()
        self.bad_chars = 0
