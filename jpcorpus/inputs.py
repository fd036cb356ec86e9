"""Input paths: local files, globs and folders, or fsspec URLs (``s3://``, ``gs://``, ``hf://``...).

Local paths go through :func:`jpcorpus.readers.expand_inputs` unchanged; a folder, local or
remote, contributes only its data files (:mod:`jpcorpus.input_folders`). A path
with ``://`` is opened through fsspec, which then has to be installed with the
package for that filesystem (``s3fs``, ``gcsfs``, ...); jpcorpus itself needs
neither. The engines pass paths around as strings, because ``Path`` would fold
the ``//`` of a URL.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO, Iterable

from jpcorpus.input_folders import data_files
from jpcorpus.readers import InputError, expand_inputs


def is_url(path) -> bool:
    return "://" in str(path)


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"{url}: reading URLs needs fsspec (pip install fsspec and the package "
                         "for the filesystem, e.g. s3fs)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{url}: {exc}") from None


def expand(patterns: Iterable[str]) -> list[str]:
    """Every input file, in order: local patterns as ``expand_inputs`` does, URLs through fsspec."""
    out: list[str] = []
    local: list[str] = []

    def flush() -> None:
        if local:
            out.extend(str(p) for p in expand_inputs(local))
            local.clear()

    for pattern in patterns:
        if not is_url(pattern):
            local.append(pattern)
            continue
        flush()
        fs, path = _filesystem(pattern)
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(fs.find(path))
            if found:
                inside = path.rstrip("/") + "/"
                found = data_files(pattern, [(p.removeprefix(inside) if p.startswith(inside) else p.rsplit("/", 1)[-1], p)
                                             for p in found])
        else:
            found = [path] if fs.isfile(path) else []
        if not found:
            raise InputError(pattern, "no_input", "no such file (or the pattern matches no file)")
        protocol = pattern.split("://", 1)[0]
        out.extend(f"{protocol}://{p.split('://', 1)[-1]}" for p in found)
    flush()
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def open_raw(path: str) -> BinaryIO:
    """The file's bytes as stored (compressed or not)."""
    if is_url(path):
        fs, inner = _filesystem(path)
        return fs.open(inner, "rb")
    return open(path, "rb")


def open_decompressed(path: str) -> BinaryIO:
    """Open for reading bytes, decompressing ``.gz`` and ``.zst`` (as ``readers.open_binary``)."""
    from jpcorpus.readers import _ZstdReader, open_binary

    if not is_url(path):
        return open_binary(Path(path))
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=open_raw(path), mode="rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(open_raw(path)), buffer_size=1 << 20)
    return open_raw(path)


def size_of(path: str) -> int:
    if is_url(path):
        fs, inner = _filesystem(path)
        return int(fs.size(inner))
    return os.stat(path).st_size


def sha256_of(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open_raw(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def absolute(path: str) -> str:
    """Where a worker finds ``path``: its cwd need not be the driver's (messages keep the path as given)."""
    return path if is_url(path) else os.path.abspath(path)


def describe(path_and_location: tuple[str, str]) -> dict:
    """``{path, bytes, sha256}`` of one input, as the binarize sidecar lists it (a task of its own)."""
    path, location = path_and_location
    return {"path": path, "bytes": size_of(location), "sha256": sha256_of(location)}


def identity(path: str) -> str:
    """What a completion marker remembers of a file read by the workers: its size and modification time."""
    if is_url(path):
        fs, inner = _filesystem(path)
        info = fs.info(inner)
        return f"{path}|{info.get('size')}|{info.get('mtime') or info.get('LastModified') or info.get('ETag')}"
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"
