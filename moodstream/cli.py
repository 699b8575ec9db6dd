"""What every moodstream command line shares: one-line errors that say how to list the options,
and a stop (Ctrl-C, SIGTERM) that ends a command with one line, not a traceback.

``realtime``, ``models``, ``train`` and ``bench`` all parse with ``Parser``; it lives here, in the
umbrella package, because ``models`` and ``train`` may not import ``realtime``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


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


def interrupt(signum: int, frame) -> NoReturn:
    """A signal handler: SIGTERM (a supervisor, ``kill``, ``timeout``) stops as Ctrl-C does, by a
    KeyboardInterrupt where the command is (a model loading, a file being read).

    Except inside ``import torch`` (~2.7 s of a command's first seconds on a 2-core CPU): an
    exception raised while its C++ start-up calls back into Python can abort the process (once,
    exit 134 and a page of C++ and Python frames).  No command has done anything there that
    needs undoing (ports bound by then close with the process), so it ends at once."""
    how = STOP_SIGNALS.get(signum, "a signal")
    _ASKED.append(how)
    torch = sys.modules.get("torch")
    if torch is not None and getattr(getattr(torch, "__spec__", None), "_initializing", False):
        _say_stopped(how)
        os._exit(0)
    raise KeyboardInterrupt(how)


_ASKED: list[str] = []  # the stops interrupt() raised in this run


def stop_asked() -> str | None:
    """How a stop was asked for (``Ctrl-C``, ``SIGTERM``) since ``run`` began, None if none was.
    interrupt()'s KeyboardInterrupt can be lost on its way: raised while a finalizer runs, or
    inside a library's bare ``except:``, it is printed or swallowed and loading goes on.  A command
    that goes on to run for long (``listen``, ``analyze``) asks this where its loading ends."""
    return _ASKED[-1] if _ASKED else None


def _say_stopped(how: str) -> None:
    newline = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
    try:
        print(f"{newline}moodstream: stopped ({how})", file=sys.stderr, flush=True)
    except OSError:  # a terminal or pipe already gone
        pass


_BEFORE_IMPORTS: dict[int, object] = {}  # the handlers stop_while_importing replaced


def stop_while_importing() -> None:
    """For a ``python -m`` entry point whose imports take time before ``run`` can take over (torch:
    seconds; zmq, jsonschema and the rest of ``realtime.listen``'s: ~0.5 s): a stop there ends the
    process at once with one line.  Nothing has been done by then
    that needs undoing.  ``run`` puts the handlers from before this back after the command (not
    these: a stop in the teardown must not exit 0 without flushing)."""

    def stopped(signum: int, frame) -> NoReturn:
        _say_stopped(STOP_SIGNALS.get(signum, "a signal"))
        os._exit(0)

    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:
            _BEFORE_IMPORTS[signum] = signal.signal(signum, stopped)


def run(command: Callable[[], int | None]) -> int:
    """``command`` (a command's ``main`` with its arguments), stopped by Ctrl-C or SIGTERM wherever
    it has no stop of its own, with one line and exit 0: a stop asked for (README, Exit status),
    not a traceback of whatever was running (``import torch``, for the first seconds).  A command
    that handles its stops (``listen``, ``bridge``, ``view``, ``subscribe``) sets its own handlers."""
    # A SIGINT ignored from the start stays so, as Python leaves it (a shell's background job).
    wanted = [s for s in STOP_SIGNALS if s != signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, interrupt) for signum in wanted}
    previous.update(
        (signum, _BEFORE_IMPORTS.pop(signum)) for signum in list(_BEFORE_IMPORTS) if signum in previous
    )
    _ASKED.clear()
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, _lost_stops_unsaid(sys.unraisablehook)
    try:
        return command() or 0
    except KeyboardInterrupt as exc:
        _say_stopped(exc.args[0] if exc.args else "Ctrl-C")
        return 0
    finally:
        _ASKED.clear()  # this run's: a command called later in this process starts afresh
        sys.unraisablehook = unraisable_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _lost_stops_unsaid(hook: Callable) -> Callable:
    """``sys.unraisablehook`` that says nothing of interrupt()'s KeyboardInterrupt raised while a
    finalizer ran (importlib's module lock, a ``__del__``): Python cannot raise it there, and would
    print it, "Exception ignored in: …" and a traceback, before the one line.  The stop is in
    ``_ASKED``, which the command asks where its loading ends (``stop_asked``)."""

    def unraisable(info) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _ASKED):
            hook(info)

    return unraisable


def number(low: float | None = None, high: float | None = None, kind: type = float, what: str = ""):
    """An argparse type: a finite ``kind`` within [low, high], else a one-line error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if (
            not math.isfinite(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            span = (
                f"{low:g}..{high:g}"
                if low is not None and high is not None
                else (f">= {low:g}" if low is not None else f"<= {high:g}")
            )
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what or 'it'} must be {span}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _nearest_existing(path: Path) -> Path:
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            return ancestor
    return Path(".")


def output_file(text: str) -> str:
    """An argparse type: a file this command will write, checked as the options are read (a path
    through a file, or a folder it may not write in, came out as a traceback, some after a whole
    run whose figures were then lost).  Its folders are made when it is written."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file in it")
    return output_path(text)


def output_folder(text: str) -> str:
    """An argparse type: a folder this command will make (if need be) and write in, checked so."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    _check_folder_writable(text, path)
    return text


def _check_folder_writable(text: str, folder: Path) -> None:
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not writable here")


def output_path(text: str) -> str:
    """An argparse type: a file or a folder this command will write (which one depends on other
    options), checked as far as that allows: the folder it goes in."""
    _check_folder_writable(text, Path(text).parent)
    return text
