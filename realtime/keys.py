"""python -m realtime.keys DIR: CURVE key pairs for a feed that leaves this machine.

The feed binds to loopback by default and is then plain: only this machine can read it.  A
feed on a network (``--pub tcp://0.0.0.0:5556``) can be encrypted and authenticated with
ZeroMQ's CURVE:

- ``listen --curve-key DIR/server.key_secret``: the feed is encrypted; a subscriber must know
  the server's public key (``DIR/server.key``), so it also knows it talks to this analyzer;
- ``listen ... --curve-clients DIR/clients``: only subscribers whose public key file lies in
  that folder are let in (copy each ``client.key`` there); without it any subscriber that has
  the server's public key may read;
- ``subscribe --server-key DIR/server.key [--client-key DIR/client.key_secret]`` (``bridge``
  too): without ``--client-key`` the subscriber makes a throwaway key pair, enough when the
  analyzer admits any client.

Key files are ZeroMQ's certificate text format (``zmq.auth``): ``NAME.key`` holds the public
key, ``NAME.key_secret`` both keys (readable by its owner only).  Nothing here is unpickled.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import os
import re
import sys
from pathlib import Path

import zmq
import zmq.auth

from moodstream.cli import Parser, output_folder, run


class CurveError(ValueError):
    """A key file that is missing or not a ZeroMQ certificate, or a folder without client keys."""


def make_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """``folder/name.key`` (public) and ``folder/name.key_secret`` (mode 0600); never overwrites."""
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise CurveError(f"{path} exists; keys are never overwritten (remove it first)")
    folder.mkdir(parents=True, exist_ok=True)
    made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def _load(path: str | os.PathLike, what: str) -> tuple[bytes, bytes | None]:
    if not Path(path).is_file():
        raise CurveError(f"{what} {path}: no such file (make keys with python -m realtime.keys DIR)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as exc:
        raise CurveError(f"{what} {path}: {exc.strerror or exc}") from None
    except ValueError:  # zmq.auth: "No public key found"
        public, secret = None, None
    if public is None or len(public) != 40:
        raise CurveError(
            f"{what} {path} holds no ZeroMQ CURVE public key (make keys with python -m realtime.keys)"
        )
    return public, secret


def secret_pair(path: str | os.PathLike, what: str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``NAME.key_secret`` file."""
    public, secret = _load(path, what)
    if not secret:
        raise CurveError(f"{what} {path} holds no secret key: give the NAME.key_secret file")
    return public, secret


def public_key(path: str | os.PathLike, what: str) -> bytes:
    return _load(path, what)[0]


def check_clients(folder: str | os.PathLike) -> Path:
    """A folder holding at least one client public key (``*.key``)."""
    path = Path(folder)
    if not path.is_dir():
        raise CurveError(f"--curve-clients {path}: not a folder")
    keys = sorted(path.glob("*.key"))
    if not keys:
        raise CurveError(f"--curve-clients {path}: no client public keys (*.key) in it")
    for key in keys:
        public_key(key, "--curve-clients key")
    return path


def secure_subscriber(socket: zmq.Socket, server_key: str | None, client_key: str | None) -> None:
    """Make ``socket`` (not yet connected) a CURVE client of the server whose public key file is
    ``server_key``; its own pair from ``client_key`` (a ``.key_secret`` file) or a throwaway one."""
    if server_key is None:
        if client_key is not None:
            raise CurveError("--client-key needs --server-key (the analyzer's public key)")
        return
    socket.curve_serverkey = public_key(server_key, "--server-key")
    if client_key is not None:
        socket.curve_publickey, socket.curve_secretkey = secret_pair(client_key, "--client-key")
    else:
        socket.curve_publickey, socket.curve_secretkey = zmq.curve_keypair()


def add_subscriber_options(parser: argparse.ArgumentParser) -> None:
    """--server-key / --client-key, for every command that reads a feed."""
    g = parser.add_argument_group("an encrypted feed (CURVE; see python -m realtime.keys)")
    g.add_argument("--server-key", metavar="FILE", help="the analyzer's public key file (server.key)")
    g.add_argument(
        "--client-key",
        metavar="FILE",
        help="this subscriber's key pair (client.key_secret), when the analyzer admits listed clients only",
    )


# A key pair's name is part of its two files' names in DIR: "../x" wrote outside it, "" a hidden
# ".key", and a name with a slash would need folders.
_KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _key_name(text: str) -> str:
    if not _KEY_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a key name: letters, digits, '-', '_' and '.' (not first), as in 'vj-laptop'"
        )
    return text


def main(argv: list[str] | None = None, prog: str = "python -m realtime.keys") -> int:
    parser = Parser(
        prog=prog,
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folder",
        metavar="DIR",
        type=lambda text: Path(output_folder(text)),
        help="where to write the key files",
    )
    parser.add_argument(
        "--name",
        action="append",
        type=_key_name,
        metavar="NAME",
        help="a key pair to make (repeatable; default: server and client): letters, digits, '-', '_', '.'",
    )
    args = parser.parse_args(argv)
    if not zmq.has("curve"):
        print("error: this libzmq was built without CURVE support", file=sys.stderr)
        return 2
    try:
        for name in args.name or ("server", "client"):
            public, secret = make_pair(args.folder, name)
            print(f"{name}: public {public}, secret {secret}")
    except CurveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
