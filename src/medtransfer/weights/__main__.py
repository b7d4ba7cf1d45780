"""Command line: ``python -m medtransfer.weights {inspect,convert,fetch} ...``."""

from __future__ import annotations

import argparse
import json
import sys

from medtransfer.weights.convert import FORMATS, NORMALISATIONS, convert_file
from medtransfer.weights.download import fetch
from medtransfer.weights.inspect import describe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medtransfer.weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="show what a weights file holds and its likely format")
    ins.add_argument("file")
    conv = sub.add_parser("convert", help="convert a published file to the canonical torchvision layout")
    conv.add_argument("--format", required=True, choices=sorted(FORMATS))
    conv.add_argument("--normalisation", default="imagenet", choices=sorted(NORMALISATIONS))
    conv.add_argument("--arch", default="resnet50")
    conv.add_argument("--model", default="", help="model name recorded in the metadata")
    conv.add_argument("input")
    conv.add_argument("output")
    get = sub.add_parser("fetch", help="download a file with resume, retries and sha256 check")
    get.add_argument("url")
    get.add_argument("output")
    get.add_argument("--sha256", default="")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            print(json.dumps(describe(args.file), indent=2, default=str))
        elif args.command == "convert":
            meta = convert_file(args.input, args.output, fmt=args.format, model=args.model,
                                normalisation=args.normalisation, arch=args.arch)
            print(f"wrote {args.output}: {meta.arch}, padding {meta.padding}, dropped {len(meta.dropped)} keys")
        else:
            print(fetch(args.url, args.output, sha256=args.sha256))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
