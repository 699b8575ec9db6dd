"""What every moodstream command line shares: one-line errors that say how to list the options.

``realtime``, ``models``, ``train`` and ``bench`` all parse with ``Parser``; it lives here, in the
umbrella package, because ``models`` and ``train`` may not import ``realtime``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a mistyped option or value gets ``error: ...`` like every
    other error of a command (``realtime.options.refuse``), and how to list the options, not the
    whole usage first (listen's is 20 lines, with the error after them)."""

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # for error(), below
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # argparse reports a missing argument before an option it does not know (`keys --bogus`:
        # "DIR is required"); the mistyped option is what the user needs to hear.
        if message.startswith("the following arguments are required"):
            unknown = [a for a in getattr(self, "_argv", []) if a.startswith("-") and not self._knows(a)]
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}"
            for action in self._actions:  # "required: command" names argparse's dest, not the choices
                if isinstance(action, argparse._SubParsersAction) and message.endswith(f": {action.dest}"):
                    message = f"a command is needed: {', '.join(action.choices)}"
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")

    def _knows(self, arg: str) -> bool:
        """An option of this parser, as argparse takes it: --name=value, or a prefix of one (abbreviated)."""
        name = arg.split("=", 1)[0]
        if name in ("-", "--") or name[1:2].isdigit():  # stdin's '-', the end of options, a negative number
            return True
        return any(option.startswith(name) for option in self._option_string_actions)
