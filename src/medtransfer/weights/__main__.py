"""Command line: ``python -m medtransfer.weights {formats,inspect,convert,fetch} ...``."""

from __future__ import annotations

import argparse
import json
import sys

from medtransfer.weights.formats import FORMATS, NORMALISATIONS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medtransfer.weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("formats", help="list the weights formats, their default normalisation and padding")
    ins = sub.add_parser("inspect", help="show what a weights file holds and its likely format")
    ins.add_argument("file")
    conv = sub.add_parser("convert", help="convert a published file to the canonical torchvision layout")
    conv.add_argument("--format", required=True, choices=sorted(FORMATS))
    conv.add_argument("--normalisation", default=None, choices=sorted(NORMALISATIONS),
                      help="default: the format's (see `formats`)")
    conv.add_argument("--arch", default="resnet50")
    conv.add_argument("--model", default="", help="model name recorded in the metadata")
    conv.add_argument("input", help="the file, or a TensorFlow checkpoint prefix, .index or folder")
    conv.add_argument("output")
    get = sub.add_parser("fetch", help="download a file with resume, retries and sha256 check")
    get.add_argument("url")
    get.add_argument("output")
    get.add_argument("--sha256", default="")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "formats":
        for record in FORMATS.values():
            print(f"{record.name:12} normalisation {record.normalisation:9} padding {record.padding:16} "
                  f"{record.summary}")
    elif args.command == "inspect":
        from medtransfer.weights.inspect import describe  # each command loads only its own readers

        print(json.dumps(describe(args.file), indent=2, default=str))
    elif args.command == "convert":
        from medtransfer.weights.convert import convert_file  # each command loads only its own readers

        meta = convert_file(args.input, args.output, fmt=args.format, model=args.model,
                            normalisation=args.normalisation, arch=args.arch)
        print(f"wrote {args.output}: {meta.arch}, padding {meta.padding}, dropped {len(meta.dropped)} keys")
    else:
        from medtransfer.weights.download import fetch  # each command loads only its own readers

        print(fetch(args.url, args.output, sha256=args.sha256))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
