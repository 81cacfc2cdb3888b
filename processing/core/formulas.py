"""Neutralising spreadsheet formulas in the results CSV (CSV or formula injection).

A spreadsheet that opens a CSV runs a cell starting with `=`, `+`, `-` or `@` as a
formula, which can fetch URLs or, in old Excel, start programs. Input cells and the
model's answers are both untrusted, so every cell of the results CSV that starts with
one of OWASP's and ASVS's trigger characters (`=`, `+`, `-`, `@`, tab, carriage return,
NUL) gets a leading single quote, which spreadsheets read as "this is text".

One exception: a plain number such as `-3`, `+7`, `-0.5` or `-1e6` is left as written.
It cannot call a function or reference anything, and quoting it would turn numeric
columns into text. Anything else (`+44 20 7946 0958`, `-3 apples`, `=1+1`) is prefixed.

Only the results CSV is neutralised; the `.results.jsonl` twin keeps exact values.
A pipeline turns this off with `neutralise_formulas = false`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\x00")
PREFIX = "'"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def neutralise(cell: str) -> str:
    """`cell`, with a leading `'` if a spreadsheet would run it as a formula."""
    if cell.startswith(TRIGGERS) and not _NUMBER.fullmatch(cell):
        return PREFIX + cell
    return cell


def safe_row(row: Sequence[str], pipeline: Mapping[str, Any]) -> list[str]:
    """A results-CSV row as the pipeline snapshot asks: neutralised unless it says otherwise."""
    if not pipeline.get("neutralise_formulas", True):
        return list(row)
    return [neutralise(cell) for cell in row]
