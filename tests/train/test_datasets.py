"""Dataset loaders on the real label files in ../shared/data, and grouped splits that keep groups apart."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from models.vocab import JAMENDO_MOODTHEME
from train.datasets import (
    EMOTIFY_GENRES,
    GEMS,
    QUADRANTS,
    DatasetError,
    TrackSet,
    grouped_split,
    k_fold,
    load_4q,
    load_emotify,
    load_folder_csv,
    load_jamendo,
    load_va_table,
)


@pytest.fixture(scope="module")
def fourq(shared_data) -> TrackSet:
    return load_4q(shared_data / "4q")


@pytest.fixture(scope="module")
def emotify(shared_data) -> TrackSet:
    return load_emotify(shared_data / "emotify")


def _assert_partition(whole: TrackSet, parts: list[TrackSet]) -> None:
    """Every track in exactly one part, and no group in two parts."""
    keys = [t.key for p in parts for t in p.tracks]
    assert sorted(keys) == sorted(t.key for t in whole.tracks)
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            assert not a.groups & b.groups, f"groups in {a.name} and {b.name}"


# -- 4Q ------------------------------------------------------------------------------------


def test_4q_sizes_and_files(fourq):
    assert len(fourq) == 737 and not fourq.missing
    assert len(fourq.groups) == 542  # artists (the labels name 542 distinct artists)
    assert fourq.strata() == {"Q1": 192, "Q2": 174, "Q3": 188, "Q4": 183}
    assert all(t.path.is_file() for t in fourq.tracks)
    first = fourq.tracks[0]
    assert (first.key, first.group, first.stratum) == ("MT0000011357", "Dismember", "Q2")
    assert first.path.parts[-3:] == ("audio", "Q2", "MT0000011357.ogg")


def test_4q_valence_arousal_follow_the_quadrant(fourq):
    assert fourq.heads["valence_arousal"].labels == ("valence", "arousal")
    expected = {"Q1": (1, 1), "Q2": (0, 1), "Q3": (0, 0), "Q4": (1, 0)}  # positive valence: Q1/Q4
    for t in fourq.tracks:
        assert tuple(t.targets["valence_arousal"]) == expected[t.stratum]
        assert t.targets["valence_arousal"].dtype == np.float32
    assert fourq.info["va_targets"] == "binary"


def test_4q_mood_vocabulary_keeps_moods_of_at_least_20_clips(fourq):
    labels = fourq.heads["mood"].labels
    counts = fourq.info["mood_counts"]
    assert len(labels) == 100 and labels == tuple(sorted(labels)) and set(counts) == set(labels)
    assert counts["Gloomy"] == 78 and counts["Sad"] == 76 and counts["Urgent"] == 20
    # 19 clips: out.  "Warm" is listed twice on one clip; it counts once.
    assert "Dramatic" not in labels and "Warm" not in labels
    np.testing.assert_array_equal(fourq.targets("mood").sum(axis=0), [counts[m] for m in labels])
    first = dict(zip(labels, fourq.tracks[0].targets["mood"], strict=True))  # Negative; Nervous; Jittery
    assert {m for m, v in first.items() if v} == {"Negative", "Nervous", "Jittery"}
    assert fourq.info["clips_without_kept_mood"] == 12


def test_4q_min_mood_count(shared_data):
    strict = load_4q(shared_data / "4q", min_mood_count=60)
    assert strict.heads["mood"].labels == (
        "Bitter",
        "Bleak",
        "Calm",
        "Gloomy",
        "Harsh",
        "Joyous",
        "Peaceful",
        "Sad",
    )
    assert "8 of 215" in strict.info["moods"]


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.7, 0.15, 0.15)])
def test_4q_grouped_split_keeps_artists_apart_and_quadrants_balanced(fourq, fractions):
    parts = grouped_split(fourq, fractions, seed=0)
    assert [p.name.split(":")[1] for p in parts] == ["train", "validation", "test"][: len(fractions)]
    _assert_partition(fourq, parts)
    for part, fraction in zip(parts, fractions, strict=True):
        assert len(part) == pytest.approx(fraction * len(fourq), abs=8)
        for q in QUADRANTS:
            n = sum(t.stratum == q for t in part.tracks)
            assert n == pytest.approx(fraction * fourq.strata()[q], abs=4)


def test_4q_split_is_deterministic_and_order_free(fourq):
    keys = [[t.key for t in p.tracks] for p in fourq.split((0.8, 0.2), seed=7)]
    assert keys == [[t.key for t in p.tracks] for p in fourq.split((0.8, 0.2), seed=7)]
    shuffled = list(fourq.tracks)
    random.Random(1).shuffle(shuffled)
    again = grouped_split(fourq.subset(shuffled, "4q"), (0.8, 0.2), seed=7)
    assert [sorted(t.key for t in p.tracks) for p in again] == [sorted(k) for k in keys]
    other = [t.key for t in fourq.split((0.8, 0.2), seed=8)[1].tracks]
    assert other != keys[1]


def test_4q_k_fold(fourq):
    folds = k_fold(fourq, 5, seed=0)
    _assert_partition(fourq, [validation for _, validation in folds])
    for train, validation in folds:
        _assert_partition(fourq, [train, validation])
        assert len(validation) == pytest.approx(len(fourq) / 5, abs=6)


def test_4q_bad_files(tmp_path):
    header = "clip_id,path,artist,title,quadrant,allmusic_moods,genres\n"
    (tmp_path / "labels.csv").write_text(header + "c1,a.ogg,X,T,Q5,Sad,Pop\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: quadrant 'Q5'"):
        load_4q(tmp_path)
    (tmp_path / "labels.csv").write_text(
        header.replace("genres", "genres,bpm") + "c1,a.ogg,X,T,Q1,Sad,Pop,120\n"
    )
    with pytest.raises(DatasetError, match=r"unknown columns \['bpm'\]"):
        load_4q(tmp_path)
    (tmp_path / "labels.csv").write_text(header + "c1,a.ogg,X,T,Q1,Sad,Pop\n")
    with pytest.raises(FileNotFoundError, match="none of the listed files"):
        load_4q(tmp_path)


# -- Emotify -------------------------------------------------------------------------------


def test_emotify_tracks_and_soft_targets(emotify):
    assert len(emotify) == 400 and len(emotify.groups) == 400 and not emotify.missing
    assert emotify.heads["gems"].labels == GEMS
    assert all(t.path.is_file() for t in emotify.tracks)
    assert emotify.strata() == {"classical": 100, "electronic": 100, "pop": 100, "rock": 100}
    gems = emotify.targets("gems")
    assert gems.shape == (400, 9) and gems.min() >= 0 and gems.max() <= 1


def test_emotify_hand_checked_track(emotify):
    # ratings.csv, track 101 (rock): 50 listeners; ticks counted with awk, in GEMS order.
    track = next(t for t in emotify.tracks if t.key == "101")
    assert track.stratum == "rock" and track.path.parts[-3:] == ("audio", "rock", "101.ogg")
    np.testing.assert_allclose(
        track.targets["gems"], np.array([1, 13, 9, 15, 5, 13, 10, 12, 15]) / 50, rtol=1e-6
    )


def test_emotify_split_balances_genres(emotify):
    parts = emotify.split((0.8, 0.2), seed=0)
    _assert_partition(emotify, parts)
    assert [p.strata() for p in parts] == [{g: n for g in EMOTIFY_GENRES} for n in (80, 20)]


def test_emotify_strips_cells_and_checks_values(tmp_path):
    (tmp_path / "audio" / "pop").mkdir(parents=True)
    (tmp_path / "audio" / "pop" / "7.ogg").write_bytes(b"")
    header = "track id, genre, " + ", ".join(GEMS) + ", mood\n"
    (tmp_path / "ratings.csv").write_text(
        header + " 7, pop,1,0,0,0,0,0,0,0,1, 3\n7,pop,1,1,0,0,0,0,0,0,0,2\n"
    )
    (track,) = load_emotify(tmp_path).tracks
    np.testing.assert_allclose(track.targets["gems"], [1, 0.5, 0, 0, 0, 0, 0, 0, 0.5])
    (tmp_path / "ratings.csv").write_text(header + "7,pop,2,0,0,0,0,0,0,0,1,3\n")
    with pytest.raises(
        DatasetError, match=r"ratings.csv:2: GEMS values must be 0 or 1, got \[\('amazement', '2'\)\]"
    ):
        load_emotify(tmp_path)
    (tmp_path / "ratings.csv").write_text(header.replace("mood", "colour") + "7,pop,1,0,0,0,0,0,0,0,1,3\n")
    with pytest.raises(DatasetError, match=r"unknown columns \['colour'\]"):
        load_emotify(tmp_path)


# -- MTG-Jamendo ------------------------------------------------------------------------------


def test_jamendo_split0_metadata(shared_data):
    root = shared_data / "mtg-jamendo"
    sets = {s: load_jamendo(root, 0, s) for s in ("train", "validation", "test")}
    assert {s: len(t) for s, t in sets.items()} == {"train": 9949, "validation": 3802, "test": 4231}
    for t in sets.values():
        assert t.heads["tags"].labels == JAMENDO_MOODTHEME and len(JAMENDO_MOODTHEME) == 56
    # The official split-0 test ground truth (results/groundtruth.npy) is our test targets, in order.
    np.testing.assert_array_equal(sets["test"].targets("tags"), np.load(root / "results" / "groundtruth.npy"))
    first = sets["train"].tracks[0]
    assert (first.key, first.group, str(first.path)) == ("track_0000948", "artist_000087", "48/948.mp3")
    # The official splits already keep artists apart.
    _assert_partition(
        TrackSet("all", sets["train"].heads, [t for s in sets.values() for t in s.tracks]),
        list(sets.values()),
    )


def _stand_in_mels(shared_data, tmp_path, n: int) -> tuple[list, Path]:
    """(96, 200) random .npy mels at the real PATHs of the first n split-0 validation tracks."""
    listed = load_jamendo(shared_data / "mtg-jamendo", 0, "validation")
    rng = np.random.default_rng(0)
    for track in listed.tracks[:n]:
        path = tmp_path / "npy" / str(track.path).replace(".mp3", ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.normal(size=(96, 200)).astype(np.float32))
    return listed.tracks, tmp_path / "npy"


def test_jamendo_npy_mode_skips_and_reports_missing(shared_data, tmp_path):
    listed, npy_root = _stand_in_mels(shared_data, tmp_path, 30)
    with pytest.warns(UserWarning, match=r"skipping 3772 listed files missing, e\.g\. "):
        found = load_jamendo(shared_data / "mtg-jamendo", 0, "validation", npy_root=npy_root)
    assert [t.key for t in found.tracks] == [t.key for t in listed[:30]]
    assert all(t.path.suffix == ".npy" and t.path.is_file() for t in found.tracks)
    assert len(found.missing) == 3772
    assert found.missing[0] == str(npy_root / str(listed[30].path).replace(".mp3", ".npy"))
    report = found.report()
    assert (
        "3772 listed files missing" in report
        and found.missing[4] in report
        and found.missing[5] not in report
    )
    with pytest.raises(FileNotFoundError, match=r"jamendo-0-validation: 3772 listed files missing"):
        load_jamendo(shared_data / "mtg-jamendo", 0, "validation", npy_root=npy_root, on_missing="error")


def test_jamendo_unknown_tag_and_bad_header(tmp_path):
    tsv = tmp_path / "splits" / "split-0" / "autotagging_moodtheme-train.tsv"
    tsv.parent.mkdir(parents=True)
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
    row = "track_1\tartist_1\talbum_1\t01/1.mp3\t30.0\tmood/theme---happy\tmood/theme---horror\r\n"
    tsv.write_text(header + row)
    with pytest.raises(DatasetError, match=r"train.tsv:2: unknown tag 'mood/theme---horror'"):
        load_jamendo(tmp_path, 0, "train")
    tsv.write_text(header + row.replace("\tmood/theme---horror", ""))
    (track,) = load_jamendo(tmp_path, 0, "train").tracks
    assert track.targets["tags"][JAMENDO_MOODTHEME.index("happy")] == 1 and track.targets["tags"].sum() == 1
    tsv.write_text(header.replace("ALBUM_ID", "ALBUM") + row)
    with pytest.raises(DatasetError, match="is not the official"):
        load_jamendo(tmp_path, 0, "train")
    with pytest.raises(ValueError, match="splits are 0..4"):
        load_jamendo(tmp_path, 5, "train")


# -- valence/arousal tables and folder CSVs -------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "text", "expected"),
    [
        (
            "deam",
            "song_id, valence_mean, valence_std, arousal_mean, arousal_std\n2, 1, 0.9, 9, 0.6\n3, 5, 1.7, 7, 1.6\n",
            {"2": (-1.0, 1.0), "3": (0.0, 0.5)},
        ),
        (
            "pmemo",
            "musicId,Arousal(mean),Valence(mean)\n2,0.25,1\n3,0.5,0\n",
            {"2": (1.0, -0.5), "3": (-1.0, 0.0)},
        ),
        (
            "1000songs",
            "song_id,mean_arousal,std_arousal,mean_valence,std_valence\n2,3,1,7,1\n3,9,0,1,0\n",
            {"2": (0.5, -0.5), "3": (-1.0, 1.0)},
        ),
    ],
    ids=["deam", "pmemo", "1000songs"],
)
def test_va_table_presets(tmp_path, preset, text, expected):
    (tmp_path / "table.csv").write_text(text)
    for key in expected:
        (tmp_path / f"{key}.mp3").write_bytes(b"")
    loaded = load_va_table(tmp_path / "table.csv", tmp_path, preset=preset)
    assert loaded.heads["valence_arousal"].labels == ("valence", "arousal")
    got = {t.key: tuple(float(v) for v in t.targets["valence_arousal"]) for t in loaded.tracks}
    assert got == expected  # exact: these values are representable in float32
    assert all(t.path == tmp_path / f"{t.key}.mp3" and t.group == t.key for t in loaded.tracks)
    assert loaded.info["va_targets"] == "regression"
    assert loaded.info["ignored_columns"] == [
        c.strip() for c in text.split("\n")[0].split(",")[1:] if "std" in c
    ]


def test_va_table_errors(tmp_path):
    (tmp_path / "t.csv").write_text("song_id,valence_mean,arousal_mean\n2,9.5,5\n")
    with pytest.raises(DatasetError, match=r"t.csv:2: valence_mean 9.5 is outside the scale 1..9"):
        load_va_table(tmp_path / "t.csv", tmp_path, preset="deam")
    (tmp_path / "t.csv").write_text("song_id,valence,arousal_mean\n2,5,5\n")
    with pytest.raises(DatasetError, match=r"missing columns \['valence_mean'\]"):
        load_va_table(tmp_path / "t.csv", tmp_path, preset="deam")
    with pytest.raises(ValueError, match="unknown preset 'emomusic'"):
        load_va_table(tmp_path / "t.csv", tmp_path, preset="emomusic")


def test_folder_csv_tags_and_valence_arousal(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "tags.csv").write_text(
        "path,tags,group\na.wav,happy; calm,x\nb.wav,,x\nc.wav,sad,y\nd.wav,sad,z\n"
    )
    with pytest.warns(UserWarning, match=r"1 listed files missing, e\.g\. .*d\.wav"):
        tagged = load_folder_csv(tmp_path / "tags.csv", tmp_path)
    assert tagged.heads["tags"].labels == ("calm", "happy", "sad")
    assert tagged.targets("tags").tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert [t.group for t in tagged.tracks] == ["x", "x", "y"]
    with pytest.raises(DatasetError, match=r"tags.csv:2: unknown tags \['calm'\]"):
        load_folder_csv(tmp_path / "tags.csv", tmp_path, vocabulary=("happy", "sad"))
    (tmp_path / "va.csv").write_text("path,valence,arousal\na.wav,0.5,-1\nb.wav,-0.25,1\n")
    va = load_folder_csv(tmp_path / "va.csv", tmp_path)
    assert va.targets("valence_arousal").tolist() == [[0.5, -1.0], [-0.25, 1.0]]
    (tmp_path / "bad.csv").write_text("file,label\na.wav,happy\n")
    with pytest.raises(DatasetError, match=r"neither \(path, tags\) nor \(path, valence, arousal\)"):
        load_folder_csv(tmp_path / "bad.csv", tmp_path)


def test_split_arguments_are_checked(fourq):
    with pytest.raises(ValueError, match="summing to 1"):
        fourq.split((0.8, 0.3))
    with pytest.raises(ValueError, match="at least 2"):
        fourq.k_fold(1)
    with pytest.raises(ValueError, match="2 groups cannot fill 3 parts"):
        fourq.subset(fourq.tracks[:2], "tiny").split((0.4, 0.3, 0.3))
