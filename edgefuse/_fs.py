"""Stage folders on disk: atomic writes (complete or absent) and reading a stage's JSON record."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgefuse.errors import EdgefuseError


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` (an existing
    ``out`` is kept until the new one is whole), on any error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(doc: Any, path: str | Path) -> Path:
    """Write ``doc`` as JSON to ``path``, whole or not at all: a temporary file beside it,
    renamed over it (an existing file is kept until the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_record(folder: str | Path, name: str, fmt: str, what: str) -> dict[str, Any]:
    """The JSON file ``name`` of a stage folder; ValueError unless it exists and has ``format == fmt``."""
    path = Path(folder) / name
    if not path.is_file():
        raise EdgefuseError(f"expected {what} with {name}, got {str(folder)!r}")
    doc = json.loads(path.read_text())
    if doc.get("format") != fmt:
        raise EdgefuseError(f"{path}: expected format {fmt!r}, got {doc.get('format')!r}")
    return doc
