"""The argument parser class and help formatter of every ``flare-eval`` verb.

Kept apart from the verbs and free of numpy/pandas so that building the parser (``--help``,
a mistyped option) stays as cheap as importing argparse.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["ArgumentParser", "HelpFormatter", "SLOTS_HELP", "add_preset_option", "iou_threshold"]

#: What ``--slots`` takes (:func:`flare_eval.runner.slots.parse_slots`), for the verbs' help.
SLOTS_HELP = (
    "where cases run at the same time, one container per slot: N (the cores split evenly into "
    "N slots, one GPU each where NVML finds GPUs), auto (one slot per GPU), or GPU:CORES items "
    "such as 0:0-3,1:4-7 (GPU 0 with cores 0-3, GPU 1 with cores 4-7) or cpu:0,cpu:1 (two "
    "CPU-only slots of one core); default: one unpinned slot, the whole host"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the hand-made line breaks of descriptions.

    No ``(default: None)`` or ``(default: False)``: on a required option, a flag or an option
    whose help says what its absence means, that text tells a reader nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that names the closest option or verb when a word is mistyped.

    Abbreviated options are refused (``allow_abbrev=False``): ``--pre`` could be ``--pred``
    or ``--preset``, and an abbreviation that works today breaks when an option is added.
    Subparsers made by :meth:`add_subparsers` are of this class too.
    """

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def _verb_parser(self, namespace: argparse.Namespace) -> ArgumentParser:
        """The parser of the verb chosen in ``namespace`` (``self`` when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None) or "")
                if isinstance(chosen, ArgumentParser):
                    return chosen._verb_parser(namespace)
        return self

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        # kept for error(): a "required" error is raised before the unknown words are known
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """Parse like argparse; unknown words are reported by the verb that got them."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._verb_parser(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _mistyped_options(self) -> str:
        """`` (--gtt: did you mean --gt?)`` for each ``--word`` given that is no option here."""
        options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        if any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            return ""  # the words after the verb are its parser's to judge
        unknown = dict.fromkeys(w.split("=", 1)[0] for w in getattr(self, "_words", [])
                                if w.startswith("--") and w.split("=", 1)[0] not in options)
        return "".join(f" ({word}: did you mean {close[0]}?)" for word in unknown
                       if (close := difflib.get_close_matches(word, options, n=1, cutoff=0.6)))

    def error(self, message: str) -> NoReturn:
        """Print usage and ``message``, with the closest option to each mistyped one and the
        closest verb to a mistyped verb, and exit 2."""
        mistyped = re.search(r"invalid choice: '([^']*)'", message)
        for action in self._actions:
            if mistyped and isinstance(action, argparse._SubParsersAction):
                close = difflib.get_close_matches(mistyped.group(1), list(action.choices), n=1)
                message += f" (did you mean {close[0]}?)" if close else ""
        super().error(message + self._mistyped_options())


def iou_threshold(text: str) -> float:
    """Argparse type of ``--lesion-iou``: checked by the rule of the challenge definition
    (:func:`flare_eval.definition.iou_threshold_problem`), reported under the option's name."""
    from flare_eval.definition import iou_threshold_problem

    value = float(text)  # a ValueError: argparse says "invalid iou_threshold value: 'x'"
    if (problem := iou_threshold_problem(value)) is not None:
        raise argparse.ArgumentTypeError(f"T {problem}")
    return value


def gpu_index(text: str) -> int:
    """Argparse type of ``--gpu``: an NVML device index, 0 or more."""
    value = int(text)  # a ValueError: argparse says "invalid gpu_index value: 'x'"
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a GPU index 0, 1, ... (nvidia-smi -L lists them), got {value}")
    return value


def add_preset_option(parser: argparse.ArgumentParser, role: str) -> None:
    """``--preset NAME|FILE`` of every verb: a shipped challenge definition or a TOML file
    (:func:`flare_eval.presets.get_preset`); ``role`` says what the verb takes from it."""
    parser.add_argument("--preset", default="flare23", metavar="NAME|FILE",
                        help=f"{role}: a shipped challenge definition (see 'flare-eval presets') "
                             "or the path of a .toml definition")
