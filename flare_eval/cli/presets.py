"""``flare-eval presets``: list the shipped challenge definitions, or show one as TOML."""

from __future__ import annotations

import argparse

from flare_eval.errors import EXIT_OK

__all__ = ["register"]

DESCRIPTION = """\
List the shipped challenge definitions (name, content hash, title), or show one, resolved,
as a TOML file: every rule (label map, tolerances, z-crop, NSD skip threshold, empty-case
values, failure policy, efficiency tolerances and penalties, ranking criteria). A shown file
is a valid definition: copy it, edit it, and pass it as --preset FILE to score, rank,
evaluate, report's inputs, grand-challenge evaluate and bundle codabench.

examples:
  flare-eval presets
  flare-eval presets show flare22 > my-challenge.toml
  flare-eval presets show my-challenge.toml     # checks a file: every mistake, one per line
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter

    p = subparsers.add_parser("presets", help="list or show the challenge definitions",
                              description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("action", nargs="?", choices=("list", "show"), default="list",
                   help="list the shipped definitions, or show one")
    p.add_argument("preset", nargs="?", default=None, metavar="NAME|FILE",
                   help="the definition to show")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from flare_eval.definition import to_toml
    from flare_eval.errors import ConfigError
    from flare_eval.presets import PRESETS, get_preset

    if args.action == "list":
        if args.preset is not None:
            raise ConfigError("presets list takes no NAME", hint="flare-eval presets show NAME")
        for name, preset in PRESETS.items():
            print(f"{name:<14} {preset.content_sha256[:12]}  {preset.title}")
        return EXIT_OK
    if args.preset is None:
        raise ConfigError("presets show needs a NAME or FILE", hint="flare-eval presets show flare23")
    print(to_toml(get_preset(args.preset)), end="")
    return EXIT_OK
