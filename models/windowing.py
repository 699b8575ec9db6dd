"""Where windows fall in a mel sequence: the one rule the engine and training both follow.

A window ends every ``hop_frames`` once the first full segment is in: ends at
``segment_frames + k * hop_frames`` (exclusive), for every end that the frames reach.
The engine applies it incrementally as frames stream in; ``train`` applies it to whole
tracks to score them by averaging their windows, exactly as ``realtime.analyze`` does.
"""

from __future__ import annotations


def hop_frames(hop_s: float, frame_rate_hz: float) -> int:
    """A hop in seconds as a whole number of mel frames (at least one)."""
    return max(1, round(hop_s * frame_rate_hz))


def window_starts(n_frames: int, segment_frames: int, hop: int) -> list[int]:
    """Start frame of every window of a track of ``n_frames`` frames."""
    if n_frames < segment_frames:
        return []
    return list(range(0, n_frames - segment_frames + 1, hop))
