"""The command line, nothing else: parse, call the library, print, map errors to exit codes.

Exit 0 on success; 2 on a user error (one message, no traceback); 1 on an internal error.
Heavy imports (torch, timm, transformers) happen inside the commands, after the config is valid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence

from tlkit.errors import UserError


def _quiet_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def cmd_plan(args: argparse.Namespace) -> int:
    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    from tlkit.assemble import assemble
    from tlkit.data import num_outputs
    from tlkit.plan import format_plan

    asm = assemble(cfg.transfer_config, num_outputs(cfg.data))
    print(format_plan(asm.plan))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from tlkit.backbones import list_backbones

    rows = list_backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'modality':<8}  {'offline':<7}  {'how':<22}  about")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['modality']:<8}  {'yes' if r['offline'] else 'no':<7}  "
              f"{r['how']:<22}  {r['about']}")
    print("\nAlso: timm:NAME, hf:PATH_OR_ID, torchvision:NAME (with pretrained_weights: a local "
          "file or folder, none, or a hub tag where a hub is reachable).")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from tlkit.data import list_packaged

    rows = list_packaged()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    print("\nAlso: a folder with one subfolder per class, or a .csv / .jsonl / .parquet file.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tlkit", description="Transfer learning with measurements.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML config with transfer_config and data sections")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. --set transfer_config.head_lr=3e-4")
        return sp

    with_config("plan", "print the freeze / learning-rate table of every phase; no training"
                ).set_defaults(func=cmd_plan)
    sp = sub.add_parser("backbones", help="known backbones and which load offline here")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_backbones)
    sp = sub.add_parser("datasets", help="packaged data sets and whether each is installed")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"tlkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - an internal error: keep the traceback for a bug report
        traceback.print_exc()
        print(f"tlkit {args.command}: internal error (a bug in tlkit; please report it with the "
              "traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
