"""``evovae keys``: CURVE key files for the head and the workers (transport/keys.py does the work)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} keys --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evovae keys", description="CURVE key files for the head and the workers.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    gen = sub.add_parser("generate", help="write NAME.key (public) and NAME.key_secret (secret, 0600)")
    gen.add_argument("--dir", default=".", help="where to write the files (default: the current directory)")
    gen.add_argument("names", nargs="+", metavar="NAME", help="e.g. head worker-gpu0")
    show = sub.add_parser("show", help="print the public key (Z85) of a key file")
    show.add_argument("file", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae keys generate --dir DIR NAME [NAME...]`` / ``evovae keys show FILE``."""
    from transport.keyfiles import KeyFileError, generate_many, load_public, read_public_key

    args = _parser().parse_args(argv)
    try:
        if args.action == "generate":
            for public, secret in generate_many(args.dir, args.names):  # all or nothing
                key = load_public(public).decode("ascii")
                print(f"wrote {public} (public key {key}) and {secret} (secret, mode 0600)")
        else:
            print(read_public_key(args.file).decode("ascii"))
    except (KeyFileError, OSError) as exc:
        print(f"evovae keys: error: {exc}", file=sys.stderr)
        return 2
    return 0
