"""Prompt templates with `{column}` placeholders.

We do not use `str.format`: it would allow `{col.attr}` and `{col[0]}`, which reach
Python objects, and it is easy to expand a cell's own braces by accident. A template is
parsed once into literal text and column names; rendering only concatenates cell values,
so braces inside a cell are never expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from processing.core.errors import ConfigurationError

# `{{` and `}}` are literal braces; `{name}` is a column. A column name may contain
# anything but braces, so headers such as "Order ID" or "prix (€)" work.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | int, ...]  # literal text, or an index into `columns`
    columns: tuple[str, ...]

    @classmethod
    def parse(cls, source: str, *, what: str = "prompt") -> Template:
        parts: list[str | int] = []
        columns: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(source):
            parts.append(source[pos : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif token in ("{", "}"):
                line = source.count("\n", 0, match.start()) + 1
                raise ConfigurationError(
                    f"{what} template has an unmatched {token!r} on line {line}; write {token * 2} for a literal brace"
                )
            else:
                name = match.group(1).strip()
                if not name:
                    raise ConfigurationError(f"{what} template has an empty placeholder {{}}")
                if name not in columns:
                    columns.append(name)
                parts.append(columns.index(name))
            pos = match.end()
        parts.append(source[pos:])
        return cls(source, tuple(p for p in parts if p != ""), tuple(columns))

    def missing_columns(self, header: Sequence[str]) -> list[str]:
        present = set(header)
        return [c for c in self.columns if c not in present]

    def bind(self, header: Sequence[str]) -> BoundTemplate:
        """Resolve column names to cell positions once per job, not once per row."""
        missing = self.missing_columns(header)
        if missing:
            raise ConfigurationError(f"template uses columns missing from the file: {', '.join(missing)}")
        first = {}
        for i, name in enumerate(header):
            first.setdefault(name, i)
        positions = tuple(first[c] for c in self.columns)
        return BoundTemplate(tuple(p if isinstance(p, str) else positions[p] for p in self.parts))


@dataclass(frozen=True)
class BoundTemplate:
    # literal text, or the cell position in a row
    parts: tuple[str | int, ...]

    def render(self, cells: Sequence[str]) -> str:
        return "".join(p if isinstance(p, str) else cells[p] for p in self.parts)
