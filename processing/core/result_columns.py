"""Names of the columns Rowsmith adds to the results, never clashing with input columns.

The results CSV keeps the input header exactly as written (duplicate and blank names
included: its columns are positional), then adds the answer column(s), `status` and
`error`. An added name never equals an input name, even ignoring case and surrounding
spaces (spreadsheets and databases often compare names that way): on a clash it becomes
`rowsmith_<name>`. The JSON lines output needs unique keys, so there the input columns
are keyed by `unique_header`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

STATUS = "status"
ERROR = "error"


def _loose(name: str) -> str:
    return name.strip().casefold()


def added_columns(header: Sequence[str], fields: Sequence[str]) -> list[str]:
    """The answer field(s), then status and error; renamed `rowsmith_<name>` on a clash."""
    taken = {_loose(h) for h in header}
    names: list[str] = []
    for wanted in [*fields, STATUS, ERROR]:
        name = wanted if _loose(wanted) not in taken else _free(f"rowsmith_{wanted}", taken, _loose)
        taken.add(_loose(name))
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


def _free(base: str, taken: set[str], key: Callable[[str], str] = str) -> str:
    """`base`, or `base_2`, `base_3`... whichever is not taken yet (compared as `key` says)."""
    name, n = base, 2
    while key(name) in taken:
        name = f"{base}_{n}"
        n += 1
    return name
