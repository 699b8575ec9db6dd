"""python -m bench: latency, end-to-end lag and scale on the machine at hand.

python -m bench latency [--models default,musicnn-msd|all] [--backends torch,onnx,compile]
                        [--alternatives MODEL|none] [--device cpu|cuda] [--seconds N]
                        [--json OUT] [--plot OUT.png]
python -m bench e2e     [--models default] [--sources file,device] [--seconds 180] ...
python -m bench scale   [--model default] [--max-streams N] [--layout processes|threads] ...
python -m bench soak    [--hours H | --minutes M] [--paced] [--model default] ...
python -m bench reaction [--models default] [--smooth 2] [--dwell 0,2,4,6] [--pairs 8] ...
python -m bench edges   (musicnn's window edges: zero padding or the stream's context, against the original)

Each subcommand prints a table and (all but edges) can write JSON (--json) and a PNG chart (--plot);
`python -m bench COMMAND --help` explains its options.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before the imports that load torch: a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse

from bench import e2e, edges, latency, reaction, scale, soak
from moodstream.cli import Parser, run

# Each module owns its subcommand: add_parser(subparsers) registers it and sets `func`.
COMMANDS = (latency, e2e, scale, soak, reaction, edges)


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    parser = Parser(
        prog=prog,
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(run(main))
