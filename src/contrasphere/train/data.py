"""Datasets for training and evaluation, held in memory as tensors.

Images are decoded once into ``uint8`` tensors ``(N, C, H, W)`` and cached (``$CONTRASPHERE_CACHE``, default
``~/.cache/contrasphere``): the second run reads one file instead of decoding 60,000 JPEGs, and augmentation then
works on whole batches (:mod:`contrasphere.augment`), so no data-loader workers are needed.

Where data is looked for: the path given (only there), else in order ``$CONTRASPHERE_DATA``, ``./data``,
``../shared/data`` and ``~/data``. A missing dataset raises :class:`FileNotFoundError` naming every place looked in and
how to get it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataNotFoundError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class ImageSet:
    """Decoded images ``(N, C, H, W)`` uint8 with integer labels ``(N,)`` and the class names."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int, seed: int = 0) -> ImageSet:
        """A seeded random subset of ``n`` images (all of them when ``n`` is 0 or at least the size)."""
        if n <= 0 or n >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return ImageSet(self.images[index], self.labels[index], self.classes)


@dataclass
class SentencePairs:
    """Sentence pairs with gold similarity scores (an STS set)."""

    a: list[str]
    b: list[str]
    scores: Tensor


@dataclass
class CaptionedImages:
    """Images ``(N, 3, S, S)`` uint8, each with its captions."""

    images: Tensor
    captions: list[list[str]]
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split(self, test: int) -> tuple[CaptionedImages, CaptionedImages]:
        """The first ``N - test`` images for training, the last ``test`` held out."""
        cut = len(self) - test
        return (
            CaptionedImages(self.images[:cut], self.captions[:cut], self.names[:cut]),
            CaptionedImages(self.images[cut:], self.captions[cut:], self.names[cut:]),
        )


def data_roots(extra: str | os.PathLike | None = None) -> list[Path]:
    """Where datasets are looked for: only ``extra`` when given (an explicit path is never second-guessed)."""
    if extra:
        return [Path(extra)]
    roots = []
    if os.environ.get("CONTRASPHERE_DATA"):
        roots.append(Path(os.environ["CONTRASPHERE_DATA"]))
    roots += [Path("data"), Path("..") / "shared" / "data", Path.home() / "data"]
    return roots


def find_data(name: str, root: str | os.PathLike | None, how: str, marker: str | None = None) -> Path:
    """The folder of dataset ``name``: ``root`` itself if it holds ``marker``, else ``<place>/<name>``."""
    looked = []
    for i, place in enumerate(data_roots(root)):
        given = bool(root) and i == 0  # a folder the user named may be the dataset itself
        for candidate in (place, place / name) if given else (place / name,):
            looked.append(str(candidate))
            if candidate.is_dir() and (marker is None or (candidate / marker).exists()):
                return candidate
    raise DataNotFoundError(
        f"dataset {name!r} not found; looked in: {', '.join(dict.fromkeys(looked))}. {how} "
        "Pass its folder with --set data.root=PATH or set CONTRASPHERE_DATA."
    )


def cache_dir() -> Path:
    path = Path(os.environ.get("CONTRASPHERE_CACHE", Path.home() / ".cache" / "contrasphere"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``build()`` once per key; later calls load the saved tensors. Written atomically."""
    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError):  # a truncated or foreign file: rebuild it
            path.unlink(missing_ok=True)
    value = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value


def _fingerprint(*paths: Path, extra: str = "", root: Path | None = None) -> str:
    """A cache key from the files' metadata only (``os.stat``; nothing is read): each file's path, size and mtime.

    With ``root``, the key is of ``root`` (its resolved path) and each file's path relative to it, so that the key of
    a folder's images changes when any one of them is added, removed, renamed or rewritten, not only the first or
    the last (one ``stat`` per file: 50,000 files take under half a second).
    """
    h = hashlib.sha256(extra.encode())
    if root is not None:
        h.update(f"{root.resolve()}\n".encode())
    prefix = f"{root}{os.sep}" if root is not None else ""
    for p in paths:
        st = p.stat()
        text = str(p)
        if root is None:
            name = str(p.resolve())
        else:  # a string slice: Path.relative_to would take as long as the stat calls
            name = text[len(prefix) :] if text.startswith(prefix) else p.relative_to(root).as_posix()
        h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _decode(data: bytes, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        img = opened.convert("RGB")
    if size is not None and img.size != (size, size):  # shorter side to size, then the central square
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def _image_files(entries: Iterable[tuple[str, Callable[[], bytes]]], size: int | None) -> dict[str, Any]:
    """Decode ``(relative path, read)`` entries laid out as ``<class>/<file>`` into an image set dictionary."""
    items = sorted(entries, key=lambda e: e[0])
    if not items:
        raise DataNotFoundError("no images found (expected <class>/<image> files)")
    classes = sorted({Path(name).parent.name for name, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    arrays = [_decode(read(), size) for _, read in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ConfigError(f"images have different sizes {sorted(shapes)[:3]}...; pass an image_size to resize them")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([index[Path(name).parent.name] for name, _ in items])
    return {"images": images, "labels": labels, "classes": classes}


def _image_set(d: dict) -> ImageSet:
    return ImageSet(d["images"], d["labels"].long(), list(d["classes"]))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_folder(path: str | os.PathLike, image_size: int | None = None) -> ImageSet:
    """Every image under ``path/<class>/``, decoded once (cached), classes sorted by name."""
    path = Path(path)
    files = [p for p in sorted(path.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataNotFoundError(f"no images in class sub-folders of {path} (expected {path}/<class>/<image>.jpg)")
    key = f"folder-{_fingerprint(*files, root=path, extra=f'{len(files)}|{image_size}')}"
    entries = [(f"{p.parent.name}/{p.name}", p.read_bytes) for p in files]
    return _image_set(_cached(key, lambda: _image_files(entries, image_size)))


def image_tarball(path: str | os.PathLike, split: str, image_size: int | None = None) -> ImageSet:
    """Images under ``<split>/<class>/`` inside a ``.tar.gz``, decoded straight from the archive (cached)."""
    path = Path(path)

    def build() -> dict[str, Any]:
        with tarfile.open(path) as tar:
            entries = []
            for member in tar:
                parts = Path(member.name).parts
                wanted = member.isfile() and len(parts) >= 3 and parts[-3] == split
                file = tar.extractfile(member) if wanted else None
                if file is not None and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    data = file.read()
                    entries.append(("/".join(parts[-2:]), lambda data=data: data))
            return _image_files(entries, image_size)

    return _image_set(_cached(f"tar-{split}-{_fingerprint(path, extra=str(image_size))}", build))


CIFAR10_HOW = (
    "CIFAR-10 as class folders: train/<class>/*.jpg and test/<class>/*.jpg, or the tarballs "
    "cifar10_train_jpg.tar.gz and cifar10_test_jpg.tar.gz (contrasphere's shared data), or use the dataset "
    "'torchvision-cifar10' with torchvision's download."
)


def cifar10(root: str | os.PathLike | None = None) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from class folders or the two JPEG tarballs; ``(train, test)``, 50,000 and 10,000 images."""
    for place in data_roots(root):
        for folder in (place, place / "cifar10"):
            if (folder / "cifar10_train_jpg.tar.gz").exists() and (folder / "cifar10_test_jpg.tar.gz").exists():
                return (
                    image_tarball(folder / "cifar10_train_jpg.tar.gz", "train"),
                    image_tarball(folder / "cifar10_test_jpg.tar.gz", "test"),
                )
    folder = find_data("cifar10", root, CIFAR10_HOW, marker="train")
    return image_folder(folder / "train"), image_folder(folder / "test")


def torchvision_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (``download=True`` fetches it, 170 MB)."""
    from torchvision.datasets import CIFAR10

    root = Path(root or Path.home() / "data")
    try:
        sets = [CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except RuntimeError as err:
        raise DataNotFoundError(
            f"torchvision's CIFAR-10 not found under {root} ({err}). Download it once with "
            "--set data.download=true (170 MB), or use the dataset 'cifar10' for JPEG folders."
        ) from None
    return tuple(
        ImageSet(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets), list(s.classes))
        for s in sets
    )  # type: ignore[return-value]


def torchvision_stl10(
    root: str | os.PathLike | None = None, download: bool = False, unlabeled: bool = True
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """STL-10 through ``torchvision.datasets.STL10``: ``(train, test, train+unlabeled)`` at 96 x 96."""
    from torchvision.datasets import STL10

    root = Path(root or Path.home() / "data")
    try:
        splits = {s: STL10(str(root), split=s, download=download) for s in ("train", "test")}
        if unlabeled:
            splits["train+unlabeled"] = STL10(str(root), split="train+unlabeled", download=download)
    except RuntimeError as err:
        raise DataNotFoundError(
            f"torchvision's STL-10 not found under {root} ({err}). Download it once with "
            "--set data.download=true (2.6 GB)."
        ) from None
    out = [
        ImageSet(torch.from_numpy(s.data), torch.from_numpy(s.labels).long(), list(s.classes)) for s in splits.values()
    ]
    return out[0], out[1], out[-1]


def digits(test_fraction: float = 0.25) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with contrasphere), a fixed seeded split."""
    pixels = np.load(EXAMPLES / "digits.npy").reshape(-1, 1, 8, 8)  # values 0..16
    labels = torch.from_numpy(np.load(EXAMPLES / "digits_labels.npy").astype(np.int64))
    images = torch.from_numpy(np.clip(pixels * 16, 0, 255).astype(np.uint8))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = round(len(labels) * (1 - test_fraction))
    classes = [str(i) for i in range(10)]
    train, test = order[:cut].sort().values, order[cut:].sort().values
    return ImageSet(images[train], labels[train], classes), ImageSet(images[test], labels[test], classes)


def text_lines(path: str | os.PathLike, limit: int = 0) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped (the SimCSE wiki1m format)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"text file {path} not found: pass one sentence per line with --set data.root=FILE")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    return lines[:limit] if limit > 0 else lines


WIKI_HOW = "SimCSE's wiki1m_for_simcse.txt (one sentence per line) or the shared wiki1m_head folder."


def wiki_sentences(root: str | os.PathLike | None = None, limit: int = 0) -> list[str]:
    if root and Path(root).is_file():
        return text_lines(root, limit)
    folder = find_data("wiki1m_head", root, WIKI_HOW)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataNotFoundError(f"no .txt file of sentences in {folder}. {WIKI_HOW}")
    return text_lines(files[0], limit)


STS_HOW = "The STS files as SentEval downloads them (stsbenchmark/sts-*.csv, STS1x-en-test/STS.input.*.txt)."
STS_SETS = ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr")


def sts(name: str, split: str = "test", root: str | os.PathLike | None = None) -> SentencePairs:
    """An STS set: ``stsb`` (split train/dev/test), ``sts12``..``sts16`` (all subsets), ``sickr`` (train/trial/test).

    STS12-16 pairs without a gold score are dropped, as SentEval does; the subsets are concatenated (SimCSE's
    "all" setting computes one correlation over the concatenation).
    """
    if name not in STS_SETS:
        raise ConfigError(f"unknown STS set {name!r}; choose from {', '.join(STS_SETS)}")
    folder = find_data("sts", root, STS_HOW)
    a: list[str] = []
    b: list[str] = []
    scores: list[float] = []
    if name == "stsb":
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"STS-B splits are train, dev and test, got {split!r}")
        path = folder / "stsbenchmark" / f"sts-{split}.csv"
        with open(path, encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                scores.append(float(row[4]))
                a.append(row[5])
                b.append(row[6])
    elif name == "sickr":
        files = {"train": "SICK_train.txt", "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
        with open(folder / "sick2014" / files[split], encoding="utf-8") as f:
            for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]:
                a.append(row[1])
                b.append(row[2])
                scores.append(float(row[3]))
    else:
        base = folder / "raw" / f"STS{name[3:]}-en-test"
        for gs in sorted(base.glob("STS*.gs.*.txt")):
            sentences = gs.with_name(gs.name.replace(".gs.", ".input."))
            if gs.name.endswith(".ALL.txt") or not sentences.exists():  # STS13's SMT pairs are not distributed
                continue
            gold = gs.read_text(encoding="utf-8", errors="replace").splitlines()
            pairs = sentences.read_text(encoding="utf-8", errors="replace").splitlines()
            for score, pair in zip(gold, pairs):
                if score.strip():
                    left, right = pair.split("\t")[:2]
                    a.append(left.strip())
                    b.append(right.strip())
                    scores.append(float(score))
    if not scores:
        raise DataNotFoundError(f"no scored pairs for {name} {split} under {folder}. {STS_HOW}")
    return SentencePairs(a, b, torch.tensor(scores, dtype=torch.float64))


FLICKR_HOW = "Flickr8k: an Images/ folder or images tarball plus a captions CSV (image,caption), as the shared data."


def flickr8k(root: str | os.PathLike | None = None, image_size: int = 224) -> CaptionedImages:
    """Flickr8k photos (resized: shorter side ``image_size``, centre square) with their captions, cached."""
    folder = find_data("flickr8k", root, FLICKR_HOW)
    captions_file = next(iter(sorted(folder.glob("*captions*first*.csv"))), None) or next(
        iter(sorted(folder.glob("*.csv"))), None
    )
    if captions_file is None:
        raise DataNotFoundError(f"no captions CSV in {folder}. {FLICKR_HOW}")
    captions: dict[str, list[str]] = {}
    with open(captions_file, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], []).append(row["caption"].strip())
    tarballs = sorted(folder.glob("*images*.tar.gz"))
    sources = tarballs or sorted((folder / "Images").glob("*.jpg"))
    if not sources:
        raise DataNotFoundError(f"no images (tarball or Images/ folder) in {folder}. {FLICKR_HOW}")

    def build() -> dict[str, Any]:
        found: dict[str, bytes] = {}
        if tarballs:
            with tarfile.open(tarballs[0]) as tar:
                for member in tar:
                    name = Path(member.name).name
                    file = tar.extractfile(member) if member.isfile() and name in captions else None
                    if file is not None:
                        found[name] = file.read()
        else:
            found = {p.name: p.read_bytes() for p in sources if p.name in captions}
        names = sorted(found)
        images = np.stack([_decode(found[n], image_size) for n in names])
        return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "names": names}

    keyed = tarballs[:1] or sources  # the tarball that is read, or every image of the folder
    d = _cached(f"flickr8k-{_fingerprint(*keyed, captions_file, root=folder, extra=str(image_size))}", build)
    names = list(d["names"])
    return CaptionedImages(d["images"], [captions[n] for n in names], names)


DATASETS = {
    "digits": "scikit-learn's 8x8 handwritten digits, 1,797 images in 10 classes (shipped; nothing to download)",
    "cifar10": "CIFAR-10 from class folders or JPEG tarballs (data.root, or ../shared/data/cifar10)",
    "torchvision-cifar10": "CIFAR-10 through torchvision.datasets.CIFAR10 (data.download=true fetches it)",
    "torchvision-stl10": "STL-10 through torchvision.datasets.STL10 (train+unlabeled for training, 96x96)",
    "image-folder": "any folder of class sub-folders: data.root=PATH with train/ and test/ inside",
    "wiki1m": "sentences, one per line (SimCSE's wiki1m; data.root=FILE for another text file)",
    "sts": "STS-B, STS12-16 and SICK-R with gold scores (evaluation of sentence embeddings)",
    "flickr8k": "Flickr8k photos with 5 captions each (image-text training and retrieval)",
}
