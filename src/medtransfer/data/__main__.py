"""Command line: ``python -m medtransfer.data {describe,index} ...``."""

from __future__ import annotations

import argparse
import sys

from medtransfer.data.adapters import DATASET_KINDS, describe, index_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medtransfer.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    desc = sub.add_parser("describe", help="where to download a dataset and the layout it must have")
    desc.add_argument("kind", nargs="?", choices=DATASET_KINDS)
    idx = sub.add_parser("index", help="check a download and write its index CSV")
    idx.add_argument("kind", choices=DATASET_KINDS)
    idx.add_argument("root")
    idx.add_argument("out")
    idx.add_argument("--split", default="published")
    idx.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        if args.command == "describe":
            print("\n\n".join(describe(k) for k in ([args.kind] if args.kind else DATASET_KINDS)))
        else:
            index_dataset(args.out, kind=args.kind, root=args.root, split=args.split, seed=args.seed)
            print(f"wrote {args.out}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
