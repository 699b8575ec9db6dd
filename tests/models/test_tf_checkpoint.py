"""The TensorFlow bundle reader on the real musicnn checkpoint and on broken files."""

from __future__ import annotations

import shutil

import pytest

from models.musicnn import package_checkpoint
from models.tf_checkpoint import CheckpointError, read_checkpoint


def test_reads_every_variable_with_its_shape():
    tensors = read_checkpoint(package_checkpoint("msd"))
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert tensors["dense_1/kernel"].shape == (200, 50)
    assert tensors["batch_normalization_9/gamma"].shape == (1506,)
    assert all(t.dtype.kind == "f" for name, t in tensors.items() if "/" in name)


def test_missing_files_and_bad_magic(tmp_path):
    with pytest.raises(CheckpointError, match="missing checkpoint file"):
        read_checkpoint(tmp_path / "nothing")
    (tmp_path / "x.index").write_bytes(b"\x01" * 100)
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bad magic"):
        read_checkpoint(tmp_path / "x")


def test_truncated_data_is_detected(tmp_path):
    src = package_checkpoint("mtt")
    shutil.copy(src + ".index", tmp_path / "ck.index")
    data = open(src + ".data-00000-of-00001", "rb").read()
    (tmp_path / "ck.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match"):
        read_checkpoint(tmp_path / "ck")
