"""Reading and writing the project's files safely: JSON with clear errors, atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from captioner.errors import CaptionerError


def read_text(path: str | Path, error_type: type[CaptionerError] = CaptionerError) -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file raises `error_type`.

    The message names the file and, for bad UTF-8, the line and column of the first bad byte.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error_type(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error_type(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise error_type(f"{path}: cannot read file ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")  # tolerates a byte-order mark
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise error_type(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line} "
            f"column {column}); save the file as UTF-8"
        ) from None


def read_json(path: str | Path, error_type: type[CaptionerError] = CaptionerError) -> Any:
    """A JSON file's content; any problem raises `error_type` naming the file (and line/column)."""
    text = read_text(path, error_type)
    if not text.strip():
        raise error_type(f"{path}: empty file, expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise error_type(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path in the same folder that replaces `path` only if the block succeeds.

    A failed write (disk full, Ctrl-C, an exception) leaves any previous `path` intact and
    removes the partial file. The temporary name keeps `path`'s suffix (Keras checks it).
    """
    path = Path(path)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    temporary = path.with_name(f".{path.stem}.{tag}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes UTF-8 text to `path` all at once or not at all (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        with temporary.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Writes `data` as JSON to `path` all at once or not at all."""
    # ASCII-only JSON: \u escapes also carry lone surrogates, which UTF-8 cannot store.
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
