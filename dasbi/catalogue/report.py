"""The validation report: rejected rows and ignored values with their reasons, written as
``<out>.rejected.ecsv``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Report:
    """What happened to each row: rejected rows and ignored values, with reasons."""

    rows: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(
        self,
        rows: np.ndarray,
        ids: np.ndarray,
        column: str,
        action: str,
        reason: str,
        offset: int = 0,
    ) -> None:
        """Record ``rows`` (indices into ``ids``; ``offset`` + row is the input row)."""
        for r in np.asarray(rows).ravel():
            self.rows.append(int(r) + offset)
            self.ids.append(str(ids[r]))
            self.columns.append(column)
            self.actions.append(action)
            self.reasons.append(reason)

    def add_row(self, row: int, id_: str, column: str, action: str, reason: str) -> None:
        """Record one input row."""
        self.add(np.array([0]), np.array([id_]), column, action, reason, offset=int(row))

    def table(self) -> Any:
        from astropy.table import Table

        return Table(
            {
                "row": np.asarray(self.rows, np.int64),
                "id": np.asarray(self.ids, str),
                "column": np.asarray(self.columns, str),
                "action": np.asarray(self.actions, str),
                "reason": np.asarray(self.reasons, str),
            }
        )

    def extend(self, other: Report) -> None:
        for name in ("rows", "ids", "columns", "actions", "reasons"):
            getattr(self, name).extend(getattr(other, name))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The report as plain arrays (``report_<field>``) for an ``.npz`` part file."""
        return {
            "report_rows": np.asarray(self.rows, np.int64),
            **{
                f"report_{k}": np.asarray(getattr(self, k), dtype=np.str_)
                for k in ("ids", "columns", "actions", "reasons")
            },
        }

    @classmethod
    def from_arrays(cls, z: Any) -> Report:
        return cls(
            [int(r) for r in z["report_rows"]],
            *(
                [str(v) for v in z[f"report_{k}"]]
                for k in ("ids", "columns", "actions", "reasons")
            ),
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a, r in zip(self.actions, self.reasons, strict=True):
            out[f"{a}: {r}"] = out.get(f"{a}: {r}", 0) + 1
        return out

    def write(self, path: str | os.PathLike[str]) -> Path:
        with ReportWriter(path) as w:
            w.write(self)
        return w.path


class ReportWriter:
    """Writes a :class:`Report` as ECSV piece by piece (memory ∝ one piece), atomically:
    the file appears under its name only when the writer is closed without an error."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self._tmp, "w")
        self._f.write(self._ecsv(Report()))

    @staticmethod
    def _ecsv(report: Report) -> str:
        import io

        buf = io.StringIO()
        report.table().write(buf, format="ascii.ecsv")
        return buf.getvalue()

    def write(self, report: Report) -> None:
        if report.rows:
            lines = self._ecsv(report).splitlines(keepends=True)
            body = [ln for ln in lines if not ln.startswith("#")][1:]  # drop the names line
            self._f.writelines(body)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._f.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
