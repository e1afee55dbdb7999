"""Planted kills for the fault-injection tests: `OCRMEM_FAULT_AT=<point>:<n>[@<rank>]` makes the process
kill itself with SIGKILL (no cleanup, no atexit, like `kill -9` or a lost node) at the n-th <point>;
with `@<rank>` only that rank of a torchrun / deepspeed run dies. Unset, as always outside the tests, it
does nothing.

    render:<n>      the n-th example's pages are drawn, before its line in progress.jsonl
    encode:<n>      shard n of the feature cache is written, before the index names it
    train:<n>       optimizer step n is done, before its checkpoint (if it has one)
    checkpoint:<n>  checkpoint-n's files are written (every rank's), before it is renamed complete

Without `@<rank>` every rank of a distributed run dies there.
"""

from __future__ import annotations

import os
import signal

ENV = "OCRMEM_FAULT_AT"


def fault_point(point: str, n: int) -> None:
    at, _, rank = os.environ.get(ENV, "").partition("@")
    if at == f"{point}:{n}" and rank in ("", os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
