"""The `ocrmem` command: one subcommand per stage (ocrmem/stages/<stage>.py, listed in `STAGES`).

    ocrmem <stage> [--params params.yaml] ...      # `ocrmem <stage> --help` for a stage's arguments

A bad config exits with status 2 and one line per bad field, before anything heavy is loaded; any other
error of input or config (ocrmem.common.errors.UserError) exits 2 with its one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from ocrmem.common.errors import ConfigError, UserError
from ocrmem.stages import STAGES, stage_module


def _settings(args):
    """The settings a stage asks for: none, loaded, or loaded with its local model paths checked."""
    if args.settings == "none":
        return None
    from ocrmem.settings import load_settings

    s = load_settings(args.params)
    if args.settings == "models":
        from ocrmem.memory.hub import check_model_paths

        check_model_paths(s)
    return s


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocrmem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The deepspeed launcher puts --local_rank=N in front of every rank's arguments; LOCAL_RANK says the same.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="stage")
    for name in STAGES:
        mod = stage_module(name)
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if mod.SETTINGS != "none":
            sp.add_argument("--params", default=os.environ.get("OCRMEM_PARAMS", "params.yaml"),
                            help="params file (default params.yaml)")
        if hasattr(mod, "add_arguments"):  # a stage with arguments of its own
            mod.add_arguments(sp)
        sp.set_defaults(run=mod.run, settings=mod.SETTINGS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args, _settings(args))
    except ConfigError as e:
        print(f"ocrmem {args.command}: invalid config", file=sys.stderr)
        for m in e.messages:
            print(f"  {m}", file=sys.stderr)
        return 2
    except UserError as e:  # bad input: the message says what, where and the fix; tracebacks are for bugs
        print(f"ocrmem {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
