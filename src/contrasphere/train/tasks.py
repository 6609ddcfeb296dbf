"""What a recipe trains on: data, model, the embeddings of one training step, held-out metrics and evaluation.

One training loop (:mod:`contrasphere.train`) serves every recipe; a task supplies the parts that differ:

- ``views``: two augmented views of each image (SimCLR / Wang & Isola); labels ride along for SupCon;
- ``text``: each sentence encoded twice with dropout on (unsupervised SimCSE);
- ``image_text``: an image and one of its captions (CLIP / SigLIP / LiT), the image tower frozen and its
  features computed once.

:meth:`Task.step` receives the *global* batch's sample indices and a generator seeded for that step, draws all
randomness for the global batch, and encodes only this process's ``share`` (a slice): a run on K processes sees
the same views as a run on one.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from . import data as D
from .. import evaluation, metrics
from .augment import Augment, center_view
from .models import Embedder, ProjectionHead, TwoTower, build_encoder
from .config import Recipe


def _batched(fn: Any, items: Any, n: int, batch: int = 256) -> Tensor:
    return torch.cat([fn(items[i : i + batch]) for i in range(0, n, batch)]) if n else torch.empty(0)


class Task:
    """Base class: subclasses set ``n_train`` and implement the methods below."""

    n_train: int
    data_seconds: float = 0.0  # time spent preparing inputs (augmentation, tokenising), reset each epoch

    def __init__(self, recipe: Recipe, device: torch.device) -> None:
        self.recipe, self.device = recipe, device

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, index: Tensor, share: slice, generator: torch.Generator) -> dict[str, Tensor]:
        """Embeddings of this process's share of the global batch ``index``: ``{"z_a", "z_b"[, "labels"]}``."""
        raise NotImplementedError

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        """Alignment and uniformity (t=2) of held-out positive pairs, the paper's two quantities."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The downstream protocols; returns the results and tensors for the report's figures."""
        raise NotImplementedError


def _pair_metrics(z_a: Tensor, z_b: Tensor, z_all: Tensor | None = None) -> dict[str, float]:
    z_all = torch.cat([z_a, z_b]) if z_all is None else z_all
    return {
        "alignment": metrics.alignment(z_a, z_b, alpha=2),
        "uniformity": metrics.uniformity(z_all, t=2),
    }


class ViewsTask(Task):
    def __init__(self, recipe: Recipe, device: torch.device) -> None:
        super().__init__(recipe, device)
        d = recipe.data
        if d.dataset == "digits":
            train, test = D.digits()
        elif d.dataset == "cifar10":
            train, test = D.cifar10(d.root or None)
        elif d.dataset == "torchvision-cifar10":
            train, test = D.torchvision_cifar10(d.root or None, d.download)
        elif d.dataset == "torchvision-stl10":
            probe_train, test, train = D.torchvision_stl10(d.root or None, d.download)
        elif d.dataset == "image-folder":
            root = D.find_data("image-folder", d.root or None, "Pass data.root with train/ and test/ class folders.")
            size = d.image_size or None
            train, test = D.image_folder(root / "train", size), D.image_folder(root / "test", size)
        else:
            raise ValueError(f"dataset {d.dataset!r} is not an image dataset; see `contrasphere list datasets`")
        self.train = train.subset(d.train_samples, seed=1)
        self.probe_train = (
            probe_train.subset(d.train_samples, seed=1) if d.dataset == "torchvision-stl10" else self.train
        )
        self.test = test.subset(d.test_samples, seed=2)
        self.channels = int(self.train.images.shape[1])
        self.augment = Augment(recipe.augment, self.channels)
        self.n_train = len(self.train)

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        encoder = build_encoder(
            m.encoder, in_channels=self.channels, image_size=self.recipe.augment.crop_size, widths=m.widths
        )
        head = ProjectionHead(encoder.feature_dim, m.out_dim, m.head, m.head_hidden)
        return Embedder(encoder, head, frozen_encoder=m.freeze_encoder)

    def step(self, model: nn.Module, index: Tensor, share: slice, generator: torch.Generator) -> dict[str, Tensor]:
        began = time.perf_counter()
        n = index.shape[0]
        params = self.augment.sample(2 * n, generator)  # every view of the global batch, drawn in one order
        mine = torch.arange(n)[share]
        images = self.train.images[index[mine]].to(self.device, non_blocking=True)
        view_a = self.augment.apply(images, {k: v[mine] for k, v in params.items()})
        view_b = self.augment.apply(images, {k: v[mine + n] for k, v in params.items()})
        self.data_seconds += time.perf_counter() - began
        z = model(torch.cat([view_a, view_b]))
        z_a, z_b = z.split(mine.numel())
        return {"z_a": z_a, "z_b": z_b, "labels": self.train.labels[index[mine]].to(self.device)}

    def _embed(self, model: nn.Module, images: Tensor, features: bool = False) -> Tensor:
        inner = getattr(model, "module", model)

        def run(x: Tensor) -> Tensor:
            x = center_view(x.to(self.device), self.recipe.augment)
            return inner.features(x).float() if features else inner(x).float()

        return _batched(run, images, images.shape[0]).cpu()

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        inner = getattr(model, "module", model)
        was_training = inner.training
        inner.eval()
        images = self.test.images[: self.recipe.train.heldout_samples]
        generator = torch.Generator().manual_seed(12345)  # the same held-out pairs every epoch
        params = self.augment.sample(2 * images.shape[0], generator)
        n = images.shape[0]
        z = []
        for start in range(0, n, 256):
            part = torch.arange(start, min(n, start + 256))
            x = images[part].to(self.device)
            va = self.augment.apply(x, {k: v[part] for k, v in params.items()})
            vb = self.augment.apply(x, {k: v[part + n] for k, v in params.items()})
            z.append((inner(va).float().cpu(), inner(vb).float().cpu()))
        inner.train(was_training)
        z_a, z_b = torch.cat([a for a, _ in z]), torch.cat([b for _, b in z])
        return _pair_metrics(z_a, z_b, z_a)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        e, inner = self.recipe.eval, getattr(model, "module", model)
        inner.eval()
        results: dict[str, Any] = {"heldout": self.heldout(model)}
        tensors: dict[str, Tensor] = {}
        for layer in ("encoder", "output"):
            train_z = self._embed(model, self.probe_train.images, layer == "encoder")
            test_z = self._embed(model, self.test.images, layer == "encoder")
            r: dict[str, Any] = {
                "dim": int(test_z.shape[1]),
                "knn_accuracy": evaluation.knn_accuracy(
                    train_z, self.probe_train.labels, test_z, self.test.labels, k=e.knn_k, temperature=e.knn_temperature
                ),
            }
            if e.linear_probe:
                r["linear_probe"] = evaluation.linear_probe(
                    train_z, self.probe_train.labels, test_z, self.test.labels, epochs=e.probe_epochs,
                    protocol=e.probe_protocol,
                )  # fmt: skip
            if layer == "output":
                r["uniformity_test_set"] = metrics.uniformity(test_z, t=2)
                r["effective_rank"] = metrics.effective_rank(test_z)
                tensors = {"test_z": test_z, "test_labels": self.test.labels}
            results[layer] = r
        results["classes"] = self.test.classes
        return results, tensors


class TextTask(Task):
    """Unsupervised SimCSE: the positive of a sentence is the same sentence under another dropout mask."""

    def __init__(self, recipe: Recipe, device: torch.device) -> None:
        super().__init__(recipe, device)
        d = recipe.data
        if d.dataset not in ("wiki1m", "text-lines"):
            raise ValueError(f"dataset {d.dataset!r} is not a text dataset; use wiki1m (data.root=FILE for your own)")
        self.sentences = D.wiki_sentences(d.root or None)
        if d.train_samples:
            g = torch.Generator().manual_seed(1)
            pick = torch.randperm(len(self.sentences), generator=g)[: d.train_samples].sort().values
            self.sentences = [self.sentences[i] for i in pick]
        self.n_train = len(self.sentences)
        self.dev = D.sts("stsb", "dev", None)

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        encoder = build_encoder(
            m.encoder, pretrained=m.pretrained, pooling=m.pooling, max_length=self.recipe.data.max_length
        )
        head = ProjectionHead(encoder.feature_dim, m.out_dim, m.head, m.head_hidden)
        return Embedder(encoder, head, frozen_encoder=m.freeze_encoder)

    def step(self, model: nn.Module, index: Tensor, share: slice, generator: torch.Generator) -> dict[str, Tensor]:
        sentences = [self.sentences[i] for i in index[share].tolist()]
        z = model(sentences + sentences)  # dropout makes the two copies differ
        z_a, z_b = z.split(len(sentences))
        return {"z_a": z_a, "z_b": z_b}

    def _embed(self, model: nn.Module, sentences: list[str]) -> Tensor:
        inner = getattr(model, "module", model)
        return _batched(lambda s: inner(s).float().cpu(), sentences, len(sentences), 128)

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        """SimCSE's protocol: alignment over STS-B dev pairs with gold score above 4, uniformity over all sentences."""
        inner = getattr(model, "module", model)
        was_training = inner.training
        inner.eval()
        n = self.recipe.train.heldout_samples or len(self.dev.a)
        a, b, gold = self.dev.a[:n], self.dev.b[:n], self.dev.scores[:n]
        z_a, z_b = self._embed(model, a), self._embed(model, b)
        inner.train(was_training)
        positive = gold > 4
        if int(positive.sum()) == 0:
            return {"uniformity": metrics.uniformity(torch.cat([z_a, z_b]), t=2)}
        return _pair_metrics(z_a[positive], z_b[positive], torch.cat([z_a, z_b]))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        inner = getattr(model, "module", model)
        inner.eval()
        results: dict[str, Any] = {"heldout": self.heldout(model), "sts": {}}
        limit = self.recipe.data.test_samples
        for name in self.recipe.eval.sts_sets:
            splits = ("dev", "test") if name == "stsb" else ("test",)
            for split in splits:
                pairs = D.sts(name, split)
                k = limit or len(pairs.a)
                score = evaluation.sts_spearman(
                    self._embed(model, pairs.a[:k]), self._embed(model, pairs.b[:k]), pairs.scores[:k]
                )
                results["sts"][f"{name}-{split}" if name == "stsb" else name] = 100 * score
        return results, {}


class ImageTextTask(Task):
    """Image-caption pairs; the image tower is frozen (LiT), so its features are computed once and cached."""

    def __init__(self, recipe: Recipe, device: torch.device) -> None:
        super().__init__(recipe, device)
        d = recipe.data
        if d.dataset != "flickr8k":
            raise ValueError(f"dataset {d.dataset!r} is not an image-text dataset; use flickr8k")
        pairs = D.flickr8k(d.root or None, d.image_size or 224)
        test = d.test_samples or max(1, len(pairs) // 5)
        train, self.test = pairs.split(test)
        if d.train_samples:
            train = D.CaptionedImages(
                train.images[: d.train_samples], train.captions[: d.train_samples], train.names[: d.train_samples]
            )
        self.train = train
        self.n_train = len(train)
        if not recipe.model.freeze_encoder:
            raise ValueError("the image-text task trains with a frozen image tower (model.freeze_encoder=true)")

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        image_encoder = build_encoder(m.encoder)
        self.image_mean, self.image_std = (
            getattr(image_encoder, "mean", (0.5,) * 3),
            getattr(image_encoder, "std", (0.5,) * 3),
        )
        image_encoder.to(self.device).eval()
        self.train_features = self._image_features(image_encoder, self.train.images)
        self.test_features = self._image_features(image_encoder, self.test.images)
        text_encoder = build_encoder(
            m.text_encoder, pretrained=m.pretrained, pooling=m.pooling, max_length=self.recipe.data.max_length
        )
        image = Embedder(nn.Identity(), ProjectionHead(image_encoder.feature_dim, m.out_dim, m.head, m.head_hidden))
        text = Embedder(
            text_encoder,
            ProjectionHead(text_encoder.feature_dim, m.out_dim, m.head, m.head_hidden),
            frozen_encoder=m.freeze_text_encoder,
        )
        return TwoTower(image, text)

    @torch.no_grad()
    def _image_features(self, encoder: nn.Module, images: Tensor) -> Tensor:
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return _batched(
            lambda x: encoder(((x.float() / 255 - mean) / std).to(self.device)).float().cpu(), images, len(images), 64
        )

    def step(self, model: nn.Module, index: Tensor, share: slice, generator: torch.Generator) -> dict[str, Tensor]:
        caption = torch.randint(0, 1 << 30, (index.shape[0],), generator=generator)  # one caption per image
        mine = index[share].tolist()
        texts = [self.train.captions[i][int(c) % len(self.train.captions[i])] for i, c in zip(mine, caption[share])]
        z_a, z_b = model(self.train_features[mine].to(self.device), texts)
        return {"z_a": z_a, "z_b": z_b}

    def _embed(self, model: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
        inner = getattr(model, "module", model)
        images = inner.a(self.test_features.to(self.device)).float().cpu()
        captions = [c for caps in self.test.captions for c in caps]
        owner = torch.tensor([i for i, caps in enumerate(self.test.captions) for _ in caps])
        texts = _batched(lambda s: inner.b(s).float().cpu(), captions, len(captions), 128)
        return images, texts, owner

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        inner = getattr(model, "module", model)
        was_training = inner.training
        inner.eval()
        images, texts, owner = self._embed(model)
        inner.train(was_training)
        first = torch.cat([torch.ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])  # first caption of each image
        return {
            "alignment": metrics.alignment(images, texts[first], alpha=2),
            "uniformity_image": metrics.uniformity(images, t=2),
            "uniformity_text": metrics.uniformity(texts, t=2),
            "modality_gap": metrics.modality_gap(images, texts),
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        getattr(model, "module", model).eval()
        images, texts, owner = self._embed(model)
        image_owner = torch.arange(images.shape[0])
        results = {
            "heldout": self.heldout(model),
            "test_images": int(images.shape[0]),
            "test_captions": int(texts.shape[0]),
            "text_to_image": evaluation.retrieval_recall_many(texts, images, owner, image_owner),
            "image_to_text": evaluation.retrieval_recall_many(images, texts, image_owner, owner),
        }
        return results, {}


TASK_CLASSES: dict[str, type[Task]] = {"views": ViewsTask, "text": TextTask, "image_text": ImageTextTask}


def build_task(recipe: Recipe, device: torch.device) -> Task:
    return TASK_CLASSES[recipe.task](recipe, device)


def loss_inputs(spec_inputs: tuple[str, ...], out: dict[str, Tensor], loss_name: str) -> dict[str, Tensor]:
    """Map a step's ``z_a``/``z_b``/``labels`` onto the inputs a registered loss takes."""
    z_a, z_b = out["z_a"], out["z_b"]
    if spec_inputs == ("z_a", "z_b"):
        return {"z_a": z_a, "z_b": z_b}
    if spec_inputs == ("z", "labels"):
        if "labels" not in out:
            raise ValueError(f"loss {loss_name!r} needs class labels; this dataset has none")
        return {"z": torch.cat([z_a, z_b]), "labels": torch.cat([out["labels"], out["labels"]])}
    if spec_inputs == ("z",):
        return {"z": torch.cat([z_a, z_b])}
    if len(spec_inputs) == 1:  # views / modalities stacked (V, N, D)
        return {spec_inputs[0]: torch.stack([z_a, z_b])}
    raise ValueError(
        f"loss {loss_name!r} takes {', '.join(spec_inputs)}: it needs a queue, momentum encoder or mixing that the "
        "training loop does not build; use it from the library (contrasphere.moco) or pick a pairwise loss"
    )
