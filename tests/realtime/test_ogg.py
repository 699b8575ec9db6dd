"""``realtime.ogg`` on real Ogg files: the shared 4Q clips (Opus) and Vorbis made by ffmpeg."""

from __future__ import annotations

import subprocess

import pytest

from realtime import ogg


@pytest.fixture(scope="module")
def opus_clips(shared_data) -> list[bytes]:
    """Three 4Q clips, as their files hold them (Ogg Opus, 30 s each)."""
    return [path.read_bytes() for path in sorted((shared_data / "4q" / "audio" / "Q2").glob("*.ogg"))[:3]]


def test_every_shared_clip_is_one_chain_whose_pages_are_all_sound(shared_data):
    """737 files from another encoder than ffmpeg's: every page's checksum is right (so the CRC is
    Ogg's, not zlib's), and each holds one recording."""
    clips = sorted((shared_data / "4q" / "audio").glob("*/*.ogg"))
    assert len(clips) > 700
    assert [(ogg.chains(clip), ogg.damaged_stretches(clip)) for clip in clips] == [(1, 0)] * len(clips)


def test_recordings_joined_are_chains_and_streams_side_by_side_are_one(opus_clips, music_clip, tmp_path):
    joined = tmp_path / "joined.ogg"
    joined.write_bytes(b"".join(opus_clips))
    assert (ogg.chains(joined), ogg.damaged_stretches(joined)) == (3, 0)
    # Two streams in one recording (as audio beside video or a skeleton): their beginning-of-stream
    # pages come one after the other, one chain.
    two_streams = tmp_path / "two-streams.ogg"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(music_clip), "-t", "2", "-c:a", "libvorbis",
         "-map", "0:a", "-map", "0:a", str(two_streams)],
        check=True,
    )  # fmt: skip
    assert two_streams.read_bytes().count(b"OggS\x00\x02") == 2 and ogg.chains(two_streams) == 1
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    assert (ogg.chains(empty), ogg.damaged_stretches(empty)) == (0, 0)


def test_each_damaged_stretch_is_counted_once(opus_clips, tmp_path):
    clip = opus_clips[0]
    n = len(clip)

    def stretches(data: bytes | bytearray) -> int:
        path = tmp_path / "damaged.ogg"
        path.write_bytes(bytes(data))
        return ogg.damaged_stretches(path)

    flipped = bytearray(clip)
    flipped[n // 2] ^= 0x55  # one byte of audio: its page's checksum fails
    zeroed = bytearray(clip)
    zeroed[n // 3 : n // 3 + n // 10] = bytes(n // 10)  # a tenth, pages' headers and all
    both = bytearray(zeroed)
    both[3 * n // 4] ^= 0x55
    header = bytearray(clip)
    header[clip.index(b"OggS", n // 2) + 26] ^= 0xFF  # a page's segment count: its length is wrong
    assert [stretches(d) for d in (clip, flipped, zeroed, both, header)] == [0, 1, 1, 2, 1]
    assert stretches(clip[: n - 100]) == 1  # cut off inside its last page
    assert stretches(clip + b"\0" * 10) == 1  # bytes after the last page
