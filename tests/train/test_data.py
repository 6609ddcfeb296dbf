"""Datasets: image folders and tarballs (decoded once, cached), the packaged digits, the counts of the shared data and
of the test fixtures (tests/fixtures), and the fixtures being what tests/fixtures/make_fixtures.py writes."""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from contrasphere.train import data as D


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


# pairs with a gold score per (set, split), and sentences; shared: the counts verified in its README; fixtures: what
# make_fixtures.py writes (the language reproduction's tiny budget reads the first 40 pairs of each set)
TEXT_COUNTS = {
    "shared": {("stsb", "train"): 5749, ("stsb", "dev"): 1500, ("stsb", "test"): 1379, ("sts12", "test"): 3108,
               ("sts13", "test"): 1500, ("sts14", "test"): 3750, ("sts15", "test"): 3000, ("sts16", "test"): 1186,
               ("sickr", "train"): 4500, ("sickr", "trial"): 500, ("sickr", "test"): 4927, "wiki": 11913},
    "fixtures": {("stsb", "train"): 48, ("stsb", "dev"): 48, ("stsb", "test"): 48, ("sts12", "test"): 48,
                 ("sts13", "test"): 48, ("sts14", "test"): 48, ("sts15", "test"): 48, ("sts16", "test"): 48,
                 ("sickr", "train"): 24, ("sickr", "trial"): 24, ("sickr", "test"): 48, "wiki": 96},
}  # fmt: skip


def test_text_data_loads_with_the_verified_counts(data_source):
    counts = TEXT_COUNTS[data_source]
    for (name, split), n in [(k, v) for k, v in counts.items() if isinstance(k, tuple)]:
        pairs = D.sts(name, split)
        assert len(pairs.a) == len(pairs.b) == pairs.scores.numel() == n, name
        assert all(pairs.a) and all(pairs.b) and 0 <= float(pairs.scores.min()) < float(pairs.scores.max()) <= 5
    assert len(D.wiki_sentences()) == counts["wiki"]
    dev = D.sts("stsb", "dev")
    assert int((dev.scores[:100] > 4).sum()) >= 5  # positive pairs for the held-out alignment (SimCSE's protocol)


# (train, test) CIFAR-10 images and Flickr8k images; vision tiny needs 64 + 48, image-text tiny 80 + 20
IMAGE_COUNTS = {"shared": (50000, 10000, 1000), "fixtures": (80, 60, 100)}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("data_source", ["fixtures", pytest.param("shared", marks=pytest.mark.slow)], indirect=True)
def test_image_data_loads_with_the_verified_counts(data_source):
    n_train, n_test, n_flickr = IMAGE_COUNTS[data_source]
    train, test = D.cifar10()
    assert (len(train), len(test)) == (n_train, n_test) and train.images.shape[1:] == (3, 32, 32)
    assert train.classes == test.classes == CIFAR10_CLASSES
    assert torch.bincount(train.labels).tolist() == [n_train // 10] * 10
    flickr = D.flickr8k(image_size=224)  # the size the image-text reproduction uses (one cache entry)
    assert len(flickr) == n_flickr and flickr.images.shape[1:] == (3, 224, 224)
    assert all(len(caps) == 5 for caps in flickr.captions) and flickr.names == sorted(flickr.names)


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tar_images(path: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    with tarfile.open(path) as tar:
        return {
            m.name: np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"), dtype=np.float64)
            for m in tar
            if m.isfile()
        }


def test_fixtures_are_what_make_fixtures_writes(tmp_path):
    """tests/fixtures holds exactly the script's output: text byte for byte, images within JPEG codec differences."""
    written = _make_fixtures().make(tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    committed = [p for p in FIXTURES.rglob("*") if p.is_file() and p.parent != FIXTURES]  # not the script, README
    assert names == sorted(p.relative_to(FIXTURES).as_posix() for p in committed if "__pycache__" not in p.parts)
    total = 0
    for name in names:
        ours, theirs = FIXTURES / name, tmp_path / name
        total += ours.stat().st_size
        if name.endswith(".tar.gz"):
            a, b = _tar_images(ours), _tar_images(theirs)
            assert list(a) == list(b), name
            assert all(np.abs(a[k] - b[k]).mean() < 2 for k in a), name  # another libjpeg may round differently
        else:
            assert ours.read_bytes() == theirs.read_bytes(), name
    assert total < 1_000_000


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


def test_image_folder_cache_sees_a_file_replaced_in_the_middle(tmp_path, monkeypatch):
    """The cache key covers every file (path, size, mtime), not only the first, the last and the count."""
    from PIL import Image

    written = _write_jpegs(tmp_path / "train")  # cat/0..2, dog/0..2
    first = D.image_folder(tmp_path / "train")
    middle = tmp_path / "train" / "cat" / "2.png"  # neither the first (cat/0) nor the last (dog/2) file
    before = middle.stat().st_mtime_ns
    new = 255 - written["cat/2"]
    Image.fromarray(new).save(middle)
    os.utime(middle, ns=(before, before + 5_000_000_000))  # a later mtime even on a coarse-grained file system
    again = D.image_folder(tmp_path / "train")
    assert torch.equal(again.images[2].permute(1, 2, 0), torch.from_numpy(new))
    assert torch.equal(again.images[[0, 1, 3, 4, 5]], first.images[[0, 1, 3, 4, 5]])
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 2
    # the key is made from os.stat alone: an unchanged folder loads from the cache without reading an image
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self}"))
    assert torch.equal(D.image_folder(tmp_path / "train").images, again.images)


def test_flickr8k_folder_cache_sees_a_replaced_image(tmp_path):
    """Flickr8k as an Images/ folder: replacing any image (not only the first) is seen, as for image folders."""
    from PIL import Image

    folder = tmp_path / "flickr8k"
    (folder / "Images").mkdir(parents=True)
    colours = {"a.jpg": (200, 0, 0), "b.jpg": (0, 200, 0), "c.jpg": (0, 0, 200)}
    for name, colour in colours.items():
        Image.new("RGB", (12, 8), colour).save(folder / "Images" / name)
    rows = [f"{name},caption {i} of {name}" for name in colours for i in range(5)]
    (folder / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    first = D.flickr8k(folder, image_size=8)
    assert first.names == list(colours) and first.captions[1][0] == "caption 0 of b.jpg"
    middle = folder / "Images" / "b.jpg"
    before = middle.stat().st_mtime_ns
    Image.new("RGB", (12, 8), (250, 250, 0)).save(middle)
    os.utime(middle, ns=(before, before + 5_000_000_000))
    again = D.flickr8k(folder, image_size=8)
    mean = again.images[1].float().mean(dim=(1, 2))
    assert mean[0] > 200 and mean[1] > 200 and mean[2] < 50  # yellow now, not green
    assert torch.equal(again.images[[0, 2]], first.images[[0, 2]])
