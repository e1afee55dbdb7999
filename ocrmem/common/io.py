"""File output, written once: atomic writes (bytes, text, JSON, JSONL, CSV), sha256, number formatting.

Every file a stage leaves behind is written atomically (a temporary file in the same directory,
then `os.replace`), so a killed run never leaves a half-written file that a rerun would trust, and a
full disk (ENOSPC) leaves none either: it raises DiskFullError naming the path and the space needed.
`OCRMEM_FAULT_ENOSPC=<part of a path>` (tests only) makes the atomic writes of matching paths find
the disk full after writing half their bytes.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from ocrmem.common.errors import DiskFullError, UserError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
ENOSPC_AT = "OCRMEM_FAULT_ENOSPC"  # test-only: an atomic write whose path contains this value finds the disk full


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def disk_full(path: str | os.PathLike, needed: int | None, written: int = 0) -> DiskFullError:
    """The one-line error of a write that found no space: which path, how much it needed, how much is free."""
    path = Path(path)
    try:
        free = _size(shutil.disk_usage(path.parent if path.parent.exists() else ".").free)
    except OSError:
        free = "unknown"
    need = _size(needed) if needed else f"more than the {_size(written)} written"
    return DiskFullError(f"{path}: no space left on the device: writing it needs {need}, {free} free in {path.parent}; "
                         "nothing half-written was kept: free some space (or write elsewhere) and rerun")


def _planted_enospc(path: Path, tmp: Path) -> None:
    at = os.environ.get(ENOSPC_AT)
    if at and at in str(path):
        with open(tmp, "r+b") as f:  # a torn write, as a full disk leaves it
            f.truncate(max(os.path.getsize(tmp) // 2, 1))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    For writers that want a file name (safetensors, PIL); `write_atomic` covers bytes in memory. A full
    disk raises DiskFullError naming `path` and `needed` bytes (or what was written before it filled up).
    """
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        _planted_enospc(path, Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        written = 0
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                written = os.path.getsize(tmp)
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, DiskFullError) and e.errno in FULL_DISK:
            raise disk_full(path, needed, written) from None
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """JSON (UTF-8, non-ASCII kept as is) with a trailing newline."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def jsonl(rows: Iterable[Any]) -> str:
    """JSON lines: one compact object per line (also what an appending log writes per record)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    write_text(path, jsonl(rows))


def write_csv(path: str | os.PathLike, columns: list[str], rows: Iterable[dict]) -> None:
    """CSV with a header; missing and None cells are empty, extra keys ignored."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    write_text(path, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fmt(x: Any, nd: int = 3, none: str = "-") -> str:
    """A figure for a printed table: floats to `nd` decimals, None as `none`."""
    return none if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


# -- page images ----------------------------------------------------------------------------

def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding with fixed options and no metadata: same image -> same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3, optimize=False)
    return buf.getvalue()


def load_png(path: str | os.PathLike, sha256: str) -> Image.Image:
    """The rendered page at `path`, refused unless its bytes still have the manifest's sha256."""
    data = Path(path).read_bytes()
    if sha256_bytes(data) != sha256:
        raise UserError(f"{path}: changed since it was rendered (sha256 {sha256_bytes(data)[:12]}..., manifest "
                        f"{sha256[:12]}...): rerun `ocrmem render` to draw it again")
    with Image.open(io.BytesIO(data)) as im:
        return im.copy()


def save_png(img: Image.Image, path: str | os.PathLike) -> str:
    """Write `img` as PNG atomically; return the sha256 hex of the bytes."""
    data = png_bytes(img)
    write_atomic(path, data)
    return sha256_bytes(data)
