"""The output flags shared by ``listen`` and ``bridge``, checked at parse time, and the outputs they build."""

from __future__ import annotations

import argparse
import re
import sys

from realtime.options import refuse
from realtime.outputs.base import Output, OutputError, resolve_udp
from realtime.outputs.dmx import ARTNET_PORT, SACN_PORT, ArtNetOutput, SacnOutput, check_universe
from realtime.outputs.hub import Outputs
from realtime.outputs.mapping import (
    DEFAULT_OSC_PREFIX,
    KINDS,
    MIDI_STATE_CC,
    MapError,
    MapFile,
    check_dmx_start,
    default_routes,
)
from realtime.outputs.values import MOOD_STATES

MAX_OUTPUT_RATE_HZ = 100.0  # DMX refreshes at most ~44 times a second; more only costs CPU
OUTPUT_FLAGS = ("osc", "artnet", "sacn", "os2l", "midi")


def host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``), or ``HOST`` alone when there is a ``default_port``."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:7700), got {text!r}")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    if port is None:
        if default_port is None:
            raise argparse.ArgumentTypeError(f"{text!r} has no port: expected HOST:PORT, e.g. 127.0.0.1:7700")
        return host, default_port
    if not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} of {text!r} is outside 1..65535")
    return host, int(port)


def _osc_target(text: str):
    return host_port(text)


def _artnet_target(text: str):
    return host_port(text, ARTNET_PORT)


def _sacn_target(text: str):
    if text.strip().lower() == "multicast":
        return None, SACN_PORT
    return host_port(text, SACN_PORT)


def _os2l_target(text: str):
    if text == "auto" or text.startswith("auto:"):
        return None, text.partition(":")[2]  # browse DNS-SD; names containing this
    return host_port(text)


def _osc_prefix(text: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9_\-.]+)+/?", text):
        raise argparse.ArgumentTypeError(f"expected an OSC path like /moodstream, got {text!r}")
    return text.rstrip("/")


def _positive_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of sends per second, got {text!r}") from None
    if not 0 < rate <= MAX_OUTPUT_RATE_HZ:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, {MAX_OUTPUT_RATE_HZ:g}] sends per second")
    return rate


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def add_output_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "outputs for lighting, VJ and DJ software (repeatable; README: 'Drive your lights')"
    )
    g.add_argument("--osc", action="append", type=_osc_target, default=[], metavar="HOST:PORT",
                   help="send OSC over UDP: /moodstream/valence, .../arousal (-1..1), .../valence/norm, "
                   ".../arousal/norm (0..1), .../tag/<tag> (0..1), .../active/<tag> (1/0 on change), "
                   ".../top (string), .../silent (1/0), .../state (the mood state, a string), .../state/<state> (1/0)")  # fmt: skip
    g.add_argument("--osc-prefix", type=_osc_prefix, default=DEFAULT_OSC_PREFIX, metavar="PATH",
                   help=f"first part of every default OSC address (default {DEFAULT_OSC_PREFIX})")  # fmt: skip
    g.add_argument("--artnet", action="append", type=_artnet_target, default=[], metavar="HOST[:PORT]",
                   help=f"send the DMX universe over Art-Net (port {ARTNET_PORT}; a broadcast address works)")  # fmt: skip
    g.add_argument("--sacn", action="append", type=_sacn_target, default=[], metavar="HOST[:PORT]",
                   help=f"send the DMX universe over sACN/E1.31 (port {SACN_PORT}); 'multicast' sends to "
                   "the universe's multicast group")  # fmt: skip
    g.add_argument("--dmx-universe", type=_int_arg, metavar="N",
                   help="DMX universe (default 0 for Art-Net, 1 for sACN, which has no universe 0)")  # fmt: skip
    g.add_argument("--dmx-start", type=_int_arg, default=1, metavar="CH",
                   help="first DMX channel of the default layout: R, G, B of the mood colour, white (0), "
                   "valence, arousal (0..255), silent (255/0) (default 1)")  # fmt: skip
    g.add_argument("--os2l", action="append", type=_os2l_target, default=[], metavar="HOST:PORT|auto",
                   help="send OS2L over TCP to lighting software (QLC+ listens on 9996): cmd 1 valence, "
                   "cmd 2 arousal (0..1), a btn per tag turning on/off and one per mood state ('state <state>'); auto "
                   "finds it by DNS-SD")  # fmt: skip
    g.add_argument("--midi", action="append", default=[], metavar="NAME",
                   help="open a virtual MIDI output port NAME: CC 1 valence, CC 2 arousal (0..127), "
                   f"CC {MIDI_STATE_CC}-{MIDI_STATE_CC + len(MOOD_STATES) - 1} the mood states (127 while it is the state: "
                   f"{', '.join(MOOD_STATES)}), channel 1")  # fmt: skip
    g.add_argument("--map", metavar="FILE",
                   help="TOML file choosing which values go to which address, channel, command or CC, "
                   "with ranges and curves (a commented example: examples/moods.toml)")  # fmt: skip
    g.add_argument("--output-rate", type=_positive_rate, metavar="HZ",
                   help="resend the outputs this many times a second, values gliding in a straight line "
                   "from where they stand to the feed's newest, there a hop later (default: once per hop)")  # fmt: skip


def check_output_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag checks and the map file's own checks; exits through ``parser.error``."""
    chosen = [flag for flag in OUTPUT_FLAGS if getattr(args, flag)]
    dmx = args.artnet or args.sacn
    if args.dmx_universe is not None and not dmx:
        parser.error("--dmx-universe applies to --artnet and --sacn")
    if args.dmx_start != 1 and not dmx:
        parser.error("--dmx-start applies to --artnet and --sacn")
    if args.osc_prefix != DEFAULT_OSC_PREFIX and not args.osc:
        parser.error("--osc-prefix applies to --osc")
    if (args.map or args.output_rate) and not chosen:
        parser.error(
            f"--{'map' if args.map else 'output-rate'} needs an output (--osc, --artnet, --sacn, --os2l or --midi)"
        )
    try:
        check_dmx_start(args.dmx_start)
        # Here, not only where the outputs are made: after the model has loaded, seconds later.
        for kind in ("artnet", "sacn") if args.dmx_universe is not None else ():
            if getattr(args, kind):
                check_universe(kind, args.dmx_universe)
        args.map_file = MapFile(args.map) if args.map else None
        check_targets(args)
    except (MapError, OutputError) as exc:
        refuse(str(exc))
    used = {"osc": args.osc, "dmx": dmx, "os2l": args.os2l, "midi": args.midi}
    for kind in KINDS:
        if args.map_file and kind in args.map_file.data and not used[kind]:
            flag = "--artnet or --sacn" if kind == "dmx" else f"--{kind}"
            print(f"warning: {args.map}: [{kind}] is unused without {flag}", file=sys.stderr)


def check_targets(args: argparse.Namespace) -> None:
    """The outputs' hosts resolve and a MIDI system answers, as when the outputs are made: a typo
    or a missing JACK server is said as the options are read, not after the model has loaded
    (seconds later).  OutputError, in the words the outputs use."""
    for host, port in (*args.osc, *args.artnet, *args.sacn):
        if host is not None:  # sACN without a host: its universe's multicast group
            resolve_udp(host, port)
    if args.midi:
        from realtime.outputs.midi import open_virtual_port  # rtmidi loads only when asked for

        try:
            open_virtual_port(None)
        except OSError as exc:
            raise OutputError(f"--midi {args.midi[0]}: {exc}") from None


def build_outputs(
    args: argparse.Namespace, tags: list[str], source_name: str = "moodstream"
) -> Outputs | None:
    """The outputs the flags name, for a feed with these ``tags``; None without any.

    Raises ``OutputError`` (or ``MapError``: a tag the model does not have) with one line to show.
    """
    if not any(getattr(args, flag) for flag in OUTPUT_FLAGS):
        return None
    from realtime.outputs.midi import MidiOutput  # rtmidi loads only when asked for
    from realtime.outputs.os2l import Os2lOutput
    from realtime.outputs.osc import OscOutput

    def routes(kind: str):
        defaults = default_routes(kind, osc_prefix=args.osc_prefix, dmx_start=args.dmx_start)
        return args.map_file.routes(kind, defaults, tags) if args.map_file else defaults

    made: list[Output] = []
    try:
        for host, port in args.osc:
            made.append(OscOutput(host, port, routes("osc")))
        for host, port in args.artnet:
            universe = 0 if args.dmx_universe is None else args.dmx_universe
            made.append(ArtNetOutput(host, port, universe, routes("dmx")))
        for host, port in args.sacn:
            universe = 1 if args.dmx_universe is None else args.dmx_universe
            made.append(SacnOutput(host, port, universe, routes("dmx"), source_name))
        for host, port_or_name in args.os2l:
            if host is None:
                made.append(Os2lOutput(None, None, routes("os2l"), browse_name=port_or_name))
            else:
                made.append(Os2lOutput(host, port_or_name, routes("os2l")))
        for name in args.midi:
            made.append(MidiOutput(name, routes("midi")))
    except (OutputError, MapError):
        for output in made:
            output.close()
        raise
    return Outputs(made, rate_hz=args.output_rate, tags=tags or ())
