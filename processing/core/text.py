"""Making text from anywhere encodable: a lone surrogate becomes U+FFFD.

JSON allows `"\\ud800"`, so a queue message, a model answer or a shard line read back can
carry a lone surrogate into a Python str; UTF-8 cannot encode one, and one such character
would make every later write of the job raise `UnicodeEncodeError`. Each point of entry
(message fields, cells, answers, errors, names) passes its text through `clean_text`.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a valid surrogate pair is joined)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # Through UTF-16 with surrogatepass: a high+low pair becomes its character again,
        # and what is left unpaired fails to decode and is replaced.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_json(value: Any) -> Any:
    """A JSON value (str, list, dict, number, bool, None) with all its text cleaned, keys too."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    return value
