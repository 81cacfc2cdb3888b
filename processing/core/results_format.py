"""How the results CSV is written: the input's delimiter and byte-order mark, unless settings say otherwise.

A file that opened in Excel must open again: Excel in a locale whose list separator is `;`
splits only on `;`, and reads a CSV without a byte-order mark in the machine's ANSI code page,
so UTF-8 text comes out as mojibake. The results are always UTF-8; they start with a UTF-8
byte-order mark when the input had a byte-order mark (of any Unicode encoding) or was not UTF-8
(a pipeline's `encoding = "cp1252"`, say: without the mark, Excel would read the UTF-8 results
in the code page and garble every accented letter the input had).

Settings (processing/core/settings.py): `ROWSMITH_RESULTS_DELIMITER` is `input` (the job's
delimiter, as detected or as the pipeline names it), `,`, `;`, `tab` or `pipe`;
`ROWSMITH_RESULTS_BOM` is `input` (the rule above), `true` or `false`.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

INPUT = "input"
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "pipe": "|"}
DELIMITER_CHOICES = (INPUT, *DELIMITERS)
BOM_CHOICES = (INPUT, "true", "false")
UTF8_BOM = codecs.BOM_UTF8


def is_utf8(encoding: str) -> bool:
    """Whether `encoding` (a codec name, "" for the default) is UTF-8 (spelt any way Python knows)."""
    return not encoding or codecs.lookup(encoding).name == "utf-8"


@dataclass(frozen=True)
class ResultsFormat:
    delimiter: str
    bom: bool

    @property
    def prefix(self) -> bytes:
        """The bytes the file starts with, before the header."""
        return UTF8_BOM if self.bom else b""


def results_format(
    *,
    input_delimiter: str,
    input_bom: bool,
    input_encoding: str,
    delimiter: str = INPUT,
    bom: str = INPUT,
) -> ResultsFormat:
    """The results CSV's delimiter and mark for an input read with these, under these settings."""
    if delimiter == INPUT:
        chosen = input_delimiter or ","
    elif delimiter in DELIMITERS:
        chosen = DELIMITERS[delimiter]
    else:
        raise ValueError(f"results delimiter {delimiter!r} is not one of {', '.join(DELIMITER_CHOICES)}")
    if bom == INPUT:
        mark = input_bom or not is_utf8(input_encoding)
    elif bom in ("true", "false"):
        mark = bom == "true"
    else:
        raise ValueError(f"results byte-order mark {bom!r} is not one of {', '.join(BOM_CHOICES)}")
    return ResultsFormat(chosen, mark)
