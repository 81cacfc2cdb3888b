"""Files of the local stack that only their owner may read: the state dir 0700, its files 0600.

The state dir (`.rowsmith/` by default) holds the stack's identity header (stack.json), which
gets a token for the app's identity from the identity endpoint and drives the emulators'
control APIs; the logs; Azurite's TLS key and data; and `local.settings.json` (Azurite's
published development key, in "key" mode). On a shared machine anyone else could otherwise
read them, so the modes are set when each file is created (never a window with the umask's
mode) and corrected on files a previous version left readable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
# For children (Azurite, the emulators, the runner): whatever they create is private too.
CHILD_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a directory only its owner may enter."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask, and an old dir keeps its own
    return path


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600, atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), FILE_MODE)  # a leftover .tmp keeps its old mode through O_CREAT
        f.write(text)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def open_private_log(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for appending, created 0600 (an existing log is made 0600 too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "ab") as log:
        yield log
