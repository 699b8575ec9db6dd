"""What an Ogg file's pages say that libsndfile does not: its chains, and its damaged stretches.

An Ogg file is a sequence of pages, each with a 27-byte header ("OggS", version 0, a header type,
the granule position, the stream's serial number, the page's number, its CRC-32, the segment
count) and a segment table giving the body's length.  libsndfile reads the first chain of a
chained file alone, and decodes past a garbled stretch of Ogg Opus at its full length, without a
word in either case (``realtime.sources``: ``open_file`` and ``FileSource`` act on what this finds).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import zlib
from collections.abc import Iterator

# The start of a page: "OggS" and version 0.
_PAGE = re.compile(rb"OggS\x00")
# The start of a page that begins a logical stream: a header type with the beginning-of-stream bit
# (0x02; with or without continued 0x01 and end-of-stream 0x04).
_BOS_PAGE = re.compile(rb"OggS\x00[\x02\x03\x06\x07]")
HEADER_BYTES = 27  # up to the segment count; the segment table, one byte a segment, follows
_CRC_AT = 22  # the page's CRC-32, little-endian, computed with these 4 bytes zeroed
# Ogg's CRC-32 is zlib's polynomial without zlib's bit reflection, initial value or final xor:
# zlib computes it on the bytes' bits reversed, and the result's bits are reversed back.
_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _sound(page: bytes) -> bool:
    """Whether the page's checksum is right."""
    blanked = page[:_CRC_AT] + bytes(4) + page[_CRC_AT + 4 :]
    raw = zlib.crc32(blanked.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF  # zlib's, unwound
    return int(f"{raw:032b}"[::-1], 2) == int.from_bytes(page[_CRC_AT : _CRC_AT + 4], "little")


def _page_bytes(data, start: int) -> int | None:
    """The length of the page whose header starts at ``start``; None if the file ends inside it."""
    segments_at = start + HEADER_BYTES
    if segments_at > len(data):
        return None
    n_segments = data[segments_at - 1]
    end = segments_at + n_segments
    if end > len(data):
        return None
    end += sum(data[segments_at:end])
    return end - start if end <= len(data) else None


@contextlib.contextmanager
def _mapped(path: str | os.PathLike) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped (read as they are needed, not copied)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # mmap refuses an empty file
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def chains(path: str | os.PathLike) -> int:
    """How many chains the file holds: groups of streams one after another in the file.

    A chain begins with the beginning-of-stream pages of its streams, one after the other (Vorbis
    alone: one page; with a video or a skeleton: several); a second group, after some audio, is
    the next recording.  Found by a search for those pages (~0.4 s a GB from the page cache),
    not a walk page by page: the 5 bytes and a flag turn up by chance inside compressed audio
    about once in 10^13 bytes, and would only send the file to ffmpeg, which reads it as well.
    """
    with _mapped(path) as data:
        found, group_end = 0, -1
        for match in _BOS_PAGE.finditer(data):
            start = match.start()
            size = _page_bytes(data, start)
            if size is None:  # cut off
                break
            if start != group_end:  # not right after the last beginning: a new group
                found += 1
            group_end = start + size
        return found


def damaged_stretches(path: str | os.PathLike) -> int:
    """How many stretches of the file are not whole pages with their checksums right.

    Walked page by page: a page whose checksum fails, or bytes that are no page (a page's header
    garbled, or the file cut off inside its last page), begin a damaged stretch, which ends at the
    next sound page.  An intact file is 0.  ~10 ms for 10 minutes of Opus at 64 kbit/s (~1000
    pages of a few KB, each checked by zlib).
    """
    with _mapped(path) as data:
        stretches, at, in_damage = 0, 0, False
        while at < len(data):
            match = _PAGE.search(data, at)
            start = len(data) if match is None else match.start()
            if start > at and not in_damage:  # bytes that are no page
                stretches, in_damage = stretches + 1, True
            if match is None:
                break
            size = _page_bytes(data, start)
            if size is not None and _sound(bytes(data[start : start + size])):
                at, in_damage = start + size, False
                continue
            if not in_damage:
                stretches, in_damage = stretches + 1, True
            at = start + 1  # look for the next page inside this one: its length may be garbled too
        return stretches
