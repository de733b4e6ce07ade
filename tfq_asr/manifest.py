"""Corpus manifests: tab-separated, one header line, paths relative to the manifest's folder."""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

MANIFEST_COLUMNS = ("path", "duration", "voice", "engine", "text")


@dataclass(frozen=True)
class Utterance:
    path: Path          # absolute
    duration: float
    voice: str
    engine: str
    text: str


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write atomically (temporary file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n",
                           quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path, limit: int | None = None) -> list[Utterance]:
    """Read a manifest (its first `limit` utterances, all for None); UserError naming the file
    and line for anything malformed, or a limit below 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit = {limit!r}: expected a number of utterances >= 1 (None: all)")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise UserError(f"manifest is empty: {path}")
        missing = [c for c in ("path", "text") if c not in header]
        if missing:
            raise UserError(f"manifest {path} lacks column(s) {', '.join(missing)}; "
                            f"expected a header line with {', '.join(MANIFEST_COLUMNS)}")
        col = {name: i for i, name in enumerate(header)}
        out = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, got {len(row)}")
            get = lambda name, default="": row[col[name]] if name in col else default  # noqa: E731
            try:
                duration = float(get("duration", "0") or 0)
            except ValueError:
                raise UserError(f"{path}:{lineno}: duration {get('duration')!r} is not a number") from None
            out.append(Utterance(path=(path.parent / get("path")).resolve(), duration=duration,
                                 voice=get("voice"), engine=get("engine"), text=get("text")))
    if not out:
        raise UserError(f"manifest has no utterances: {path}")
    return out[:limit]
