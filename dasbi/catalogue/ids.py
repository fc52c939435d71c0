"""Row identifiers: the id column, missing and duplicate ids, and a streamed duplicate
check whose memory does not grow with the catalogue (:class:`IdIndex`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .readers import ALL_COLUMNS_KEY, Blocks, table_column

if TYPE_CHECKING:
    from .columns import ColumnMap


def catalogue_ids(t: Any, cmap: ColumnMap) -> np.ndarray:
    """The identifier of every row as stripped strings (the row number without an id).

    Byte-string columns (FITS) stay bytes, a quarter of the memory of unicode; blocks are
    decoded in :func:`map_catalogue`.
    """
    if not cmap.id:
        return np.arange(len(t)).astype(str)
    raw = table_column(t, cmap.id, "catalogue.id")
    mask = np.asarray(getattr(raw, "mask", False), bool)
    col = np.asarray(raw)
    if col.dtype.kind not in "SU":
        col = col.astype(str)
    col = np.char.strip(col)
    if mask.any():  # masked ids are missing ids
        col[np.broadcast_to(mask, col.shape)] = ""
    return col


def id_problems(ids: np.ndarray) -> np.ndarray:
    """Per row: "" for a good id, else why the row is rejected (missing or duplicate id).

    The first occurrence of a repeated id is kept; later ones are duplicates.
    """
    out = np.full(len(ids), "", dtype=object)
    out[np.isin(ids, np.array(_MISSING_IDS).astype(ids.dtype))] = "missing id"
    _, first = np.unique(ids, return_index=True)
    dup = np.ones(len(ids), bool)
    dup[first] = False
    out[dup & (out == "")] = "duplicate id"
    return out


_MISSING_IDS = ("", "--", "nan")
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def _id_bytes(ids: np.ndarray) -> np.ndarray:
    """Ids as a fixed-width byte array (UTF-8)."""
    return ids if ids.dtype.kind == "S" else np.char.encode(ids.astype(str), "utf-8")


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each id's UTF-8 bytes, vectorised over rows.

    Only the bytes of each string count (not the padding of the array), so an id hashes
    the same in blocks of different widths.
    """
    b = _id_bytes(ids)
    n, w = len(b), b.dtype.itemsize
    h = np.full(n, _FNV_OFFSET, np.uint64)
    if not n or not w:
        return h
    chars = b.view(np.uint8).reshape(n, w)
    length = np.char.str_len(b)
    with np.errstate(over="ignore"):
        for j in range(w):
            live = j < length
            h = np.where(live, (h ^ chars[:, j].astype(np.uint64)) * _FNV_PRIME, h)
    return h


class IdIndex:
    """The missing and duplicate ids of a whole catalogue, in memory bounded by a bucket.

    One streaming pass reads the id column block by block, hashes every id and appends
    (row, hash) to one of K bucket files by hash; each bucket (about ``bucket_rows`` rows)
    is then sorted in memory to find repeated hashes. A second pass reads the ids of those
    candidate rows only and confirms the duplicates exactly, so a hash collision never
    rejects a row. Memory is ~16 B × ``bucket_rows`` plus the duplicates, whatever the
    length of the catalogue (the in-memory :func:`id_problems` needed ~30 B per row).

    The rules are those of :func:`id_problems`: "", "--" and "nan" are missing ids, and
    the first occurrence of a repeated id is kept.
    """

    def __init__(
        self,
        table: Any,
        cmap: ColumnMap,
        *,
        block_rows: int = 1 << 16,
        bucket_rows: int = 2_000_000,
        progress: bool = False,
    ) -> None:
        import tempfile

        self.table, self.cmap, self.n = table, cmap, len(table)
        self.block_rows = block_rows
        self.width = 1
        self.duplicates = np.zeros(0, np.int64)
        if not cmap.id or not self.n:
            self.width = max(1, len(str(max(self.n - 1, 0))))
            return
        from ..progress import progress_bar

        k = max(1, -(-self.n // bucket_rows))
        bar = progress_bar(
            total=self.n, desc="check ids", unit="row", disable=not progress or self.n < 10**6
        )
        with bar, tempfile.TemporaryDirectory(prefix="dasbi-ids-") as tmp:
            files = [open(Path(tmp) / f"b{i}.bin", "wb") for i in range(k)]  # noqa: SIM115
            try:
                for a in range(0, self.n, block_rows):
                    bar.update(min(block_rows, self.n - a))
                    ids = self.ids(a, min(a + block_rows, self.n))
                    self.width = max(self.width, int(np.char.str_len(_id_bytes(ids)).max()))
                    good = ~self._missing(ids)
                    rows = np.nonzero(good)[0].astype(np.int64) + a
                    h = hash_ids(ids[good])
                    bucket = (h % np.uint64(k)).astype(np.int64)
                    for i in np.unique(bucket):
                        sel = bucket == i
                        rec = np.empty(int(sel.sum()), [("row", "<i8"), ("hash", "<u8")])
                        rec["row"], rec["hash"] = rows[sel], h[sel]
                        files[i].write(rec.tobytes())
            finally:
                for f in files:
                    f.close()
            candidates = []
            for i in range(k):
                rec = np.fromfile(Path(tmp) / f"b{i}.bin", [("row", "<i8"), ("hash", "<u8")])
                (Path(tmp) / f"b{i}.bin").unlink()
                if len(rec) < 2:
                    continue
                order = np.argsort(rec["hash"], kind="stable")
                hs = rec["hash"][order]
                rep = np.zeros(len(hs), bool)
                rep[1:] = hs[1:] == hs[:-1]
                rep[:-1] |= rep[1:]
                candidates.append(rec["row"][order][rep])
        rows = np.sort(np.concatenate(candidates)) if candidates else np.zeros(0, np.int64)
        self.duplicates = self._confirm(rows)

    @staticmethod
    def _missing(ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, np.array(_MISSING_IDS).astype(ids.dtype))

    def ids(self, a: int, b: int) -> np.ndarray:
        """The ids of rows [a, b) (stripped; row numbers without an id column)."""
        if not self.cmap.id:
            return np.arange(a, b).astype(str)
        if isinstance(self.table, Blocks):
            block = self.table._read(a, b, [self.cmap.id])
            block.meta[ALL_COLUMNS_KEY] = self.table.all_colnames
        else:
            block = self.table[a:b]
        return catalogue_ids(block, self.cmap)

    def _confirm(self, rows: np.ndarray) -> np.ndarray:
        """Of the rows whose hashes repeat, those whose id really occurred before."""
        if not len(rows):
            return np.zeros(0, np.int64)
        found_rows, found_ids = [], []
        for a in range(0, self.n, self.block_rows):
            b = min(a + self.block_rows, self.n)
            lo, hi = np.searchsorted(rows, [a, b])
            if lo == hi:
                continue
            found_rows.append(rows[lo:hi])
            found_ids.append(_id_bytes(self.ids(a, b))[rows[lo:hi] - a])
        r = np.concatenate(found_rows)
        width = max(x.dtype.itemsize for x in found_ids)
        ids = np.concatenate([x.astype(f"S{width}") for x in found_ids])
        _, first = np.unique(ids, return_index=True)  # rows are increasing: first occurrence
        dup = np.ones(len(r), bool)
        dup[first] = False
        return r[dup]

    def status(self, a: int, b: int, ids: np.ndarray) -> np.ndarray:
        """:func:`id_problems` for rows [a, b) with their ``ids``."""
        out = np.full(b - a, "", dtype=object)
        out[self._missing(ids)] = "missing id"
        lo, hi = np.searchsorted(self.duplicates, [a, b])
        out[self.duplicates[lo:hi] - a] = "duplicate id"
        return out
