"""Reading a CSV on this machine exactly as ingest will: the same parser (CsvStream), pipeline
loader and header check, so a file that would fail its job fails here first, with the same
message. `rowsmith submit` runs it before uploading; `rowsmith estimate` adds tokens and cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.adapters.azure_openai import build_messages
from processing.core.csv_reader import CsvStream
from processing.core.layout import DEFAULT_PIPELINE, INPUT_CONTAINER
from processing.core.pipelines import Pipeline, load_pipeline
from processing.core.rate_limiter import estimate_tokens

CHUNK = 1 << 20

# Called with each row's messages; returns its prompt tokens.
PromptCounter = Callable[[list[dict[str, str]]], int]


def input_blob_name(path: Path, pipeline: str | None) -> str:
    """Where `submit` uploads the file in the input container (the folder selects the pipeline)."""
    return path.name if not pipeline or pipeline == DEFAULT_PIPELINE else f"{pipeline}/{path.name}"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            yield chunk


@dataclass
class Checked:
    """What reading the file found: ingest would start the job."""

    pipeline: Pipeline
    input_blob: str
    header: list[str]
    delimiter: str
    encoding: str
    rows: int = 0
    row_errors: int = 0  # ragged or oversized rows: ingest records them as row errors, unsent
    prompt_tokens: int = 0  # of the rows sent, by the counter given
    admission_tokens: int = 0  # what the app's pacer counts per request: its estimate plus max_tokens
    prompts: list[dict[str, Any]] = field(default_factory=list)  # the first rows' messages
    # The first rows sent, for `estimate --sample`: (user message, its prompt tokens by the counter).
    sampled: list[tuple[str, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.rows - self.row_errors


def check_path(path: Path) -> None:
    """What `submit` refuses before anything else: only an existing .csv starts a job."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path} is not a .csv file (only .csv uploads start a job)")


def pipeline_for(pipeline_name: str | None, settings: dict[str, Any]) -> Pipeline:
    """The pipeline as ingest loads it, from this machine's pipelines folder (ROWSMITH_PIPELINES_DIR)."""
    return load_pipeline(pipeline_name or DEFAULT_PIPELINE, settings["pipelines_dir"])


async def check_file(
    path: Path,
    pipeline: Pipeline,
    settings: dict[str, Any],
    *,
    count: PromptCounter | None = None,
    show: int = 0,
    sample: int = 0,
) -> Checked:
    """Parse the whole file as ingest does; raises the JobInputError its job would have failed
    with. `count` renders and counts each row's prompt; `show` keeps the messages of that many
    first rows, `sample` the user messages of that many first rows sent."""
    check_path(path)
    blob = input_blob_name(path, pipeline.name)
    where = f"{INPUT_CONTAINER}/{blob}"  # the name the job's messages use
    stream = CsvStream(
        _file_chunks(path),
        name=where,
        delimiter=pipeline.delimiter,
        encoding=pipeline.encoding,
        max_row_bytes=settings["max_row_bytes"],
    )
    async with stream:
        pipeline.check_header(stream.header, where)
        checked = Checked(pipeline, blob, stream.header, stream.delimiter, stream.encoding)
        width = len(stream.header)
        bound = pipeline.template.bind(stream.header)
        async for batch in stream.batches():
            for row in batch:
                checked.rows += 1
                # Ingest sends neither a row with the wrong number of fields nor one over the size limit.
                if len(row.cells) != width or row.sizes:
                    checked.row_errors += 1
                    continue
                if count is None:
                    continue
                user = bound.render(row.cells)
                messages = build_messages(pipeline, user)
                tokens = count(messages)
                checked.prompt_tokens += tokens
                if len(checked.sampled) < sample:
                    checked.sampled.append((user, tokens))
                checked.admission_tokens += estimate_tokens(messages, pipeline.max_tokens)
                if len(checked.prompts) < show:
                    checked.prompts.append(
                        {"row": row.index + 1, "line": row.first_line or row.line, "messages": messages}
                    )
    return checked
