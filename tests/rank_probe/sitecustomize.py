"""Test harness for tests/test_distributed.py, on the launched ranks' PYTHONPATH only: lists the files
each rank writes, one per line, in $OCRMEM_PROBE_DIR/writes-rank<RANK>.txt at exit. Python-level
writes (open for writing, os.open, os.replace/rename, removals) come from an audit hook; torch.save and
safetensors' save_file, which open their files in C++ / Rust, are wrapped."""

import atexit
import os
import sys

_rank = os.environ.get("RANK")
_out = os.environ.get("OCRMEM_PROBE_DIR")
_PATH = (str, bytes, os.PathLike)

if _rank is not None and _out:
    _writes: set[str] = set()

    def _hook(event, args):
        if event == "open" and isinstance(args[0], _PATH):
            mode, flags = args[1], args[2]
            if (mode and any(c in str(mode) for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR)):
                _writes.add(os.path.abspath(os.fsdecode(args[0])))
        elif event == "os.rename" and isinstance(args[1], _PATH):  # also os.replace
            _writes.add(os.path.abspath(os.fsdecode(args[1])))
        elif event in ("os.remove", "shutil.rmtree") and isinstance(args[0], _PATH):
            _writes.add(os.path.abspath(os.fsdecode(args[0])))

    sys.addaudithook(_hook)

    def _wrap(module, name: str, path_kw: str) -> None:
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            target = args[1] if len(args) > 1 else kwargs.get(path_kw)
            if isinstance(target, _PATH):
                _writes.add(os.path.abspath(os.fsdecode(target)))
            return real(*args, **kwargs)

        setattr(module, name, wrapper)

    import safetensors.torch
    import torch

    _wrap(torch, "save", "f")
    _wrap(safetensors.torch, "save_file", "filename")

    @atexit.register
    def _dump():
        with open(os.path.join(_out, f"writes-rank{_rank}.txt"), "w") as f:
            f.write("".join(f"{p}\n" for p in sorted(_writes)))
