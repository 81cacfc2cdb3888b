"""Pipelines: named configurations shipped with the app as `pipelines/<name>.toml`.

`input/<pipeline>/file.csv` selects one; files at the top of `input/` use `default`.
A pipeline is loaded and validated when a job starts and a snapshot of it is stored in
the job's manifest, so editing a pipeline never changes a job that is already running.
"""

from __future__ import annotations

import codecs
import math
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processing.core.errors import ConfigurationError, JobInputError
from processing.core.layout import is_pipeline_name
from processing.core.prompts import Template

_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
DELIMITERS = {",", ";", "\t", "|"}
# Azure OpenAI structured outputs (strict) accept schemas nested at most this deep.
_MAX_SCHEMA_DEPTH = 10
# Values of `reasoning_effort` some reasoning model accepts (each model accepts a subset;
# Azure answers a 400 naming the value otherwise); "" sends none (the model's default).
REASONING_EFFORTS = ("", "none", "minimal", "low", "medium", "high", "xhigh")
# processing/core/model_family.py's configurable families; "" is the app's AZURE_OPENAI_MODEL_FAMILY.
MODEL_FAMILIES = ("", "auto", "reasoning", "standard")
# Completion tokens a reasoning model may spend thinking before it answers, on top of
# max_tokens. Sized so the shipped pipelines answer on a reasoning model at its default effort.
DEFAULT_REASONING_BUDGET = 2000


class PipelineError(ConfigurationError):
    """A pipeline file is wrong: the error report says which file and how to fix it."""

    def __init__(self, message: str, *, where: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.fix = fix


def check_encoding(name: str) -> str:
    """The codec's canonical name (`windows-1252` -> `cp1252`); ValueError if it is not a text encoding."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"encoding {name!r} is not a known encoding") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"encoding {name!r} is not a text encoding")
    return info.name


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
    temperature: float = 0.0  # sent to standard models only; reasoning models accept only their default
    max_tokens: int = 500  # the answer's budget, on both model families
    reasoning_effort: str = ""  # reasoning models only; "" leaves the model's default
    reasoning_budget: int = DEFAULT_REASONING_BUDGET  # reasoning models: added to max_tokens
    model_family: str = ""  # "", auto, reasoning or standard ("": the app's AZURE_OPENAI_MODEL_FAMILY)
    rows_per_message: int = 1
    # This instance's share of the deployment's quota (0: not paced, only 429s slow it down).
    rpm: int = 0
    tpm: int = 0
    # The most a job of this pipeline may spend, in USD at the price table's prices (0: no cap);
    # `rowsmith submit --budget-usd` may set a lower one for one upload.
    budget_usd: float = 0.0
    delimiter: str = ""  # empty: sniffed from the file
    encoding: str = ""  # empty: UTF-8, or UTF-16/32 when the file starts with that byte-order mark
    neutralise_formulas: bool = True  # results CSV: prefix cells a spreadsheet would run with '
    output: Output = field(default_factory=lambda: Output("text"))

    @property
    def template(self) -> Template:
        return Template.parse(self.prompt)

    def check_header(self, header: Sequence[str], name: str) -> None:
        """The file's header must name every column the prompt uses (ingest and `rowsmith estimate`)."""
        if not header or all(not h.strip() for h in header):
            raise JobInputError(
                f"{name} has no header row", where="line 1", fix="put the column names on the first line"
            )
        missing = self.template.missing_columns(header)
        if missing:
            raise JobInputError(
                f"pipeline {self.name!r} uses column(s) {', '.join(map(repr, missing))} that {name} does not "
                f"have; its columns are {', '.join(map(repr, header))}",
                where="header (line 1)",
                fix=f"rename the column(s) in the file, or edit the prompt in pipelines/{self.name}.toml",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        return _build(data.get("name", ""), dict(data), source="manifest")


def _fix(source: str) -> str:
    if source == "manifest":
        return "the job's pipeline snapshot is damaged: upload the file again"
    return f"correct {source} and deploy the app, then upload the file again"


def _expect(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise PipelineError(f"pipeline {source}: {message}", where=source, fix=_fix(source))


def _check_subschema(spec: Any, path: str, source: str, depth: int) -> dict[str, Any]:
    """Check one property's schema, recursively; nested objects are made strict like the root."""
    _expect(isinstance(spec, dict), source, f"{path} must be a table")
    _expect(depth <= _MAX_SCHEMA_DEPTH, source, f"{path} is nested deeper than {_MAX_SCHEMA_DEPTH} levels")
    kind = spec.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "enum" in spec:
        enum = spec["enum"]
        _expect(isinstance(enum, list) and bool(enum), source, f"{path}.enum must be a non-empty list")
        if kind is None:
            return spec
    _expect(
        bool(kinds) and all(k in _JSON_TYPES for k in kinds),
        source,
        f"{path} has unknown type {kind!r} (one of {sorted(_JSON_TYPES)})",
    )
    out = dict(spec)
    if "object" in kinds:
        props = spec.get("properties")
        _expect(
            isinstance(props, dict) and bool(props),
            source,
            f"{path} is an object: give it properties (structured outputs need every field named)",
        )
        out["properties"] = {
            name: _check_subschema(sub, f"{path}.properties.{name}", source, depth + 1) for name, sub in props.items()
        }
        out["required"] = list(props)
        out["additionalProperties"] = False
    if "array" in kinds:
        _expect("items" in spec, source, f"{path} is an array: give it an items table (the type of its elements)")
        out["items"] = _check_subschema(spec["items"], f"{path}.items", source, depth + 1)
    return out


def _check_schema(schema: Any, source: str) -> dict[str, Any]:
    _expect(isinstance(schema, dict), source, "output.schema must be a table (a JSON schema object)")
    _expect(schema.get("type") == "object", source, 'output.schema must have type = "object"')
    props = schema.get("properties")
    _expect(
        isinstance(props, dict) and bool(props),
        source,
        "output.schema.properties must name at least one field",
    )
    checked = {
        prop: _check_subschema(spec, f"output.schema.properties.{prop}", source, 1) for prop, spec in props.items()
    }
    # Azure OpenAI structured outputs (strict) require every property to be required and
    # no extra properties, at every level; we fill those in so pipeline authors cannot get it wrong.
    return {**schema, "properties": checked, "required": list(props), "additionalProperties": False}


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
            reasoning_effort=str(data.get("reasoning_effort", "")),
            reasoning_budget=int(data.get("reasoning_budget", DEFAULT_REASONING_BUDGET)),
            model_family=str(data.get("model_family", "")),
            rows_per_message=int(data.get("rows_per_message", 1)),
            rpm=int(data.get("rpm", 0)),
            tpm=int(data.get("tpm", 0)),
            budget_usd=float(data.get("budget_usd", 0.0)),
            delimiter=str(data.get("delimiter", "")),
            encoding=check_encoding(str(data["encoding"])) if data.get("encoding") else "",
            neutralise_formulas=data.get("neutralise_formulas", True),
            output=output,
        )
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"pipeline {source}: {exc}", where=source, fix=_fix(source)) from None
    _expect(0.0 <= pipeline.temperature <= 2.0, source, "temperature must be between 0 and 2")
    _expect(1 <= pipeline.max_tokens <= 100_000, source, "max_tokens must be between 1 and 100000")
    _expect(
        pipeline.reasoning_effort in REASONING_EFFORTS,
        source,
        f"reasoning_effort must be one of {', '.join(e for e in REASONING_EFFORTS if e)} "
        "(or empty: the model's default)",
    )
    _expect(
        0 <= pipeline.reasoning_budget <= 100_000,
        source,
        "reasoning_budget must be between 0 and 100000 (tokens a reasoning model may think, on top of max_tokens)",
    )
    _expect(
        pipeline.model_family in MODEL_FAMILIES,
        source,
        'model_family must be "auto", "reasoning" or "standard" (or empty: the app\'s AZURE_OPENAI_MODEL_FAMILY)',
    )
    _expect(1 <= pipeline.rows_per_message <= 100, source, "rows_per_message must be between 1 and 100")
    _expect(pipeline.rpm >= 0 and pipeline.tpm >= 0, source, "rpm and tpm must not be negative (0: not paced)")
    _expect(
        math.isfinite(pipeline.budget_usd) and pipeline.budget_usd >= 0,
        source,
        "budget_usd must be a number of dollars, 0 or more (0: no cap)",
    )
    _expect(
        pipeline.delimiter in DELIMITERS | {""},
        source,
        "delimiter must be one of , ; | or a tab (\\t), or empty to sniff",
    )
    _expect(
        isinstance(pipeline.neutralise_formulas, bool),
        source,
        "neutralise_formulas must be true or false (without quotes)",
    )
    try:
        Template.parse(pipeline.prompt)  # raises on a malformed template
    except ConfigurationError as exc:
        raise PipelineError(f"pipeline {source}: {exc}", where=source, fix=_fix(source)) from None
    return pipeline


def load_pipeline(name: str, directory: Path) -> Pipeline:
    """Load and validate `<directory>/<name>.toml`."""
    available = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
    where = f"the input folder input/{name}/ (its name selects the pipeline)"
    if name == "default":
        where = "a file at the top of input/ (it uses the default pipeline)"
    if not is_pipeline_name(name):  # fullmatch: `triage\n` is not `triage`
        raise PipelineError(
            f"pipeline name {name!r} is not valid: use lower-case letters, digits, '-' and '_'",
            where=where,
            fix=f"upload into input/<pipeline>/ with one of the app's pipelines: {available}",
        )
    path = directory / f"{name}.toml"
    source = f"{directory.name}/{path.name}"
    if not path.is_file():
        raise PipelineError(
            f"unknown pipeline {name!r}: there is no {path.name} in the app's pipelines folder "
            f"(available: {available})",
            where=where,
            fix=f"upload into input/<pipeline>/ with one of: {available}; or add {source} to the app and deploy it",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"pipeline {source} is not valid TOML: {exc}", where=source, fix=_fix(source)) from None
    return _build(name, data, source=source)
