"""Datasets as lists of tracks with per-head targets, and splits that keep a group on one side.

Every loader returns a ``TrackSet``: ``Track``s (key, audio path, group, targets per head) and
the ``HeadSpec`` of each head it supervises.  A group is what must not cross splits: the
artist where the dataset names one (4Q, MTG-Jamendo), otherwise the track.  Loaders validate
their files and fail with the file, line and value at fault; files listed but absent are
skipped and reported (``TrackSet.missing``, a warning, ``TrackSet.report()``) or, with
``on_missing="error"``, fatal.  If none of the listed files exists it is always an error
(a wrong root, not a few missing files).

Targets are float32 vectors:

- ``load_jamendo``: head "tags", the 56 MTG-Jamendo mood/theme tags (``JAMENDO_MOODTHEME``,
  official order), 0/1.
- ``load_4q``: head "valence_arousal", 0/1 *binary* targets: valence 1 in Q1/Q4 (positive),
  arousal 1 in Q1/Q2 (high), i.e. the probability the model's sigmoid estimates, whose
  published value 2p - 1 is then +-1; head "mood", the AllMusic moods of at least
  ``min_mood_count`` clips (alphabetical), 0/1.  ``info["va_targets"] = "binary"``.
- ``load_emotify``: head "gems", the fraction of a track's listeners who ticked each of the
  9 GEMS scales (soft targets in [0, 1]).
- ``load_va_table`` / ``load_folder_csv`` (valence/arousal form): head "valence_arousal",
  regression targets in [-1, 1] (``info["va_targets"] = "regression"``).  The presets:

  =========  ==========================================  ========================  =====  ==============
  preset     file                                        key, valence, arousal     scale  audio
  =========  ==========================================  ========================  =====  ==============
  deam       static_annotations_averaged_songs_*.csv     song_id, valence_mean,    1-9    MEMD_audio/
             (header written with spaces after commas)   arousal_mean                     {key}.mp3
  pmemo      static_annotations.csv                      musicId, Valence(mean),   0-1    chorus/
                                                         Arousal(mean)                    {key}.mp3
  1000songs  static_annotations.csv (Soleymani 2013)     song_id, mean_valence,    1-9    clips_45seconds/
                                                         mean_arousal                     {key}.mp3
  =========  ==========================================  ========================  =====  ==============

  ``audio_root`` is the folder in the last column; a value v on scale (lo, hi) becomes
  2·(v - lo)/(hi - lo) - 1, so the scale's midpoint (5, or 0.5) is neutral 0.  Other columns
  (the std columns) are ignored and listed in ``info["ignored_columns"]``.  None of these
  tables names an artist, so the group is the song, unless the table has a ``group`` column
  (e.g. an artist joined in from the dataset's metadata).

Splits (``grouped_split``, ``k_fold``) assign whole groups, balance each stratum
(``Track.stratum``: 4Q quadrant, Emotify genre, valence/arousal quadrant) over the parts,
and depend only on the tracks and the seed, not on their order.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.base import HeadSpec
from models.vocab import JAMENDO_MOODTHEME

VA_HEAD = HeadSpec("valence_arousal", ("valence", "arousal"))
JAMENDO_COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
JAMENDO_TAG_PREFIX = "mood/theme---"
JAMENDO_SUBSETS = ("train", "validation", "test")
FOURQ_COLUMNS = ("clip_id", "path", "artist", "title", "quadrant", "allmusic_moods", "genres")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")
QUADRANT_VA = {"Q1": (1.0, 1.0), "Q2": (0.0, 1.0), "Q3": (0.0, 0.0), "Q4": (1.0, 0.0)}  # (valence, arousal)
GEMS = (
    "amazement",
    "solemnity",
    "tenderness",
    "nostalgia",
    "calmness",
    "power",
    "joyful_activation",
    "tension",
    "sadness",
)
EMOTIFY_GENRES = ("classical", "rock", "electronic", "pop")
EMOTIFY_COLUMNS = ("track id", "genre", *GEMS, "mood", "liked", "disliked", "age", "gender", "mother tongue")
ON_MISSING = ("skip", "error")
MISSING_EXAMPLES = 5


class DatasetError(ValueError):
    """A dataset file that cannot be read as documented; the message names file, line and value."""


@dataclass(frozen=True)
class VAPreset:
    """Where a published valence/arousal table keeps its columns, and its rating scale."""

    key: str
    valence: str
    arousal: str
    scale: tuple[float, float]
    path_template: str = "{key}.mp3"


VA_PRESETS = {
    "deam": VAPreset("song_id", "valence_mean", "arousal_mean", (1.0, 9.0)),
    "pmemo": VAPreset("musicId", "Valence(mean)", "Arousal(mean)", (0.0, 1.0)),
    "1000songs": VAPreset("song_id", "mean_valence", "mean_arousal", (1.0, 9.0)),
}


@dataclass(frozen=True, eq=False)
class Track:
    """One audio file and what it is labelled with (targets are read-only float32 vectors)."""

    key: str  # stable id: track id, clip id or path
    path: Path  # audio file (or an official .npy mel for Jamendo's npy mode)
    group: str  # what must not cross splits: artist (4Q, Jamendo), track (Emotify, VA tables)
    targets: dict[str, np.ndarray]  # head name -> float32 (n_labels,)
    stratum: str = ""  # what splits balance: 4Q quadrant, Emotify genre, VA quadrant; "" for none

    def __post_init__(self) -> None:
        targets = {}
        for name, value in self.targets.items():
            array = np.array(value, dtype=np.float32)  # a copy: the caller's array stays writable
            array.setflags(write=False)
            targets[name] = array
        object.__setattr__(self, "targets", targets)


@dataclass
class TrackSet:
    """Tracks with targets for the same heads, and what the loader could not find."""

    name: str
    heads: dict[str, HeadSpec]
    tracks: list[Track]
    missing: list[str] = field(default_factory=list)  # listed but absent files, as listed
    info: dict[str, Any] = field(default_factory=dict)  # loader notes (vocabulary counts, …)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for track in self.tracks:
            if track.key in seen:
                raise DatasetError(f"{self.name}: track key {track.key!r} appears twice")
            seen.add(track.key)
            if set(track.targets) != set(self.heads):
                raise DatasetError(
                    f"{self.name}: track {track.key!r} has targets for {sorted(track.targets)}, "
                    f"the set's heads are {sorted(self.heads)}"
                )
            for head, spec in self.heads.items():
                if track.targets[head].shape != (len(spec.labels),):
                    raise DatasetError(
                        f"{self.name}: track {track.key!r} head {head!r} has shape "
                        f"{track.targets[head].shape}, expected ({len(spec.labels)},)"
                    )

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def groups(self) -> set[str]:
        return {t.group for t in self.tracks}

    def strata(self) -> dict[str, int]:
        """Tracks per stratum (4Q quadrant, Emotify genre, …), sorted by name; {} if none is set."""
        counts = Counter(t.stratum for t in self.tracks if t.stratum)
        return dict(sorted(counts.items()))

    def targets(self, head: str) -> np.ndarray:
        """(n_tracks, n_labels) float32 targets of one head, in track order."""
        if head not in self.heads:
            raise KeyError(f"{self.name} has no head {head!r}; heads: {', '.join(self.heads)}")
        n_labels = len(self.heads[head].labels)
        if not self.tracks:
            return np.zeros((0, n_labels), dtype=np.float32)
        return np.stack([t.targets[head] for t in self.tracks])

    def subset(self, tracks: Sequence[Track], name: str) -> TrackSet:
        """The same heads and loader notes over other tracks (missing files stay with the parent)."""
        # The notes describe the loaded set; "subset_of" says so.
        info = {**self.info, "subset_of": self.info.get("subset_of", self.name)}
        return TrackSet(name, dict(self.heads), list(tracks), [], info)

    def split(
        self,
        fractions: Sequence[float] = (0.8, 0.2),
        seed: int = 0,
        stratify: Callable[[Track], str] | None = None,
    ) -> list[TrackSet]:
        """``grouped_split(self, ...)``."""
        return grouped_split(self, fractions, seed, stratify)

    def k_fold(
        self, k: int, seed: int = 0, stratify: Callable[[Track], str] | None = None
    ) -> list[tuple[TrackSet, TrackSet]]:
        """``k_fold(self, k, seed)``."""
        return k_fold(self, k, seed, stratify)

    def report(self) -> str:
        """A few lines for a log: sizes, heads, notes, and missing files (count + examples)."""
        heads = ", ".join(f"{n} ({s.kind}, {len(s.labels)})" for n, s in self.heads.items())
        lines = [f"{self.name}: {len(self.tracks)} tracks, {len(self.groups)} groups; heads: {heads}"]
        if self.strata():
            lines.append(f"  strata: {self.strata()}")
        for key, value in self.info.items():
            if isinstance(value, dict) and len(value) > 12:
                value = f"{len(value)} entries"
            lines.append(f"  {key}: {value}")
        if self.missing:
            lines.append(f"  {_missing_summary(self.missing)}")
        return "\n".join(lines)


# -- reading ------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, row) of a comma-separated file, every cell stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), start=1)]
    rows = [(i, row) for i, row in rows if any(row)]
    if not rows:
        raise DatasetError(f"{path}: empty file")
    (_, header), body = rows[0], rows[1:]
    for i, row in body:
        if len(row) != len(header):
            raise DatasetError(f"{path}:{i}: {len(row)} fields, the header has {len(header)}")
    return header, body


def _check_columns(
    path: Path, header: Sequence[str], required: Sequence[str], allowed: Sequence[str]
) -> None:
    if len(set(header)) != len(header):
        dupes = sorted(c for c, n in Counter(header).items() if n > 1)
        raise DatasetError(f"{path}: duplicate columns {dupes}")
    unknown = [c for c in header if c not in allowed]
    if unknown:
        raise DatasetError(f"{path}: unknown columns {unknown}; expected {list(allowed)}")
    absent = [c for c in required if c not in header]
    if absent:
        raise DatasetError(f"{path}: missing columns {absent}; the header is {list(header)}")


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{line}: {column} is {text!r}")
    return value


def _missing_summary(missing: Sequence[str]) -> str:
    examples = ", ".join(missing[:MISSING_EXAMPLES])
    more = ", …" if len(missing) > MISSING_EXAMPLES else ""
    return f"{len(missing)} listed files missing, e.g. {examples}{more}"


def _keep_present(
    name: str, candidates: list[tuple[Path, Any]], on_missing: str, check: bool = True
) -> tuple[list[Any], list[str]]:
    """(path, item) pairs -> items whose file exists, and the missing paths (per ``on_missing``)."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
    if not check:
        return [item for _, item in candidates], []
    kept, missing = [], []
    for path, item in candidates:
        if path.is_file():
            kept.append(item)
        else:
            missing.append(str(path))
    if missing and (on_missing == "error" or not kept):
        none = "none of the listed files exists (wrong root?); " if not kept else ""
        raise FileNotFoundError(f"{name}: {none}{_missing_summary(missing)}")
    if missing:
        warnings.warn(f"{name}: skipping {_missing_summary(missing)}", stacklevel=3)
    return kept, missing


def _va_stratum(valence: float, arousal: float) -> str:
    """The circumplex quadrant of a [-1, 1] point (0 counts as positive/high)."""
    return {(True, True): "Q1", (False, True): "Q2", (False, False): "Q3", (True, False): "Q4"}[
        (valence >= 0, arousal >= 0)
    ]


# -- MTG-Jamendo -----------------------------------------------------------------------------


def load_jamendo(
    root: str | Path,
    split: int = 0,
    subset: str = "train",
    audio_root: str | Path | None = None,
    npy_root: str | Path | None = None,
    on_missing: str = "skip",
) -> TrackSet:
    """An official MTG-Jamendo mood/theme split (``root`` holds ``splits/split-N/``).

    Tracks point at ``audio_root/PATH`` (MP3) or at ``npy_root/PATH`` with ``.npy`` for
    ``.mp3`` (the official mels, see ``models.frontend.ESSENTIA_JAMENDO``); with neither,
    paths are the TSV's relative ``PATH``s, unchecked (metadata only).
    """
    if split not in range(5):
        raise ValueError(f"MTG-Jamendo splits are 0..4, got {split!r}")
    if subset not in JAMENDO_SUBSETS:
        raise ValueError(f"subset must be one of {JAMENDO_SUBSETS}, got {subset!r}")
    root = Path(root)
    official = root / "moodtheme_split.txt"
    if official.is_file():
        listed = tuple(t.strip().removeprefix(JAMENDO_TAG_PREFIX) for t in official.read_text().split())
        if listed != JAMENDO_MOODTHEME:
            raise DatasetError(f"{official} does not list models.vocab.JAMENDO_MOODTHEME in order")
    tsv = root / "splits" / f"split-{split}" / f"autotagging_moodtheme-{subset}.tsv"
    return load_jamendo_tsv(tsv, audio_root, npy_root, on_missing, name=f"jamendo-{split}-{subset}")


def load_jamendo_tsv(
    tsv: str | Path,
    audio_root: str | Path | None = None,
    npy_root: str | Path | None = None,
    on_missing: str = "skip",
    name: str | None = None,
) -> TrackSet:
    """Any TSV in the official format (see ``load_jamendo``); an unknown tag is an error."""
    tsv = Path(tsv)
    if audio_root is not None and npy_root is not None:
        raise ValueError("give audio_root (MP3s) or npy_root (official mels), not both")
    if not tsv.is_file():
        raise FileNotFoundError(f"no such file: {tsv}")
    lines = tsv.read_text(encoding="utf-8").splitlines()  # the official files end lines with \r\n
    if not lines or tuple(lines[0].split("\t")) != JAMENDO_COLUMNS:
        got = lines[0].split("\t") if lines else []
        raise DatasetError(f"{tsv}: header {got} is not the official {list(JAMENDO_COLUMNS)}")
    index = {tag: i for i, tag in enumerate(JAMENDO_MOODTHEME)}
    candidates: list[tuple[Path, Track]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            raise DatasetError(f"{tsv}:{number}: {len(fields)} fields, need 5 and at least one tag")
        track_id, artist_id, _album, rel_path, duration = fields[:5]
        if not track_id or not artist_id or not rel_path.endswith(".mp3"):
            raise DatasetError(f"{tsv}:{number}: bad track/artist id or PATH in {fields[:5]}")
        if track_id in seen:
            raise DatasetError(f"{tsv}:{number}: track {track_id} listed twice")
        seen.add(track_id)
        _number(tsv, number, "DURATION", duration)
        target = np.zeros(len(JAMENDO_MOODTHEME), dtype=np.float32)
        for tag in fields[5:]:
            short = tag.removeprefix(JAMENDO_TAG_PREFIX)
            if not tag.startswith(JAMENDO_TAG_PREFIX) or short not in index:
                raise DatasetError(
                    f"{tsv}:{number}: unknown tag {tag!r} (not one of the 56 mood/theme tags of "
                    "models.vocab.JAMENDO_MOODTHEME)"
                )
            target[index[short]] = 1.0
        if npy_root is not None:
            path = Path(npy_root) / (rel_path.removesuffix(".mp3") + ".npy")
        elif audio_root is not None:
            path = Path(audio_root) / rel_path
        else:
            path = Path(rel_path)
        candidates.append((path, Track(track_id, path, artist_id, {"tags": target})))
    name = name or tsv.stem
    check = audio_root is not None or npy_root is not None
    tracks, missing = _keep_present(name, candidates, on_missing, check)
    info = {"features": "npy" if npy_root is not None else "audio" if audio_root is not None else "none"}
    return TrackSet(name, {"tags": HeadSpec("tags", JAMENDO_MOODTHEME)}, tracks, missing, info)


# -- 4Q ------------------------------------------------------------------------------------


def load_4q(root: str | Path, min_mood_count: int = 20, on_missing: str = "skip") -> TrackSet:
    """The 4Q emotion dataset (``root/labels.csv``): quadrant -> binary valence/arousal, AllMusic moods.

    ``info["mood_counts"]`` holds the clip count of each mood kept (moods are counted over
    the clips found, each mood once per clip); clips none of whose moods is kept get an
    all-zero "mood" target.
    """
    if min_mood_count < 1:
        raise ValueError(f"min_mood_count must be at least 1, got {min_mood_count}")
    root = Path(root)
    csv_path = root / "labels.csv"
    header, rows = _read_csv(csv_path)
    _check_columns(csv_path, header, FOURQ_COLUMNS, FOURQ_COLUMNS)
    col = {c: i for i, c in enumerate(header)}
    seen: set[str] = set()
    candidates = []
    for number, row in rows:
        clip_id, rel_path, artist, quadrant = (row[col[c]] for c in ("clip_id", "path", "artist", "quadrant"))
        if not clip_id or not rel_path or not artist:
            raise DatasetError(f"{csv_path}:{number}: empty clip_id, path or artist")
        if clip_id in seen:
            raise DatasetError(f"{csv_path}:{number}: clip {clip_id} listed twice")
        seen.add(clip_id)
        if quadrant not in QUADRANTS:
            raise DatasetError(f"{csv_path}:{number}: quadrant {quadrant!r} is not one of {QUADRANTS}")
        moods = sorted({m.strip() for m in row[col["allmusic_moods"]].split(";")} - {""})
        candidates.append((root / rel_path, (clip_id, root / rel_path, artist, quadrant, moods)))
    kept, missing = _keep_present("4q", candidates, on_missing)
    counts = Counter(m for *_, moods in kept for m in moods)
    vocabulary = tuple(sorted(m for m, n in counts.items() if n >= min_mood_count))
    index = {m: i for i, m in enumerate(vocabulary)}
    tracks = []
    for clip_id, path, artist, quadrant, moods in kept:
        mood = np.zeros(len(vocabulary), dtype=np.float32)
        mood[[index[m] for m in moods if m in index]] = 1.0
        va = np.array(QUADRANT_VA[quadrant], dtype=np.float32)
        tracks.append(Track(clip_id, path, artist, {"valence_arousal": va, "mood": mood}, quadrant))
    info = {
        "va_targets": "binary",
        "moods": f"{len(vocabulary)} of {len(counts)} AllMusic moods on >= {min_mood_count} clips",
        "mood_counts": {m: counts[m] for m in vocabulary},
        "clips_without_kept_mood": sum(1 for t in tracks if not t.targets["mood"].any()),
    }
    heads = {"valence_arousal": VA_HEAD, "mood": HeadSpec("tags", vocabulary)}
    return TrackSet("4q", heads, tracks, missing, info)


# -- Emotify -------------------------------------------------------------------------------


def load_emotify(root: str | Path, on_missing: str = "skip") -> TrackSet:
    """Emotify (``root/ratings.csv``, one row per listener): GEMS fractions as soft targets.

    Audio is ``root/audio/<genre>/<track id>.ogg``; the stratum is the genre.
    """
    root = Path(root)
    csv_path = root / "ratings.csv"
    header, rows = _read_csv(csv_path)
    _check_columns(csv_path, header, ("track id", "genre", *GEMS), EMOTIFY_COLUMNS)
    col = {c: i for i, c in enumerate(header)}
    ticks: dict[int, np.ndarray] = {}
    raters: Counter[int] = Counter()
    genres: dict[int, str] = {}
    for number, row in rows:
        text, genre = row[col["track id"]], row[col["genre"]]
        if not text.isdigit():
            raise DatasetError(f"{csv_path}:{number}: track id {text!r} is not a number")
        track_id = int(text)
        if genre not in EMOTIFY_GENRES:
            raise DatasetError(f"{csv_path}:{number}: genre {genre!r} is not one of {EMOTIFY_GENRES}")
        if genres.setdefault(track_id, genre) != genre:
            raise DatasetError(f"{csv_path}:{number}: track {track_id} is {genres[track_id]}, here {genre}")
        values = [row[col[g]] for g in GEMS]
        bad = [(g, v) for g, v in zip(GEMS, values, strict=True) if v not in ("0", "1")]
        if bad:
            raise DatasetError(f"{csv_path}:{number}: GEMS values must be 0 or 1, got {bad}")
        ticks.setdefault(track_id, np.zeros(len(GEMS), dtype=np.int64))
        ticks[track_id] += np.array(values, dtype=np.int64)
        raters[track_id] += 1
    candidates = []
    for track_id in sorted(ticks):
        path = root / "audio" / genres[track_id] / f"{track_id}.ogg"
        gems = (ticks[track_id] / raters[track_id]).astype(np.float32)
        candidates.append((path, Track(str(track_id), path, str(track_id), {"gems": gems}, genres[track_id])))
    tracks, missing = _keep_present("emotify", candidates, on_missing)
    info = {
        "raters_per_track": (min(raters.values()), max(raters.values())),
    }
    return TrackSet("emotify", {"gems": HeadSpec("tags", GEMS)}, tracks, missing, info)


# -- valence/arousal tables and anything else ---------------------------------------------


def load_va_table(
    csv_path: str | Path,
    audio_root: str | Path,
    columns: tuple[str, str, str] = ("path", "valence", "arousal"),
    scale: tuple[float, float] = (-1.0, 1.0),
    preset: str | None = None,
    path_template: str = "{key}",
    on_missing: str = "skip",
    name: str | None = None,
) -> TrackSet:
    """A (key, valence, arousal) table -> "valence_arousal" regression targets in [-1, 1].

    ``columns`` names the key, valence and arousal columns; the audio is
    ``audio_root / path_template.format(key=...)``; values must lie on ``scale`` (lo, hi).
    A ``preset`` ("deam", "pmemo", "1000songs": see the module docstring) sets all three.
    """
    if preset is not None:
        if preset not in VA_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(VA_PRESETS)}")
        p = VA_PRESETS[preset]
        columns, scale, path_template = (p.key, p.valence, p.arousal), p.scale, p.path_template
    lo, hi = scale
    if not lo < hi:
        raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
    csv_path, audio_root = Path(csv_path), Path(audio_root)
    header, rows = _read_csv(csv_path)
    _check_columns(csv_path, header, columns, header)
    key_col, v_col, a_col = (header.index(c) for c in columns)
    group_col = header.index("group") if "group" in header and "group" not in columns else None
    seen: set[str] = set()
    candidates = []
    for number, row in rows:
        key = row[key_col]
        if not key:
            raise DatasetError(f"{csv_path}:{number}: empty {columns[0]}")
        if key in seen:
            raise DatasetError(f"{csv_path}:{number}: {columns[0]} {key!r} listed twice")
        seen.add(key)
        va = []
        for column, i in ((columns[1], v_col), (columns[2], a_col)):
            value = _number(csv_path, number, column, row[i])
            if not lo <= value <= hi:
                raise DatasetError(
                    f"{csv_path}:{number}: {column} {value:g} is outside the scale {lo:g}..{hi:g}"
                )
            va.append(2.0 * (value - lo) / (hi - lo) - 1.0)
        path = audio_root / path_template.format(key=key)
        group = row[group_col] if group_col is not None and row[group_col] else key
        track = Track(key, path, group, {"valence_arousal": np.array(va)}, _va_stratum(*va))
        candidates.append((path, track))
    name = name or preset or csv_path.stem
    tracks, missing = _keep_present(name, candidates, on_missing)
    ignored = [c for c in header if c not in columns and c != "group"]
    info = {"va_targets": "regression", "scale": (lo, hi), "columns": columns, "ignored_columns": ignored}
    return TrackSet(name, {"valence_arousal": VA_HEAD}, tracks, missing, info)


def load_folder_csv(
    csv_path: str | Path,
    audio_root: str | Path,
    vocabulary: Sequence[str] | None = None,
    on_missing: str = "skip",
) -> TrackSet:
    """Your own audio: a CSV of paths (relative to ``audio_root``) with tags or valence/arousal.

    The header says which (optionally with a ``group`` column, e.g. the artist, that splits
    keep together; without it each track is its own group):

    - ``path, tags``: multi-label, the tags of a track ``;``-separated (``happy; calm``), head
      "tags" over ``vocabulary`` (then any other tag is an error) or, without one, every tag
      that occurs, sorted.  An empty cell is a track with no tag.
    - ``path, valence, arousal``: values already in [-1, 1], head "valence_arousal"
      (other scales: ``load_va_table``).
    """
    csv_path = Path(csv_path)
    header, rows = _read_csv(csv_path)
    columns = set(header) - {"group"}
    if columns == {"path", "valence", "arousal"}:
        return load_va_table(csv_path, audio_root, on_missing=on_missing, name=csv_path.stem)
    if columns != {"path", "tags"}:
        raise DatasetError(
            f"{csv_path}: header {header} is neither (path, tags) nor (path, valence, arousal), "
            "each optionally with a group column"
        )
    audio_root = Path(audio_root)
    col = {c: i for i, c in enumerate(header)}
    parsed = []
    for number, row in rows:
        rel_path = row[col["path"]]
        if not rel_path:
            raise DatasetError(f"{csv_path}:{number}: empty path")
        tags = sorted({t.strip() for t in row[col["tags"]].split(";")} - {""})
        if vocabulary is not None:
            unknown = [t for t in tags if t not in vocabulary]
            if unknown:
                raise DatasetError(
                    f"{csv_path}:{number}: unknown tags {unknown}; vocabulary: {list(vocabulary)}"
                )
        group = row[col["group"]] if "group" in col and row[col["group"]] else rel_path
        parsed.append((number, rel_path, group, tags))
    labels = (
        tuple(vocabulary)
        if vocabulary is not None
        else tuple(sorted({t for *_, tags in parsed for t in tags}))
    )
    index = {t: i for i, t in enumerate(labels)}
    seen: set[str] = set()
    candidates = []
    for number, rel_path, group, tags in parsed:
        if rel_path in seen:
            raise DatasetError(f"{csv_path}:{number}: path {rel_path!r} listed twice")
        seen.add(rel_path)
        target = np.zeros(len(labels), dtype=np.float32)
        target[[index[t] for t in tags]] = 1.0
        path = audio_root / rel_path
        candidates.append((path, Track(rel_path, path, group, {"tags": target})))
    tracks, missing = _keep_present(csv_path.stem, candidates, on_missing)
    return TrackSet(csv_path.stem, {"tags": HeadSpec("tags", labels)}, tracks, missing, {})


# -- splits ----------------------------------------------------------------------------------


def _part_names(n: int) -> list[str]:
    if n == 2:
        return ["train", "validation"]
    if n == 3:
        return ["train", "validation", "test"]
    return [f"part{i}" for i in range(n)]


def _assign_groups(
    trackset: TrackSet, fractions: Sequence[float], seed: int, stratify: Callable[[Track], str] | None
) -> list[list[Track]]:
    """Whole groups dealt to parts so that each stratum's tracks follow ``fractions``."""
    stratum_of = stratify or (lambda t: t.stratum)
    members: dict[str, list[Track]] = defaultdict(list)
    for track in trackset.tracks:
        members[track.group].append(track)
    # A group goes with its most common stratum (ties: the first by name).
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group in sorted(members):
        counts = Counter(stratum_of(t) for t in members[group])
        by_stratum[min(counts, key=lambda s: (-counts[s], s))].append(group)
    rng = np.random.default_rng(seed)
    parts: list[list[Track]] = [[] for _ in fractions]
    for stratum in sorted(by_stratum):
        groups = [by_stratum[stratum][i] for i in rng.permutation(len(by_stratum[stratum]))]
        groups.sort(key=lambda g: -len(members[g]))  # stable: big groups first, random among equals
        total = sum(len(members[g]) for g in groups)
        filled = [0] * len(fractions)
        for group in groups:
            # The part furthest below its share of this stratum takes the group.
            best = min(range(len(fractions)), key=lambda i: (filled[i] / (fractions[i] * total), i))
            filled[best] += len(members[group])
            parts[best].extend(members[group])
    order = {id(t): i for i, t in enumerate(trackset.tracks)}
    return [sorted(p, key=lambda t: order[id(t)]) for p in parts]


def grouped_split(
    trackset: TrackSet,
    fractions: Sequence[float] = (0.8, 0.2),
    seed: int = 0,
    stratify: Callable[[Track], str] | None = None,
) -> list[TrackSet]:
    """Split into parts of about ``fractions`` of the tracks, no group in two parts.

    Named ``<set>:train``/``validation`` for two fractions, ``…/test`` for three.  Each
    stratum (``Track.stratum`` or ``stratify(track)``) is divided in the same fractions, so
    e.g. 4Q's quadrants stay balanced.  The result depends only on the tracks and ``seed``.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) < 2 or any(f <= 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be two or more positive numbers summing to 1, got {fractions}")
    parts = _assign_groups(trackset, fractions, seed, stratify)
    if not all(parts):
        raise ValueError(f"{trackset.name}: {len(trackset.groups)} groups cannot fill {len(fractions)} parts")
    names = _part_names(len(fractions))
    return [trackset.subset(p, f"{trackset.name}:{n}") for p, n in zip(parts, names, strict=True)]


def k_fold(
    trackset: TrackSet, k: int, seed: int = 0, stratify: Callable[[Track], str] | None = None
) -> list[tuple[TrackSet, TrackSet]]:
    """k (train, validation) pairs; each group is in exactly one validation fold, strata balanced."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(trackset.groups) < k:
        raise ValueError(f"{trackset.name} has {len(trackset.groups)} groups, fewer than k = {k}")
    parts = _assign_groups(trackset, [1.0 / k] * k, seed, stratify)
    folds = []
    for i in range(k):
        held = {id(t) for t in parts[i]}
        train = [t for t in trackset.tracks if id(t) not in held]
        folds.append(
            (
                trackset.subset(train, f"{trackset.name}:fold{i}-train"),
                trackset.subset(parts[i], f"{trackset.name}:fold{i}-validation"),
            )
        )
    return folds
