"""``moodstream COMMAND ...``: each command is a module's own command line, unchanged.

    moodstream listen ...     = python -m realtime.listen ...
    moodstream analyze ...    = python -m realtime.analyze ...
    moodstream subscribe ...  = python -m realtime.subscribe ...
    moodstream bridge ...     = python -m realtime.bridge ...
    moodstream view ...       = python -m realtime.view ...
    moodstream keys ...       = python -m realtime.keys ...
    moodstream models ...     = python -m models ...
    moodstream train ...      = python -m train ...
    moodstream bench ...      = python -m bench ...

A module is imported only when its command runs (``listen`` must set its thread policy before
torch loads, and ``subscribe`` needs no torch at all).
"""

from __future__ import annotations

import importlib
import os
import sys

from moodstream.cli import run

COMMANDS = {
    "listen": ("realtime.listen", "analyse live audio and publish moods (and OSC, DMX, OS2L, MIDI)"),
    "analyze": ("realtime.analyze", "analyse a file as fast as possible, one line per window"),
    "subscribe": ("realtime.subscribe", "print a running analyzer's feed"),
    "bridge": ("realtime.bridge", "send a running analyzer's feed on as OSC, DMX, OS2L, MIDI"),
    "view": ("realtime.view", "serve a live web view of a running analyzer's feed"),
    "keys": ("realtime.keys", "make CURVE key pairs for an encrypted feed on a network"),
    "models": ("models.__main__", "list the registered models, export one to ONNX"),
    "train": ("train.__main__", "train, evaluate, probe and export models"),
    "bench": ("bench.__main__", "latency, end-to-end lag, streams per machine, soak"),
}


def usage() -> str:
    lines = ["usage: moodstream COMMAND [ARGS...]   (moodstream COMMAND --help for a command's options)", ""]
    lines += [f"  {name:<10} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"moodstream: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Its usage and errors say how it was run; a stop while it imports (torch: seconds) is one line.
    code = run(lambda: importlib.import_module(COMMANDS[name][0]).main(args, prog=f"moodstream {name}"))
    if name == "listen":
        # As `python -m realtime.listen` does: all is closed; skip Python's slow teardown of torch.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
