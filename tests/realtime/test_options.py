"""realtime.options' Parser: one error line, and the one the user needs."""

from __future__ import annotations

import pytest

from realtime import analyze, keys


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
        # Only a positional missing (an abbreviated option is an option): that is said.
        (keys.main, [], "error: the following arguments are required: DIR"),
        (analyze.main, ["--to", "3"], "error: the following arguments are required: FILE"),
    ],
)
def test_an_unknown_option_is_said_before_a_missing_argument(capsys, main, argv, words):
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith(words) and err.count("\n") == 1, err
