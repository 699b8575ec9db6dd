"""Outputs: the feed's mood and status, spoken in the protocols lighting, VJ and DJ software read.

The ZeroMQ feed stays the contract; outputs hang off the same publish step (``listen``) or
read the feed from another machine (``bridge``).  Who does what:

- ``values``: a mood message as named values (valence, tag:NAME, colour:r...), their glide
  between hops, the mood colour, OSC-safe tag slugs;
- ``mapping``: routes (value -> destination through a scale), the defaults of every protocol,
  the ``--map`` TOML file and its schema (``map.schema.json``);
- ``base``: what outputs share (counters, state, non-blocking UDP, a queued sender thread);
- ``osc``, ``dmx`` (Art-Net, sACN), ``os2l``, ``midi``: one protocol each;
- ``hub``: one thread that hands every message to every output;
- ``options``: the command-line flags, shared by ``listen`` and ``bridge``.
"""

from realtime.outputs.base import Output, OutputError
from realtime.outputs.hub import Outputs
from realtime.outputs.mapping import MapError
from realtime.outputs.options import add_output_options, build_outputs, check_output_options

__all__ = [
    "MapError",
    "Output",
    "OutputError",
    "Outputs",
    "add_output_options",
    "build_outputs",
    "check_output_options",
]
