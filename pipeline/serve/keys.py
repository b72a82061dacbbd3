"""API keys: the file of keys `nmt serve --api-keys-file` reads, and looking a given key up.

The file holds one key a line, optionally followed by that key's rate limit in requests per
minute (`KEY` or `KEY 120`); blank lines and lines starting with `#` are skipped. Keys are
kept as SHA-256 digests only, so neither the Serve config nor a replica's arguments hold a
key in the clear, and a lookup hashes what the client sent before comparing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its digest and its own rate limit (None: the server's)."""

    digest: str
    rate_limit: float | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys_file(path: str | Path) -> tuple[ApiKey, ...]:
    """The keys of `path`; a `UserError` naming the line for anything else."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise UserError(f"--api-keys-file {path} cannot be read: {error.strerror}") from None
    keys = tuple(_parse_line(line, f"{path}:{n}") for n, line in enumerate(lines, 1))
    keys = tuple(key for key in keys if key is not None)
    if not keys:
        raise UserError(f"--api-keys-file {path} holds no key")
    return keys


def _parse_line(line: str, where: str) -> ApiKey | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if len(fields) > 2:
        raise UserError(f"{where}: expected 'KEY' or 'KEY REQUESTS_PER_MINUTE'")
    limit = None
    if len(fields) == 2:
        try:
            limit = float(fields[1])
        except ValueError:
            limit = -1.0
        if limit <= 0:
            raise UserError(f"{where}: the rate limit must be a positive number of requests")
    return ApiKey(digest(fields[0]), limit)


class KeyRing:
    """The accepted keys, by digest. Empty: the server is open."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys: Mapping[str, ApiKey] = {key.digest: key for key in keys}

    def __bool__(self) -> bool:
        return bool(self.keys)

    def find(self, *given: str | None) -> ApiKey | None:
        """The first given key that is accepted."""
        for key in given:
            found = self.keys.get(digest(key)) if key else None
            if found is not None:
                return found
        return None
