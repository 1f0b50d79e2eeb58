"""Bound a Deflated Explicit VR Little Endian DICOM before pydicom inflates it whole.

pydicom reads such a file's dataset with `zlib.decompress(fp.read())` while it reads the *header*, before any
decode-memory estimate can run: a 1 MB file can inflate to gigabytes. `inflated_size` streams the deflated body
through zlib in small pieces, keeping nothing, and stops as soon as it passes the limit.
"""

from __future__ import annotations

import zlib
from pathlib import Path

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
_CHUNK = 1 << 16


class InflateLimitError(ValueError):
    """The deflated body inflates past the limit (too_large) or is not a valid, complete deflate stream."""

    def __init__(self, reason: str, too_large: bool = False) -> None:
        """A plain reason; too_large when the limit, not damage, stopped it."""
        super().__init__(reason)
        self.too_large = too_large


def dataset_offset(path: Path) -> int | None:
    """Where the dataset starts when the file meta names the deflated transfer syntax; None otherwise."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as fp:
            read_preamble(fp, True)
            meta = _read_file_meta_info(fp)
            if str(meta.get("TransferSyntaxUID", "")).strip() != DEFLATED_TS:
                return None
            return fp.tell()
    except Exception:
        return None  # not parseable as a DICOM header: pydicom will refuse it without inflating


def inflated_size(path: Path, limit: int) -> int | None:
    """Bytes the deflated dataset of `path` inflates to (None when the file is not deflated); raises
    InflateLimitError as soon as it passes `limit`, or when the stream is not valid deflate data."""
    start = dataset_offset(path)
    if start is None:
        return None
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as fp:
        fp.seek(start)
        while chunk := fp.read(_CHUNK):
            total += _inflate(inflater, chunk, limit - total)
            if inflater.eof:
                break
    if not inflater.eof:
        raise InflateLimitError("its deflated data ends early (a truncated or damaged file)")
    return total


def _inflate(inflater: zlib._Decompress, data: bytes, room: int) -> int:
    """Inflate `data` in bounded pieces, keeping nothing; the number of bytes it gave."""
    total = 0
    while data and not inflater.eof:
        try:
            out = inflater.decompress(data, _CHUNK)
        except zlib.error:
            raise InflateLimitError("its deflated data is damaged") from None
        total += len(out)
        if total > room:
            raise InflateLimitError("it inflates past the limit", too_large=True)
        data = inflater.unconsumed_tail
    return total
