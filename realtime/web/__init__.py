"""The live web view: a page that shows the mood, served beside the feed.

``listen --web [HOST:]PORT`` serves it from the engine's own messages; ``python -m realtime.view``
serves it from any running analyzer's feed.  The server (``realtime.web.server``, aiohttp) is
imported only when a view is asked for: parsing ``--web`` here costs nothing.
"""

from __future__ import annotations

import argparse
import ipaddress

DEFAULT_HOST = "127.0.0.1"  # loopback unless the user names another host, as for --pub


class WebError(RuntimeError):
    """The view cannot be served: bad address, port in use, or a host that does not resolve."""


def web_address(text: str) -> tuple[str, int]:
    """``--web [HOST:]PORT`` -> (host, port); HOST defaults to loopback.  "[::1]:8080" for IPv6."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif not host or ":" in host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [HOST:]PORT (e.g. 8080, 0.0.0.0:8080 or [::1]:8080)"
        )
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_web_option(parser: argparse.ArgumentParser, group_title: str = "web view") -> None:
    group = parser.add_argument_group(group_title)
    group.add_argument(
        "--web",
        type=web_address,
        metavar="[HOST:]PORT",
        help=f"serve a live web view of the mood on this port (host {DEFAULT_HOST} unless named: "
        "0.0.0.0 lets other machines watch); open the URL it prints in a browser",
    )
