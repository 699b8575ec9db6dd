"""moodstream.cli's Parser, as every command uses it: one error line, and the one the user needs."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
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


@pytest.mark.parametrize(
    "main, argv, words",
    [
        # Each was taken: --epochs 0 ran the recipe's 60, -1 wrote untrained weights as trained,
        # --top -1 printed all tags but one, --seconds 0 ran three hops.
        (
            train_main,
            ["fit", "--epochs", "0"],
            "error: argument --epochs: 0 is out of range: the epochs must be >= 1",
        ),
        (train_main, ["fit", "--limit", "-1"], "error: argument --limit: -1 is out of range"),
        (analyze.main, ["x.wav", "--top", "-1"], "error: argument --top: -1 is out of range"),
        (bench_main, ["latency", "--seconds", "0"], "error: argument --seconds: 0 is out of range"),
        (bench_main, ["latency", "--warmup", "-1"], "error: argument --warmup: -1 is out of range"),
        (bench_main, ["e2e", "--seconds", "-5"], "error: argument --seconds: -5 is out of range"),
        (bench_main, ["scale", "--seconds", "nan"], "error: argument --seconds: nan is out of range"),
        (bench_main, ["reaction", "--pairs", "0"], "error: argument --pairs: 0 is out of range"),
    ],
)
def test_counts_and_durations_are_checked_as_they_are_parsed(capsys, main, argv, words):
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith(words) and err.count("\n") == 1, err


def test_a_path_to_write_through_a_file_is_said_as_the_options_are_read(capsys, tmp_path):
    """A traceback before (FileExistsError, NotADirectoryError), and for train fit after its
    features were computed (minutes), for bench after the whole run, whose figures were lost."""
    a_file = tmp_path / "clip.wav"
    a_file.write_bytes(b"")
    through = str(a_file / "x")
    for main, argv, option in (
        (models_main, ["export", "musicnn-msd", through], "out"),
        (train_main, ["fit", "--out", through], "--out"),
        (train_main, ["export", "runs/x", "--out", through], "--out"),
        (keys.main, [str(a_file)], "DIR"),
        (bench_main, ["latency", "--json", through], "--json"),
        (bench_main, ["reaction", "--plot", str(tmp_path)], "--plot"),
    ):
        with pytest.raises(SystemExit) as ended:
            main(argv)
        err = capsys.readouterr().err
        assert ended.value.code == 2 and err.startswith(f"error: argument {option}: "), (argv, err)
        assert err.count("\n") == 1 and (
            "is a file, not a folder" in err or "is a folder; name a file" in err
        ), err


# A command run as `python -m MODULE`, with -X importtime: stderr says each import as it ends, so
# a stop can be sent inside torch's import or just after it, not after a guessed sleep.  SIGINT
# raises KeyboardInterrupt even where this test runs with it ignored (a shell's background job:
# inherited, and left ignored, as it should be).
RUN_TIMED_IMPORTS = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = sys.argv[1]; del sys.argv[1]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def _imported(line: str) -> str:
    """The module an ``-X importtime`` line says was imported ('' for any other line)."""
    return line.rsplit("|", 1)[-1].strip() if line.startswith("import time:") else ""


@pytest.mark.parametrize(
    "module, stop, when",
    [
        # Inside `import torch` (~2.7 s of the first seconds here): a KeyboardInterrupt raised
        # there can abort the process from torch's C++ start-up, so the stop ends it at once.
        ("realtime.listen", signal.SIGTERM, "in torch's import"),
        # Before it, in the module's own imports (zmq, jsonschema, soundfile...: ~0.5 s): one
        # line too (a stop there was a traceback, exit 1, or a silent exit 143).
        ("realtime.listen", signal.SIGINT, "in its own imports"),
        ("realtime.analyze", signal.SIGTERM, "in its own imports"),
        # Past it, loading the model: the ports bound so far are closed, then the one line.
        ("realtime.listen", signal.SIGINT, "after torch's import"),
        ("realtime.analyze", signal.SIGINT, "after torch's import"),
        # `python -m train|bench` import torch before main() and run() (moodstream.cli.stop_while_importing).
        ("train", signal.SIGINT, "in torch's import"),
        ("bench", signal.SIGTERM, "in torch's import"),
    ],
)
def test_a_stop_while_a_command_starts_is_one_line_and_exit_0(shared_data, module, stop, when):
    """README, Exit status: 0 on a stop asked for; not a traceback of `import torch` (Ctrl-C),
    nor a silent death by SIGTERM (exit 143), while the model loads."""
    from tests.realtime.harness import free_endpoint

    clip = shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg"
    args = {
        "realtime.analyze": [str(clip)],
        "realtime.listen": ["--file", str(clip), "--pub", free_endpoint()],
    }.get(module, ["--help"])
    until = {
        "in torch's import": lambda name: name.startswith("torch."),
        "in its own imports": lambda name: name == "moodstream.cli",
    }.get(when, lambda name: name == "torch")
    code, said, err = _stopped(module, args, until, stop)
    how = "Ctrl-C" if stop == signal.SIGINT else "SIGTERM"
    assert (code, said) == (0, [f"moodstream: stopped ({how})"]), err[-3000:]


@pytest.mark.parametrize("module", ["realtime.bridge", "realtime.view", "realtime.subscribe"])
def test_a_stop_while_a_feed_client_imports_is_no_traceback(module):
    """The feed's clients stop with their own lines once running; a stop in their imports (~0.4 s,
    before any handler of theirs) is one line too, not a traceback."""
    from tests.realtime.harness import free_endpoint, free_port

    args = {
        "realtime.bridge": ["--osc", f"127.0.0.1:{free_port()}"],
        "realtime.view": ["--web", str(free_port())],
    }.get(module, [])
    in_imports = "moodstream.cli".__eq__  # imported first: the module's own imports follow
    code, said, err = _stopped(module, ["--from", free_endpoint(), *args], in_imports, signal.SIGINT)
    # In the imports: the one line; later (a loaded machine), the client's own stop: exit 0 too.
    assert code == 0 and "Traceback" not in err and said and said[-1].startswith("moodstream"), err[-3000:]


def _stopped(module: str, args: list[str], until, stop: int) -> tuple[int, list[str], str]:
    """``python -m module args`` stopped by ``stop`` once the import ``until`` holds for has ended:
    (exit code, its stderr's lines but the import times, all of its stderr)."""
    from tests.realtime.harness import Lines

    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-c", RUN_TIMED_IMPORTS, module, *args],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(proc)
    try:
        lines.wait_for(lambda line: until(_imported(line)))
        proc.send_signal(stop)
        code, err = lines.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, [line for line in err.splitlines() if not line.startswith("import time:")], err


def test_run_leaves_an_ignored_sigint_ignored_and_puts_the_handlers_back():
    """A shell's background job starts with SIGINT ignored: run() leaves it so (as Python does),
    takes SIGTERM for the command, and gives both back after it."""
    from moodstream.cli import interrupt, run

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term_before = signal.getsignal(signal.SIGTERM)
    try:
        seen = []
        assert (
            run(lambda: seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))) == 0
        )
        assert seen == [(signal.SIG_IGN, interrupt)]
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
            signal.SIG_IGN,
            term_before,
        )
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_stop_that_lands_in_a_finalizer_is_the_one_line_not_a_traceback(tmp_path):
    """A Ctrl-C while a finalizer runs (in CI: importlib's module lock, as the model loaded)
    raises its KeyboardInterrupt where Python cannot: it printed "Exception ignored in: …" and a
    traceback before the one line.  The stop itself is kept (``stop_asked``) and honoured."""
    script = textwrap.dedent(
        """
        import signal, threading
        from moodstream.cli import run, stop_asked

        # As a foreground command: a SIGINT ignored from the start (a shell's background job, as
        # the suite may run in) stays ignored under run(), and stop_asked() said None.
        signal.signal(signal.SIGINT, signal.default_int_handler)

        class Finalized:
            def __del__(self):
                # To this thread: delivered before pthread_kill returns, so its handler runs in
                # here, between bytecodes.
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                for _ in range(10_000):
                    pass

        def command():
            Finalized()  # gone at once: its __del__ runs, and the interrupt is lost there
            how = stop_asked()
            assert how == "Ctrl-C", how
            raise KeyboardInterrupt(how)  # what listen and analyze do where loading ends

        raise SystemExit(run(command))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "moodstream: stopped (Ctrl-C)\n"), done.stderr


def test_after_run_the_handlers_from_before_the_imports_are_back():
    """stop_while_importing's handlers end the process at once with exit 0: after the command
    (its teardown, a flush of piped output) a stop must not, so run() puts the earlier ones back."""
    from moodstream.cli import interrupt, run, stop_while_importing

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop_while_importing()
        for signum, handler in before.items():
            if handler is signal.SIG_IGN:  # SIGINT in a shell's background job: left ignored
                assert signal.getsignal(signum) is signal.SIG_IGN
            else:
                assert signal.getsignal(signum) not in (handler, interrupt)
        seen = []
        assert run(lambda: seen.append(signal.getsignal(signal.SIGTERM))) == 0
        assert seen == [interrupt]
        assert {signum: signal.getsignal(signum) for signum in before} == before
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
