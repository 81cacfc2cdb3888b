"""Names of the columns Rowsmith adds to the results, never clashing with input columns."""

from __future__ import annotations

from collections.abc import Sequence

STATUS = "status"
ERROR = "error"


def added_columns(header: Sequence[str], fields: Sequence[str]) -> list[str]:
    """The answer field(s), then status and error; renamed `rowsmith_<name>` on a clash."""
    taken = set(header)
    names: list[str] = []
    for wanted in [*fields, STATUS, ERROR]:
        name = wanted if wanted not in taken else _free(f"rowsmith_{wanted}", taken)
        taken.add(name)
        names.append(name)
    return names


def unique_header(header: Sequence[str]) -> list[str]:
    """Keys for the JSON lines output: blank names become column_<n>, repeats get _2, _3."""
    seen: set[str] = set()
    out: list[str] = []
    for i, name in enumerate(header, start=1):
        key = _free(name if name.strip() else f"column_{i}", seen)
        seen.add(key)
        out.append(key)
    return out


def _free(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`... whichever is not taken yet."""
    name, n = base, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    return name
