"""Pack an existing ``binarize`` shard without tokenizing again.

``binarize --pack`` packs while it tokenizes. A shard already binarized (one
sequence per document) can be packed afterwards with :func:`repack_shard`: the
same tokens, the same documents, the same split, so a packed and an unpacked
run train on exactly the same data (``bench/packing_gpu.py`` does that on a GPU
machine that has the shards but not the raw text). The new sidecar is the old
one with the counts, hashes and the packing record of ``binarize --pack``, and
``packed_from`` naming the source.
"""

from __future__ import annotations

import os
import time

import numpy as np

from jpcorpus.indexed_dataset import IndexedDataset, bin_path, idx_path
from jpcorpus.packing import DEFAULT_BUFFER, PackingWriter, PackStats
from jpcorpus.sidecar import file_sha256, read_sidecar, write_sidecar
from jpcorpus.split_writer import SplitWriter

_CHUNK = 1 << 16  # sequences handed to the packer at a time


def repack_shard(src: str | os.PathLike, dst: str | os.PathLike, seq_length: int,
                 buffer_documents: int = DEFAULT_BUFFER) -> PackStats:
    """Write ``dst`` (``.bin/.idx/.json``): the documents of ``src`` packed for ``seq_length``."""
    ds = IndexedDataset(src)
    sidecar = read_sidecar(src)
    if sidecar is None:
        raise ValueError(f"{src}.json: no sidecar, so the tokenizer of this shard is unknown; re-binarize it")
    if sidecar.get("packing") or ds.documents != len(ds):
        raise ValueError(f"{src}: already packed (documents of several sequences)")
    writer = PackingWriter(SplitWriter(os.fspath(dst), ds.dtype, None), seq_length, buffer_documents)
    try:
        for a in range(0, len(ds), _CHUNK):
            lengths = np.asarray(ds.lengths[a: a + _CHUNK])
            start = int(ds.pointers[a]) // ds.dtype.itemsize
            writer.add(np.asarray(ds._data[start: start + int(lengths.sum(dtype=np.int64))]), lengths)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    (prefix, documents, tokens, sha), = writer.finished
    write_sidecar(prefix, {
        **sidecar, "documents": documents, "tokens": tokens, "bin_sha256": sha,
        "idx_sha256": file_sha256(idx_path(prefix)), "bin_bytes": bin_path(prefix).stat().st_size,
        "idx_bytes": idx_path(prefix).stat().st_size, "shard": 0, "shards": 1, "packed_from": os.fspath(src),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **writer.sidecar_fields(prefix),
    })
    return writer.packer.stats
