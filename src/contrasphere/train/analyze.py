"""Analyse a pretrained encoder on a dataset: embed it, measure the geometry on the sphere, write a report folder.

:func:`analyze` is ``contrasphere analyze``: it resolves a dataset (:func:`load_data`) and an encoder
(:func:`load_encoder`), embeds the data in batches (:func:`embed`), computes every metric of
:func:`contrasphere.metrics.report` with the pairs the data offers, per-class statistics where there are labels,
and writes ``report.md``, ``analysis.json`` and figures, each file atomically.

Pairs by kind of data:

- ``sts``: the two sentences of each pair whose gold score is above 4 are positives (SimCSE's alignment on
  STS-B); uniformity and the rest are over all sentences of both sides; LiDAR takes the two sides of the positive
  pairs as two views; the STS Spearman correlation of the cosines is reported too;
- ``captions`` (Flickr8k with a text encoder): every caption is embedded; the first two captions of each image are
  its positive pair, and its captions are LiDAR's views (5 per image);
- ``images`` and ``text``: no pairs (no alignment), only the geometry of the one set; images with class labels
  add per-class statistics and a kNN accuracy (Flickr8k with an image encoder: its images, unlabelled);
- ``image-text`` (Flickr8k with a two-tower image-text run, e.g. from ``contrasphere train flickr8k-lit``): the
  run's held-out images and all their captions, embedded by its two towers into one space; each image and its
  first caption are a pair (alignment, the modality gap and the cross- and intra-modal cosine spreads of
  :func:`contrasphere.metrics.modality_spread`), each side's own geometry, LiDAR with the captions of an image
  as its views, and image-to-text and text-to-image recall.

Encoders: ``minilm`` (the packaged all-MiniLM-L6-v2, mean-pooled), ``efficientnet_lite0`` (ImageNet-pretrained;
images resized to 224 and scaled to [-1, 1] as the model states), a local Hugging Face model folder (a text
encoder, mean-pooled), a TorchScript file, loaded with :func:`torch.jit.load` (never unpickled): an image
encoder that takes float images ``(B, C, H, W)`` in [0, 1] at the data's own size and returns ``(B, D)``; or a
run folder of contrasphere's trainer (its ``checkpoint.pt`` is read with ``weights_only=True``), whose trained
model embeds the run's own held-out split.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import metrics
from ..errors import ConfigError, DataNotFoundError, InputError
from . import data as D
from .analysis_report import format_report, pair_cosines, plot_cosine_histogram
from .rundir import write_atomic

KINDS = ("images", "text", "sts", "captions", "image-text")
ENCODER_NAMES = ("minilm", "efficientnet_lite0")
STS_POSITIVE = 4.0  # SimCSE: STS-B pairs with a gold score above 4 are positives
DEFAULT_MAX_POINTS = 50_000


@dataclass
class Dataset:
    """What is embedded: ``images`` (uint8 ``(N, C, H, W)``) or ``sentences``; for STS also ``second`` and scores."""

    name: str
    kind: str
    images: Tensor | None = None
    sentences: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)
    scores: Tensor | None = None
    labels: Tensor | None = None
    classes: list[str] = field(default_factory=list)
    split: str = ""
    views: int = 0  # captions: the captions of image i are sentences[i], sentences[n + i], ... (views of n images)

    def __len__(self) -> int:
        """Items embedded: images, sentences (all captions), or sentence pairs."""
        return int(self.images.shape[0]) if self.images is not None else len(self.sentences)

    def limited(self, n: int) -> Dataset:
        """The first ``n`` items (all when ``n`` is 0); an image set is a seeded random subset, as ImageSet's."""
        if n <= 0 or n >= len(self):
            return self
        if self.views:
            size = len(self) // self.views
            if n >= size:
                return self
            sentences = [s for v in range(self.views) for s in self.sentences[v * size : v * size + n]]
            return Dataset(self.name, self.kind, None, sentences, views=self.views)
        if self.images is not None:
            index = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:n].sort().values
            labels = None if self.labels is None else self.labels[index]
            return Dataset(
                self.name, self.kind, self.images[index], labels=labels, classes=self.classes, split=self.split
            )
        scores = None if self.scores is None else self.scores[:n]
        return Dataset(self.name, self.kind, None, self.sentences[:n], self.second[:n], scores, split=self.split)


@dataclass
class Encoder:
    """A frozen encoder: ``modality`` (``image`` or ``text``) and ``forward`` on a batch already on ``device``."""

    name: str
    modality: str
    forward: Callable[[Any], Tensor]
    device: torch.device
    image_size: int | None = None  # resize (shorter side) and centre-crop images to this side first
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    settings: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def is_run(spec: str) -> bool:
    """Whether an encoder spec is a run folder of the trainer (it holds ``checkpoint.pt``)."""
    from .checkpoint import CHECKPOINT

    return Path(spec).is_dir() and (Path(spec) / CHECKPOINT).is_file()


def encoder_modality(spec: str) -> str:
    """What an encoder spec embeds, without loading it: ``text``, ``image`` or ``image-text`` (a two-tower run)."""
    path = Path(spec)
    if is_run(spec):
        return "image-text"
    return "text" if spec == "minilm" or (path.is_dir() and (path / "config.json").exists()) else "image"


def load_encoder(spec: str, device: torch.device) -> Encoder:
    """``minilm``, ``efficientnet_lite0``, a Hugging Face model folder (text) or a TorchScript file (images)."""
    from .models import EfficientNetLite0, TextEncoder

    path = Path(spec)
    if spec == "minilm" or (path.is_dir() and (path / "config.json").exists()):
        model = TextEncoder("" if spec == "minilm" else str(path), pooling="mean").to(device).eval()
        return Encoder(spec, "text", model, device, settings={"pooling": "mean", "max_length": model.max_length})
    if spec == "efficientnet_lite0":
        net = EfficientNetLite0().to(device).eval()
        return Encoder(spec, "image", net, device, image_size=224, mean=net.mean, std=net.std)
    if path.is_file():
        try:  # TorchScript only: a pickled nn.Module could run any code when loaded, so it is never unpickled
            with warnings.catch_warnings():  # torch 2.x announces TorchScript's deprecation at every load
                warnings.simplefilter("ignore", FutureWarning)
                scripted = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"encoder file {path} is not a TorchScript module (torch.jit.load cannot read it); save one with "
                "torch.jit.save(torch.jit.script(model), PATH) (pickled modules are not loaded)"
            ) from None
        scripted.eval()
        return Encoder(str(path), "image", scripted, device, settings={"input": "float images in [0, 1]"})
    if path.is_dir():
        raise ConfigError(f"encoder folder {path} has no config.json: not a Hugging Face model folder")
    raise ConfigError(
        f"unknown encoder {spec!r}; choose {', '.join(ENCODER_NAMES)}, a Hugging Face model folder or a "
        "TorchScript file (.pt)"
    )


def load_data(spec: str, kind: str | None, root: str | None, split: str, modality: str = "text") -> Dataset:
    """A dataset name the loaders know, an image folder (class sub-folders) or a text file (one sentence a line).

    ``modality`` (of the encoder) chooses what of Flickr8k is embedded: its captions (text) or its images."""
    path = Path(spec)
    if spec == "cifar10":
        test = cifar10_test(root)
        data = Dataset("cifar10", "images", test.images, labels=test.labels, classes=test.classes, split="test")
    elif spec in D.STS_SETS:
        pairs = D.sts(spec, split, root)
        data = Dataset(spec, "sts", None, pairs.a, pairs.b, pairs.scores, split=split)
    elif spec == "flickr8k":
        flickr = D.flickr8k(root)
        if kind == "captions" or (kind is None and modality == "text"):
            views = min(len(c) for c in flickr.captions)
            sentences = [caps[v] for v in range(views) for caps in flickr.captions]
            data = Dataset("flickr8k", "captions", None, sentences, views=views)
        else:
            data = Dataset("flickr8k", "images", flickr.images)
    elif spec == "wiki1m":
        data = Dataset("wiki1m", "text", None, D.wiki_sentences(root))
    elif path.is_dir():
        images = D.image_folder(path)
        data = Dataset(path.name or "images", "images", images.images, labels=images.labels, classes=images.classes)
    elif path.is_file():
        data = Dataset(path.stem, "text", None, D.text_lines(path))
    else:
        raise DataNotFoundError(
            f"data {spec!r} is neither a dataset (cifar10, {', '.join(D.STS_SETS)}, wiki1m, flickr8k) nor an "
            "image folder or a text file"
        )
    if kind is not None and kind != data.kind:
        raise ConfigError(f"{spec!r} is {data.kind} data; --kind {kind} does not apply to it")
    return data


def cifar10_test(root: str | None) -> D.ImageSet:
    """The 10,000 CIFAR-10 test images alone (the training tarball is not decoded), found as :func:`data.cifar10`."""
    for place in D.data_roots(root):
        for folder in (place, place / "cifar10"):
            if (folder / "cifar10_test_jpg.tar.gz").exists():
                return D.image_tarball(folder / "cifar10_test_jpg.tar.gz", "test")
    return D.image_folder(D.find_data("cifar10", root, D.CIFAR10_HOW, marker="test") / "test")


def _prepare_images(x: Tensor, encoder: Encoder) -> Tensor:
    x = x.to(encoder.device).float() / 255
    if x.shape[1] == 1 and len(encoder.mean) == 3 and encoder.image_size is not None:
        x = x.expand(-1, 3, -1, -1)  # grey images for an RGB network
    size = encoder.image_size
    if size is not None and tuple(x.shape[-2:]) != (size, size):  # shorter side to size, then the centre square
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    if encoder.image_size is not None:
        mean = torch.tensor(encoder.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(encoder.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


@torch.no_grad()
def embed(encoder: Encoder, items: Tensor | Sequence[str], batch_size: int, progress: bool = False) -> Tensor:
    """``(N, D)`` float32 features of ``items`` (uint8 images or sentences), batch by batch on the encoder's device."""
    n = int(items.shape[0]) if isinstance(items, Tensor) else len(items)
    starts = range(0, n, batch_size)
    bar: Any = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(starts), desc=f"embedding {n} with {Path(encoder.name).name}", unit="batch")
        except ImportError:  # tqdm is optional
            bar = None
    out = []
    for start in starts:
        chunk = items[start : start + batch_size]
        batch = _prepare_images(chunk, encoder) if isinstance(chunk, Tensor) else list(chunk)
        z = encoder.forward(batch)
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[0] != len(chunk):
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ConfigError(f"encoder {encoder.name} returned {shape} for a batch of {len(chunk)}; expected (B, D)")
        out.append(z.float().cpu())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def class_statistics(z: Tensor, labels: Tensor, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per class: its size, the alignment of its members to the class mean direction (mean ``||u_i - m||^2`` with
    ``m`` the normalised mean of the class on the sphere; 0 when they coincide) and the within-class anisotropy."""
    u = F.normalize(z.double(), dim=1)
    out: dict[str, dict[str, Any]] = {}
    for c in sorted(set(labels.tolist())):
        members = u[labels == c]
        centre = F.normalize(members.mean(0), dim=0)
        entry: dict[str, Any] = {
            "n": int(members.shape[0]),
            "alignment_to_mean": float((members - centre).pow(2).sum(1).mean()),
            "anisotropy": metrics.anisotropy(members) if members.shape[0] >= 2 else None,
        }
        out[classes[c] if c < len(classes) else str(c)] = entry
    return out


def knn_split(labels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded half/half split of the rows (the first half of a permutation is the kNN training set)."""
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    half = labels.shape[0] // 2
    return order[:half], order[half:]


def compute(
    data: Dataset, z: Tensor, second: Tensor | None, *, alpha: float, t: float, max_points: int | None
) -> dict[str, Any]:
    """Every number of the analysis of ``z`` (and, for STS, of the second sentences ``second``)."""
    from ..evaluation import knn_accuracy, sts_spearman

    result: dict[str, Any] = {}
    pairs: Tensor | None = None
    views: list[Tensor] | None = None
    if data.kind == "sts":
        assert second is not None and data.scores is not None
        n = z.shape[0]
        positive = (data.scores > STS_POSITIVE).nonzero().flatten()
        result["sts_spearman"] = sts_spearman(z, second, data.scores)
        result["n_sentence_pairs"] = n
        result["positive_threshold"] = STS_POSITIVE
        z = torch.cat([z, second])
        pairs = torch.stack([positive, positive + n], 1) if positive.numel() else None
        if positive.numel() >= 2:
            views = [z[positive], z[positive + n]]
    elif data.kind == "captions" and data.views >= 2:
        n = z.shape[0] // data.views
        views = list(z.view(data.views, n, -1))
        first = torch.arange(n)
        pairs = torch.stack([first, first + n], 1)  # caption 1 and caption 2 of each image
        result["images"], result["captions_per_image"] = n, data.views
    result.update(metrics.report(z, pairs=pairs, alpha=alpha, t=t, max_points=max_points))
    if views is not None:
        result["lidar_views"], result["lidar_samples"] = len(views), int(views[0].shape[0])
        try:
            result["lidar"] = metrics.lidar(views)
        except InputError as err:  # too few samples for the LDA matrix
            result["lidar"], result["lidar_error"] = None, str(err)
    if data.kind == "sts" and pairs is None:
        result["alignment"], result["n_pairs"] = None, 0  # no pair scored above the threshold
    if data.labels is not None:
        result["per_class"] = class_statistics(z, data.labels, data.classes)
        if len(set(data.labels.tolist())) >= 2 and z.shape[0] >= 4:
            train, test = knn_split(data.labels)
            k = min(200, train.numel())
            acc = knn_accuracy(z[train], data.labels[train], z[test], data.labels[test], k=k)
            result["knn"] = {"accuracy": acc, "k": k, "temperature": 0.07, "train": train.numel(), "test": test.numel()}
    result["_pairs"] = pairs  # for the figures; dropped before writing
    return result


def _figures(
    data: Dataset,
    z: Tensor,
    second: Tensor | None,
    pairs: Tensor | None,
    result: dict[str, Any],
    folder: Path,
    title: str,
) -> list[str]:
    """The alignment-uniformity point (with pairs), the circle (2-d) or the histogram of cosines; their names."""
    from .. import viz

    figure_files = []
    all_z = z if second is None else torch.cat([z, second])
    if result.get("alignment") is not None:
        point = {"alignment": result["alignment"], "uniformity": result["uniformity"]}
        point["anisotropy"] = result["anisotropy"]
        viz.plot_align_uniform([point], folder / "align_uniform.png", color_key="anisotropy", title=title)
        figure_files.append("align_uniform.png")
    if all_z.shape[1] == 2:
        labels = data.labels
        viz.plot_circle(all_z, folder / "circle.png", labels=labels, title=title, class_names=data.classes or None)
        figure_files.append("circle.png")
    else:
        plot_cosine_histogram(pair_cosines(all_z, pairs), folder / "cosines.png", title)
        figure_files.append("cosines.png")
    return figure_files


def _load(
    data_spec: str, encoder_spec: str, kind: str | None, root: str | None, split: str, limit: int, dev: torch.device
) -> tuple[Dataset, Encoder]:
    """The data set (limited) and the encoder, checked against each other."""
    try:
        data = load_data(data_spec, kind, root, split, encoder_modality(encoder_spec)).limited(limit)
    except DataNotFoundError as err:  # the loaders name the trainer's option; this command has its own
        message = (
            str(err).replace("--set data.root=PATH", "--data-root DIR").replace("--set data.root=", "--data-root ")
        )
        raise DataNotFoundError(message) from None
    if len(data) < 3:
        raise ConfigError(f"{data_spec!r} has {len(data)} items; the metrics need at least 3")
    encoder = load_encoder(encoder_spec, dev)
    wanted = "image" if data.kind == "images" else "text"  # sts, text and captions
    if encoder.modality != wanted:
        raise ConfigError(f"encoder {encoder_spec!r} embeds {encoder.modality}s but {data.name} is {data.kind} data")
    return data, encoder


def embed_image_text_run(
    run: str, data_spec: str, *, root: str | None, limit: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """The held-out images, captions and caption owners of an image-text run, embedded by its trained towers.

    The split is the run's own (its recipe's ``data.test_samples`` last images): never images it trained on.
    ``limit`` keeps the first images of that split (and their captions).
    """
    from .runs import load_run
    from .tasks import ImageTextTask

    recipe, task, model, _ = load_run(run, str(device), data_root=root)
    if not isinstance(task, ImageTextTask):
        raise ConfigError(
            f"run {run} is a {recipe.task!r} run; --kind image-text needs a two-tower image-text run "
            "(contrasphere train flickr8k-lit)"
        )
    if data_spec != recipe.data.dataset:
        raise ConfigError(f"run {run} was trained on {recipe.data.dataset}; analyse it on {recipe.data.dataset}")
    model.eval()
    images, texts, owner = task.test_embeddings(model)
    if 0 < limit < images.shape[0]:
        images, texts, owner = images[:limit], texts[owner < limit], owner[owner < limit]
    settings = {"run": run, "recipe": recipe.name, "loss": recipe.loss.name, "test_split": "last images, held out"}
    return images, texts, owner, settings


def _first_captions(owner: Tensor) -> Tensor:
    """True at the first caption of each image (the captions come image by image, in image order)."""
    return torch.cat([torch.ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])


def compute_image_text(
    images: Tensor, texts: Tensor, owner: Tensor, *, alpha: float, t: float, max_points: int | None
) -> dict[str, Any]:
    """Every number of the analysis of an image-text embedding: the image side with its first captions as
    positives, the text side, LiDAR over the captions of each image, and recall in both directions."""
    from ..evaluation import retrieval_recall_many

    n = images.shape[0]
    first = _first_captions(owner)
    if int(first.sum()) != n:
        raise ConfigError(f"expected one caption or more for each of the {n} images, got captions of {first.sum()}")
    result = metrics.report(images, texts[first], alpha=alpha, t=t, max_points=max_points)
    result["images"], result["captions"] = n, int(texts.shape[0])
    counts = torch.bincount(owner, minlength=n)
    views = int(counts.min())
    text = metrics.report(texts, alpha=alpha, t=t, max_points=max_points)
    if views >= 2 and n >= 2:  # the first `views` captions of each image, view by view
        starts = torch.cumsum(counts, 0) - counts
        caption_views = [texts[starts + v] for v in range(views)]
        try:
            text["lidar"], text["lidar_views"], text["lidar_samples"] = metrics.lidar(caption_views), views, n
        except InputError as err:  # too few samples for the LDA matrix
            text["lidar"], text["lidar_error"] = None, str(err)
    result["text"] = text
    image_owner = torch.arange(n)
    result["retrieval"] = {
        "image_to_text": retrieval_recall_many(images, texts, image_owner, owner),
        "text_to_image": retrieval_recall_many(texts, images, owner, image_owner),
    }
    return result


def analyze(
    data_spec: str,
    encoder_spec: str,
    *,
    kind: str | None = None,
    out: str | Path | None = None,
    batch_size: int = 64,
    limit: int = 0,
    device: str = "auto",
    root: str | None = None,
    split: str = "test",
    alpha: float = 2.0,
    t: float = 2.0,
    max_points: int | None = DEFAULT_MAX_POINTS,
    progress: bool = True,
    figures: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Embed ``data_spec`` with ``encoder_spec``, measure it and write the report folder; returns it and the JSON."""
    start = time.perf_counter()
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; choose {', '.join(KINDS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or more, got {limit}")
    dev = resolve_device(device)
    if kind == "image-text" or is_run(encoder_spec):
        return _analyze_image_text(
            data_spec, encoder_spec, kind=kind, out=out, limit=limit, device=dev, root=root, alpha=alpha, t=t,
            max_points=max_points, figures=figures, start=start,
        )  # fmt: skip
    data, encoder = _load(data_spec, encoder_spec, kind, root, split, limit, dev)
    folder = Path(out) if out else Path("analysis") / f"{data.name}-{Path(encoder_spec).stem or encoder_spec}"
    folder.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    items: Tensor | list[str] = data.images if data.images is not None else data.sentences
    z = embed(encoder, items, batch_size, progress)
    second = embed(encoder, data.second, batch_size, progress) if data.kind == "sts" else None
    embed_seconds = time.perf_counter() - t0
    if not torch.isfinite(z).all() or (second is not None and not torch.isfinite(second).all()):
        raise ConfigError(f"encoder {encoder_spec!r} returned NaN or Inf embeddings")

    result = compute(data, z, second, alpha=alpha, t=t, max_points=max_points)
    pairs = result.pop("_pairs")
    settings = {
        "data": data_spec,
        "dataset": data.name,
        "kind": data.kind,
        "split": data.split or None,
        "encoder": encoder_spec,
        "encoder_settings": encoder.settings,
        "image_size": encoder.image_size,
        "batch_size": batch_size,
        "limit": limit,
        "device": str(dev),
        "alpha": alpha,
        "t": t,
        "max_points": max_points,
        "items": len(data),
    }
    analysis: dict[str, Any] = {"settings": settings, "metrics": result}
    figure_files = (
        _figures(data, z, second, pairs, result, folder, f"{data.name} / {Path(encoder_spec).name}") if figures else []
    )
    analysis["figures"] = figure_files
    analysis["embed_seconds"] = round(embed_seconds, 3)
    analysis["seconds"] = round(time.perf_counter() - start, 3)
    write_atomic(folder / "analysis.json", json.dumps(analysis, indent=2) + "\n")
    write_atomic(folder / "report.md", format_report(analysis))
    return folder, analysis


def _analyze_image_text(
    data_spec: str,
    run: str,
    *,
    kind: str | None,
    out: str | Path | None,
    limit: int,
    device: torch.device,
    root: str | None,
    alpha: float,
    t: float,
    max_points: int | None,
    figures: bool,
    start: float,
) -> tuple[Path, dict[str, Any]]:
    """:func:`analyze` of a two-tower image-text run on its held-out split."""
    if not is_run(run):
        raise ConfigError(
            f"--kind image-text needs a run folder of an image-text model (with checkpoint.pt) as --encoder, got "
            f"{run!r}: train one with contrasphere train flickr8k-lit"
        )
    if kind not in (None, "image-text"):
        raise ConfigError(f"encoder {run} is an image-text run; --kind {kind} does not apply to it")
    t0 = time.perf_counter()
    images, texts, owner, run_settings = embed_image_text_run(run, data_spec, root=root, limit=limit, device=device)
    embed_seconds = time.perf_counter() - t0
    if images.shape[0] < 3:
        raise ConfigError(f"the run's held-out split has {images.shape[0]} images; the metrics need at least 3")
    result = compute_image_text(images, texts, owner, alpha=alpha, t=t, max_points=max_points)
    name = f"{data_spec}-{Path(run).name}"
    folder = Path(out) if out else Path("analysis") / name
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "data": data_spec,
        "dataset": data_spec,
        "kind": "image-text",
        "split": "held-out",
        "encoder": run,
        "encoder_settings": run_settings,
        "image_size": None,
        "limit": limit,
        "device": str(device),
        "alpha": alpha,
        "t": t,
        "max_points": max_points,
        "items": int(images.shape[0] + texts.shape[0]),
    }
    analysis: dict[str, Any] = {"settings": settings, "metrics": result}
    figure_files: list[str] = []
    if figures:
        from .. import viz

        title = f"{data_spec} / {Path(run).name}"
        point = {
            "alignment": result["alignment"],
            "uniformity": result["uniformity"],
            "anisotropy": result["anisotropy"],
        }
        viz.plot_align_uniform([point], folder / "align_uniform.png", color_key="anisotropy", title=title)
        first = _first_captions(owner)
        u_img, u_txt = F.normalize(images.double(), dim=1), F.normalize(texts[first].double(), dim=1)
        n = u_img.shape[0]
        j = (torch.arange(n) + torch.randint(1, n, (n,), generator=torch.Generator().manual_seed(0))) % n
        cosines = {
            "matching image-caption": (u_img * u_txt).sum(1),
            "non-matching image-caption": (u_img * u_txt[j]).sum(1),
            "image-image": pair_cosines(images, None)["random pairs"],
            "caption-caption": pair_cosines(texts[first], None)["random pairs"],
        }
        plot_cosine_histogram(cosines, folder / "cosines.png", title)
        figure_files = ["align_uniform.png", "cosines.png"]
    analysis["figures"] = figure_files
    analysis["embed_seconds"] = round(embed_seconds, 3)
    analysis["seconds"] = round(time.perf_counter() - start, 3)
    write_atomic(folder / "analysis.json", json.dumps(analysis, indent=2) + "\n")
    write_atomic(folder / "report.md", format_report(analysis))
    return folder, analysis
