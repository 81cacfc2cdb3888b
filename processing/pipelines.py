"""Pipelines: named configurations shipped with the app as `pipelines/<name>.toml`.

`input/<pipeline>/file.csv` selects one; files at the top of `input/` use `default`.
A pipeline is loaded and validated when a job starts and a snapshot of it is stored in
the job's manifest, so editing a pipeline never changes a job that is already running.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processing.errors import ConfigurationError
from processing.prompts import Template

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
DELIMITERS = {",", ";", "\t", "|"}


@dataclass(frozen=True)
class Output:
    kind: str  # "text": one column with the answer; "json": schema properties become columns
    column: str = "answer"
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> tuple[str, ...]:
        if self.kind == "text":
            return (self.column,)
        return tuple(self.schema.get("properties", {}))


@dataclass(frozen=True)
class Pipeline:
    name: str
    prompt: str
    system_prompt: str = ""
    description: str = ""
    deployment: str = ""  # empty: the app's AZURE_OPENAI_DEPLOYMENT
    temperature: float = 0.0
    max_tokens: int = 500
    rows_per_message: int = 1
    delimiter: str = ""  # empty: sniffed from the file
    output: Output = field(default_factory=lambda: Output("text"))

    @property
    def template(self) -> Template:
        return Template.parse(self.prompt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        return _build(data.get("name", ""), dict(data), source="manifest")


def _expect(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise ConfigurationError(f"pipeline {source}: {message}")


def _check_schema(schema: Any, source: str) -> dict[str, Any]:
    _expect(isinstance(schema, dict), source, "output.schema must be a table (a JSON schema object)")
    _expect(schema.get("type") == "object", source, 'output.schema must have type = "object"')
    props = schema.get("properties")
    _expect(
        isinstance(props, dict) and bool(props),
        source,
        "output.schema.properties must name at least one field",
    )
    for prop, spec in props.items():
        _expect(isinstance(spec, dict), source, f"output.schema.properties.{prop} must be a table")
        kind = spec.get("type")
        _expect(
            kind in _JSON_TYPES or "enum" in spec,
            source,
            f"output.schema.properties.{prop} has unknown type {kind!r} (one of {sorted(_JSON_TYPES)})",
        )
    # Azure OpenAI structured outputs (strict) require every property to be required and
    # no extra properties; we fill those in so pipeline authors cannot get it wrong.
    return {**schema, "required": list(props), "additionalProperties": False}


def _build(name: str, data: dict[str, Any], *, source: str) -> Pipeline:
    known = {f for f in Pipeline.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(data) - known - {"name"})
    _expect(not unknown, source, f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    prompt = data.get("prompt")
    _expect(isinstance(prompt, str) and prompt.strip() != "", source, "prompt is required")
    raw_out = data.get("output") or {"kind": "text"}
    _expect(isinstance(raw_out, dict), source, "output must be a table")
    kind = raw_out.get("kind") or raw_out.get("type") or "text"
    _expect(kind in ("text", "json"), source, f'output.kind must be "text" or "json", not {kind!r}')
    if kind == "text":
        column = str(raw_out.get("column") or "answer")
        output = Output("text", column=column)
    else:
        output = Output("json", column="", schema=_check_schema(raw_out.get("schema"), source))
    try:
        pipeline = Pipeline(
            name=name,
            prompt=prompt,
            system_prompt=str(data.get("system_prompt", "")),
            description=str(data.get("description", "")),
            deployment=str(data.get("deployment", "")),
            temperature=float(data.get("temperature", 0.0)),
            max_tokens=int(data.get("max_tokens", 500)),
            rows_per_message=int(data.get("rows_per_message", 1)),
            delimiter=str(data.get("delimiter", "")),
            output=output,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"pipeline {source}: {exc}") from None
    _expect(0.0 <= pipeline.temperature <= 2.0, source, "temperature must be between 0 and 2")
    _expect(1 <= pipeline.max_tokens <= 100_000, source, "max_tokens must be between 1 and 100000")
    _expect(1 <= pipeline.rows_per_message <= 100, source, "rows_per_message must be between 1 and 100")
    _expect(
        pipeline.delimiter in DELIMITERS | {""},
        source,
        "delimiter must be one of , ; | or a tab (\\t), or empty to sniff",
    )
    Template.parse(pipeline.prompt)  # raises on a malformed template
    return pipeline


def load_pipeline(name: str, directory: Path) -> Pipeline:
    """Load and validate `<directory>/<name>.toml`."""
    if not _NAME.match(name):
        raise ConfigurationError(f"pipeline name {name!r} is not valid: use lower-case letters, digits, '-' and '_'")
    path = directory / f"{name}.toml"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.toml"))
        raise ConfigurationError(
            f"unknown pipeline {name!r}: there is no {path.name} in the app's pipelines folder "
            f"(available: {', '.join(available) or 'none'})"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"pipeline {path.name} is not valid TOML: {exc}") from None
    return _build(name, data, source=path.name)


def route(blob_name: str) -> tuple[str, str]:
    """`<pipeline>/<rest>` → (pipeline, rest); a file at the top of the container uses default."""
    head, sep, rest = blob_name.partition("/")
    if not sep:
        return "default", blob_name
    return head, rest
