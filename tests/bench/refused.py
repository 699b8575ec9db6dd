"""``python -m bench COMMAND ARGS`` run in this process, for options it refuses (no start-up to pay)."""

from __future__ import annotations

import pytest


def refused(capsys, *args: str) -> str:
    """Exit status 2 and the message on stderr, as the command line would give."""
    from bench.__main__ import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(main(list(args)))
    assert exit_.value.code == 2, capsys.readouterr().err[-2000:]
    return capsys.readouterr().err
