"""Secrets kept in files: one reader, one rule, for every one of them.

``[[keys.master]] secret_file``, ``heartbeat_key_file``, ``connection_file``,
``password_file``, ``healthmgr keys derive --master-key-file`` and the fleet
simulator's master key file. The secret is the file's UTF-8 text without one
trailing line ending, ``\\n`` or ``\\r\\n`` (editors and ``echo`` add one);
everything else, other whitespace included, is part of the secret
(schema/heartbeat.md, section 4). An empty, unreadable or non-UTF-8 file is an
error that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message names the file and why."""


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret held in ``path`` (see the module's rule)."""
    path = Path(path)
    try:
        # Bytes, then decode: read_text would translate every \r and \r\n inside.
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretFileError(f"cannot read {path}: {reason}") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise SecretFileError(f"{path} is empty")
    return text
