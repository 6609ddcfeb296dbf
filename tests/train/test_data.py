"""Datasets: image folders and tarballs (decoded once, cached), the packaged digits, the shared data's counts."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from contrasphere.train import data as D

SHARED = Path("..") / "shared" / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path / "cache"))


def _write_jpegs(folder: Path, n_per_class: int = 3) -> dict[str, np.ndarray]:
    from PIL import Image

    written = {}
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(n_per_class):
            array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / cls / f"{i}.png")
            written[f"{cls}/{i}"] = array
    return written


def test_image_folder_and_tarball_decode_the_same_images(tmp_path):
    written = _write_jpegs(tmp_path / "data" / "train")
    folder = D.image_folder(tmp_path / "data" / "train")
    assert folder.classes == ["cat", "dog"] and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(folder.images[0].permute(1, 2, 0), torch.from_numpy(written["cat/0"]))  # PNG is lossless
    tar_path = tmp_path / "train.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tmp_path / "data" / "train", arcname="train")
    from_tar = D.image_tarball(tar_path, "train")
    assert torch.equal(from_tar.images, folder.images) and torch.equal(from_tar.labels, folder.labels)
    again = D.image_folder(tmp_path / "data" / "train")  # from the cache now
    assert torch.equal(again.images, folder.images)
    assert len(list(Path(tmp_path / "cache").glob("*.pt"))) == 2


def test_a_missing_dataset_names_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"looked in: .*nowhere.*data.root"):
        D.cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no images in class sub-folders"):
        D.image_folder(tmp_path)


def test_digits_split_is_fixed_and_complete():
    train, test = D.digits()
    assert len(train) + len(test) == 1797 and len(test) == 449
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert set(train.labels.tolist()) == set(range(10))
    again, _ = D.digits()
    assert torch.equal(again.images, train.images)


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data")
def test_shared_data_loads_with_the_verified_counts():
    for name, split, n in [("stsb", "dev", 1500), ("stsb", "test", 1379), ("sts12", "test", 3108),
                           ("sts13", "test", 1500), ("sts14", "test", 3750), ("sts15", "test", 3000),
                           ("sts16", "test", 1186), ("sickr", "test", 4927)]:  # fmt: skip
        pairs = D.sts(name, split)
        assert len(pairs.a) == len(pairs.b) == pairs.scores.numel() == n, name
    assert len(D.wiki_sentences()) == 11913


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_resizes_to_the_central_square():
    wide = np.zeros((10, 20, 3), dtype=np.uint8)
    wide[:, 5:15] = 255  # the central 10 x 10 square is white
    out = D._decode(_png_bytes(wide), 10)
    assert out.shape == (10, 10, 3) and out.min() == 255
