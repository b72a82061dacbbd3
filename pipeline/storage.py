"""Paths that are local or remote: a local path, or any URI pyarrow's filesystem layer opens
(s3://, gs://, abfss://, hdfs://, file://), the same layer Ray Data reads through and Ray
Train's `storage_path` accepts.

On a multi-node cluster every process must reach the same files, wherever Ray placed it:
give a URI on remote storage, or a local path on a filesystem mounted at the same place on
every node (NFS, EFS, ...). Credentials and endpoints come from the environment as pyarrow
reads them (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL), so every Ray worker started with that environment sees the same store.

A `Location` is a (filesystem, path) pair with the few operations the pipeline needs; it
is plain data, so it can be rebuilt from its `uri` in any process.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.errors import UserError

CACHE_DIR = Path(os.environ.get("NMT_CACHE_DIR", Path.home() / ".cache" / "rnnsearch-ray"))


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


@dataclass(frozen=True)
class Location:
    """A file or directory on some filesystem. `prefix` + `path` + `query` is its URI."""

    filesystem: pafs.FileSystem
    path: str
    prefix: str = ""  # "s3://", "hdfs://host:port", "file://"; "" for a plain local path
    query: str = ""  # e.g. "?endpoint_override=..." kept so that other processes get it too

    @classmethod
    def of(cls, path: str | Path | Location) -> Location:
        if isinstance(path, Location):
            return path
        text = str(path)
        if not is_uri(text):
            return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
        try:
            filesystem, fs_path = pafs.FileSystem.from_uri(text)
        except (OSError, ValueError) as error:  # ArrowInvalid is a ValueError
            raise UserError(f"cannot open {text}: {error}") from None
        base, _, query = text.partition("?")
        fs_path = fs_path.rstrip("/") or fs_path
        prefix = base.rstrip("/")[: -len(fs_path)] if base.rstrip("/").endswith(fs_path) else ""
        return cls(filesystem, fs_path, prefix, f"?{query}" if query else "")

    @property
    def uri(self) -> str:
        """What to show users and to hand to other processes (Location.of rebuilds it)."""
        return f"{self.prefix}{self.path}{self.query}"

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return self._with_path(self.path.rstrip("/").rsplit("/", 1)[0] or "/")

    def __truediv__(self, name: str) -> Location:
        return self._with_path(f"{self.path.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return self.uri

    def _with_path(self, path: str) -> Location:
        return Location(self.filesystem, path, self.prefix, self.query)

    # ------------------------------------------------------------ queries

    def _type(self) -> pafs.FileType:
        return self.filesystem.get_file_info(self.path).type

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def children(self) -> list[Location]:
        """Files and directories directly inside, sorted by name; [] if there is none."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        return sorted((self._with_path(i.path) for i in infos), key=lambda loc: loc.path)

    def files(self, recursive: bool = True) -> list[Location]:
        """The files below (not directories), sorted by path; [] if there is none."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        infos = self.filesystem.get_file_info(selector)
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File)
        return [self._with_path(path) for path in paths]

    def total_bytes(self) -> int:
        """The size of a file, or of every file below a directory."""
        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            return info.size
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        return sum(i.size or 0 for i in self.filesystem.get_file_info(selector))

    # ------------------------------------------------------------ contents

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        self.parent.mkdir()
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    # ------------------------------------------------------------ changes

    def mkdir(self) -> None:
        self.filesystem.create_dir(self.path, recursive=True)

    def delete(self) -> None:
        """Remove a file or a whole directory; nothing if it does not exist."""
        kind = self._type()
        if kind == pafs.FileType.Directory:
            self.filesystem.delete_dir(self.path)
        elif kind == pafs.FileType.File:
            self.filesystem.delete_file(self.path)

    def move_to(self, target: Location) -> None:
        """A rename on local disks (atomic); copy then delete on object stores, where a
        single object's upload is atomic, so `target` is never seen half-written."""
        self.filesystem.move(self.path, target.path)

    def upload(self, local: str | Path) -> None:
        """Copy a local file or directory tree to this location."""
        local = Path(local)
        if local.is_dir():
            self.mkdir()
        pafs.copy_files(str(local), self.path, pafs.LocalFileSystem(), self.filesystem)

    def download(self, local: str | Path) -> Path:
        """Copy this file or directory tree to `local`; returns `local`."""
        local = Path(local)
        # copy_files makes the subdirectories it meets, not the top one
        (local if self.is_dir() else local.parent).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path, str(local), self.filesystem, pafs.LocalFileSystem())
        return local


def glob_files(pattern: str) -> list[str]:
    """Files a glob names (or every `*.parquet` of a directory), as sorted paths or URIs.

    Local globs follow `glob.glob` (with `**`). In a URI, `?` starts the query, so the
    wildcards are `*` and `[...]`: the directory before the first one is listed recursively
    and matched with fnmatch (where `*` also crosses `/`)."""
    if not is_uri(pattern):
        path = Path(pattern).expanduser()
        if path.is_dir():
            path = path / "*.parquet"
        hits = (Path(p) for p in glob.glob(str(path), recursive=True))
        return sorted(str(p.resolve()) for p in hits if p.is_file())
    base, _, query = pattern.partition("?")
    query = f"?{query}" if query else ""
    cut = min((base.find(c) for c in "*[" if c in base), default=-1)
    if cut < 0:
        location = Location.of(pattern)
        if location.is_dir():
            return [f.uri for f in location.files(recursive=False) if f.name.endswith(".parquet")]
        return [location.uri] if location.is_file() else []
    root_uri = base[:cut].rsplit("/", 1)[0]
    root = Location.of(root_uri + query)
    wanted = root.path.rstrip("/") + base[len(root_uri.rstrip("/")) :]
    return [f.uri for f in root.files() if fnmatch.fnmatchcase(f.path, wanted)]


def local_copy(location: Location, kind: str) -> Path:
    """A local copy of a remote directory (a model dir, a dataset's small files), cached per
    node under CACHE_DIR and keyed by the remote files' names, sizes and times, so a changed
    remote is fetched again. The copy appears by rename, so processes racing for it are safe."""
    if location.is_local:
        return Path(location.path)
    infos = location.filesystem.get_file_info(
        pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    )
    if not infos:
        raise UserError(f"{location.uri} does not exist or is empty")
    key = hashlib.sha1(location.uri.encode())
    for info in sorted(infos, key=lambda i: i.path):
        key.update(f"{info.path}:{info.size}:{info.mtime_ns}".encode())
    target = CACHE_DIR / kind / key.hexdigest()[:16]
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        location.download(staging / "copy")
        # another process may have got there first: its copy is the same, keep it
        with contextlib.suppress(OSError):
            (staging / "copy").rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return target
