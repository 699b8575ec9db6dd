"""moodstream.cli's Parser, as every command uses it: one error line, and the one the user needs."""

from __future__ import annotations

import pytest

from models.__main__ import main as models_main
from realtime import analyze, keys
from train.__main__ import main as train_main


@pytest.mark.parametrize(
    "main, argv, words",
    [
        # argparse would say the positional is missing; the mistyped option is the news.
        (
            keys.main,
            ["--bogus"],
            "error: unrecognized arguments: --bogus (python -m realtime.keys --help lists",
        ),
        (
            analyze.main,
            ["--bogus=1"],
            "error: unrecognized arguments: --bogus=1 (python -m realtime.analyze --help",
        ),
        # ... and so would it of a missing command (`models --bogus`: "required: command").
        (models_main, ["--bogus"], "error: unrecognized arguments: --bogus (python -m models --help"),
        (
            train_main,
            ["fit", "--bogus"],
            "error: unrecognized arguments: --bogus (python -m train fit --help",
        ),
        (train_main, ["score", "--bogus"], "error: unrecognized arguments: --bogus (python -m train score"),
        # Only a positional missing (an abbreviated option is an option): that is said.
        (keys.main, [], "error: the following arguments are required: DIR"),
        (analyze.main, ["--to", "3"], "error: the following arguments are required: FILE"),
        # A missing command is said with the commands there are, not argparse's "command".
        (models_main, [], "error: a command is needed: list, show, export (python -m models --help"),
        (train_main, [], "error: a command is needed: fit, evaluate, export, probe, score ("),
    ],
)
def test_an_unknown_option_is_said_before_a_missing_argument(capsys, main, argv, words):
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith(words) and err.count("\n") == 1, err
