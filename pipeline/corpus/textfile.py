"""Reading and writing one-sentence-per-line text files, gzipped or not, or stdin/stdout."""

from __future__ import annotations

import contextlib
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pipeline.errors import UserError


@contextlib.contextmanager
def open_text(path: str | Path | None, mode: str = "r") -> Iterator[TextIO]:
    """UTF-8 text: `path` (`.gz` is decompressed/compressed), or stdin/stdout when None or "-".

    Missing or unreadable files become a UserError naming the file.
    """
    if path is None or str(path) == "-":
        stream = sys.stdin if mode == "r" else sys.stdout
        if hasattr(stream, "reconfigure"):  # UTF-8 whatever the locale; test captures lack it
            stream.reconfigure(encoding="utf-8", newline="\n")
        yield stream
        return
    path = Path(path)
    if mode == "w":
        path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        # newline="\n": only \n ends a line, so a stray \r inside a sentence cannot shift
        # the line alignment between a source file and its reference.
        handle = opener(path, mode + "t", encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (IsADirectoryError, PermissionError) as error:
        raise UserError(f"cannot open {path}: {error.strerror}") from None
    with handle:
        yield handle


def iter_lines(path: str | Path | None) -> Iterator[str]:
    """The lines of a text file without their line endings, read lazily (a file that is not
    UTF-8 text, or a corrupt .gz, is a UserError)."""
    with open_text(path) as handle:
        try:
            for line in handle:
                yield line.rstrip("\r\n")
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
            raise UserError(f"cannot read {path or 'stdin'} as UTF-8 text: {error}") from None


def read_lines(path: str | Path | None) -> list[str]:
    return list(iter_lines(path))
