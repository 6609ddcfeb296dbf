"""What a recipe trains on: data, model, the embeddings of one training step, held-out metrics and evaluation.

One training loop (:mod:`contrasphere.train`) serves every recipe; a task supplies the parts that differ:

- ``views``: two augmented views of each image (SimCLR / Wang & Isola); labels ride along for SupCon;
- ``text``: each sentence encoded twice with dropout on (unsupervised SimCSE);
- ``image_text``: an image and one of its captions (CLIP / SigLIP / LiT), the image tower frozen and its
  features computed once.

:meth:`Task.batch` receives the *global* batch's sample indices and a generator seeded for that step, draws all
randomness for the global batch, and prepares only this process's ``share`` (a slice): a run on K processes sees
the same views as a run on one. :meth:`Task.embed` runs the model on a prepared batch and returns exactly the
keyword arguments of the recipe's loss, so a training step is ``loss_fn(**task.embed(model, batch))``. The loop
times :meth:`Task.batch` as data preparation. Held-out metrics and evaluation take the plain model (not a
``DistributedDataParallel`` wrapper).
"""

from __future__ import annotations

import hashlib
import itertools
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import evaluation, metrics
from ..errors import ConfigError
from ..losses import LossSpec
from . import data as D
from .augment import Augment, AugmentConfig, center_view
from .config import DataConfig, EvalConfig, ModelConfig, Recipe
from .models import Embedder, ProjectionHead, TwoTower, build_encoder, feature_dim, text_length

LossInputs = Callable[[Tensor, Tensor, "Tensor | None"], dict[str, Tensor]]


def _batched(fn: Any, items: Any, n: int, batch: int = 256) -> Tensor:
    return torch.cat([fn(items[i : i + batch]) for i in range(0, n, batch)]) if n else torch.empty(0)


class Task:
    """Base class: subclasses set ``n_train`` (and ``has_labels``) and implement the methods below."""

    n_train: int
    has_labels: bool = False

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        evaluation: EvalConfig,
        *,
        augment: AugmentConfig,
        heldout_samples: int,
        loss: LossSpec,
        device: torch.device,
    ) -> None:
        self.data_config, self.model_config, self.eval_config, self.augment_config = data, model, evaluation, augment
        self.heldout_samples, self.device = heldout_samples, device
        self.loss_inputs = loss_inputs(loss, self.has_labels)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def batch(self, index: Tensor, share: slice, generator: torch.Generator) -> Any:
        """This process's ``share`` of the global batch ``index``, prepared for the model (views, sentences...)."""
        raise NotImplementedError

    def embed(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """The loss's keyword arguments for a prepared batch: ``loss_fn(**task.embed(model, batch))``."""
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
    """Two augmented views of each image; the labels ride along for supervised losses (SupCon)."""

    has_labels = True

    def __init__(self, data: DataConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        d = data
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
            raise ConfigError(f"dataset {d.dataset!r} is not an image dataset; see `contrasphere list datasets`")
        self.train = train.subset(d.train_samples, seed=1)
        self.probe_train = (
            probe_train.subset(d.train_samples, seed=1) if d.dataset == "torchvision-stl10" else self.train
        )
        self.test = test.subset(d.test_samples, seed=2)
        self.channels = int(self.train.images.shape[1])
        self.augment = Augment(self.augment_config, self.channels)
        self.n_train = len(self.train)

    def build_model(self) -> nn.Module:
        m = self.model_config
        encoder = build_encoder(
            m.encoder, in_channels=self.channels, image_size=self.augment_config.crop_size, widths=m.widths
        )
        head = ProjectionHead(feature_dim(encoder), m.out_dim, m.head, m.head_hidden)
        return Embedder(encoder, head, frozen_encoder=m.freeze_encoder)

    def batch(self, index: Tensor, share: slice, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Both views of this share, stacked ``(2 n_share, C, H, W)`` (all of ``a`` first), and their labels."""
        n = index.shape[0]
        params = self.augment.sample(2 * n, generator)  # every view of the global batch, drawn in one order
        mine = torch.arange(n)[share]
        images = self.train.images[index[mine]].to(self.device, non_blocking=True)
        view_a = self.augment.apply(images, {k: v[mine] for k, v in params.items()})
        view_b = self.augment.apply(images, {k: v[mine + n] for k, v in params.items()})
        return torch.cat([view_a, view_b]), self.train.labels[index[mine]].to(self.device)

    def embed(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        views, labels = batch
        z_a, z_b = model(views).split(labels.shape[0])
        return self.loss_inputs(z_a, z_b, labels)

    def _embed_both(self, model: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """The encoder features and the embeddings of ``images`` from one forward pass (the embedding is the head
        on those same features: one pass gives both, at half the cost of two)."""
        embedder = typing.cast(Embedder, model)
        parts: dict[str, list[Tensor]] = {"encoder": [], "output": []}
        for i in range(0, images.shape[0], 256):
            h = embedder.features(center_view(images[i : i + 256].to(self.device), self.augment_config))
            parts["encoder"].append(h.float().cpu())
            parts["output"].append(embedder.embed(h).float().cpu())
        return {k: torch.cat(v) if v else torch.empty(0) for k, v in parts.items()}

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        images = self.test.images[: self.heldout_samples]
        generator = torch.Generator().manual_seed(12345)  # the same held-out pairs every epoch
        params = self.augment.sample(2 * images.shape[0], generator)
        n = images.shape[0]
        z = []
        for start in range(0, n, 256):
            part = torch.arange(start, min(n, start + 256))
            x = images[part].to(self.device)
            va = self.augment.apply(x, {k: v[part] for k, v in params.items()})
            vb = self.augment.apply(x, {k: v[part + n] for k, v in params.items()})
            z.append((model(va).float().cpu(), model(vb).float().cpu()))
        model.train(was_training)
        z_a, z_b = torch.cat([a for a, _ in z]), torch.cat([b for _, b in z])
        return _pair_metrics(z_a, z_b, z_a)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        e = self.eval_config
        model.eval()
        results: dict[str, Any] = {"heldout": self.heldout(model)}
        tensors: dict[str, Tensor] = {}
        train_both, test_both = (
            self._embed_both(model, self.probe_train.images),
            self._embed_both(model, self.test.images),
        )
        for layer in ("encoder", "output"):
            train_z, test_z = train_both[layer], test_both[layer]
            r: dict[str, Any] = {
                "dim": int(test_z.shape[1]),
                "knn_accuracy": evaluation.knn_accuracy(
                    train_z, self.probe_train.labels, test_z, self.test.labels, k=e.knn_k, temperature=e.knn_temperature
                ),
            }
            if e.linear_probe:
                r["linear_probe"] = evaluation.linear_probe(
                    train_z,
                    self.probe_train.labels,
                    test_z,
                    self.test.labels,
                    epochs=e.probe_epochs,
                    protocol=e.probe_protocol,
                )
            if layer == "output":
                r["uniformity_test_set"] = metrics.uniformity(test_z, t=2)
                r["effective_rank"] = metrics.effective_rank(test_z)
                tensors = {"test_z": test_z, "test_labels": self.test.labels}
            results[layer] = r
        results["classes"] = self.test.classes
        return results, tensors


class TextTask(Task):
    """Unsupervised SimCSE: the positive of a sentence is the same sentence under another dropout mask."""

    def __init__(self, data: DataConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        d = data
        if d.dataset not in ("wiki1m", "text-lines"):
            raise ConfigError(f"dataset {d.dataset!r} is not a text dataset; use wiki1m (data.root=FILE for your own)")
        self.sentences = D.wiki_sentences(d.root or None)
        if d.train_samples:
            g = torch.Generator().manual_seed(1)
            pick = torch.randperm(len(self.sentences), generator=g)[: d.train_samples].sort().values
            self.sentences = [self.sentences[i] for i in pick]
        self.n_train = len(self.sentences)
        self.dev = D.sts("stsb", "dev", None)

    def build_model(self) -> nn.Module:
        m = self.model_config
        encoder = build_encoder(
            m.encoder, pretrained=m.pretrained, pooling=m.pooling, max_length=self.data_config.max_length
        )
        head = ProjectionHead(feature_dim(encoder), m.out_dim, m.head, m.head_hidden)
        return Embedder(encoder, head, frozen_encoder=m.freeze_encoder)

    def batch(self, index: Tensor, share: slice, generator: torch.Generator) -> list[str]:
        return [self.sentences[i] for i in index[share].tolist()]

    def embed(self, model: nn.Module, batch: list[str]) -> dict[str, Tensor]:
        z_a, z_b = model(batch + batch).split(len(batch))  # dropout makes the two copies differ
        return self.loss_inputs(z_a, z_b, None)

    def _embed(self, model: nn.Module, sentences: list[str]) -> Tensor:
        """Embeddings in the order given, computed in batches of similar length (less padding at 256 tokens)."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        z = _batched(lambda s: model(s).float().cpu(), [sentences[i] for i in order], len(sentences), 128)
        out = torch.empty_like(z)
        out[torch.tensor(order, dtype=torch.long)] = z
        return out

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        """SimCSE's protocol: alignment over STS-B dev pairs with gold score above 4, uniformity over all sentences
        (at the evaluation length, ``eval.max_length``)."""
        was_training = model.training
        model.eval()
        n = self.heldout_samples or len(self.dev.a)
        a, b, gold = self.dev.a[:n], self.dev.b[:n], self.dev.scores[:n]
        with text_length(model, self.eval_config.max_length):
            z_a, z_b = self._embed(model, a), self._embed(model, b)
        model.train(was_training)
        positive = gold > 4
        if int(positive.sum()) == 0:
            return {"uniformity": metrics.uniformity(torch.cat([z_a, z_b]), t=2)}
        return _pair_metrics(z_a[positive], z_b[positive], torch.cat([z_a, z_b]))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        model.eval()
        results: dict[str, Any] = {"heldout": self.heldout(model), "sts": {}}
        limit = self.data_config.test_samples
        with text_length(model, self.eval_config.max_length) as n_tokens:
            results["max_length"] = n_tokens  # what every number here was computed at
            for name in self.eval_config.sts_sets:
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
    """Image-caption pairs; the image tower is frozen (LiT), so its features are computed once and cached.

    With ``model.freeze_text_encoder`` the text tower is frozen too and its caption features are cached the same
    way: only the heads (and the loss's own parameters) train, on precomputed features.
    """

    def __init__(self, data: DataConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        d = data
        if d.dataset != "flickr8k":
            raise ConfigError(f"dataset {d.dataset!r} is not an image-text dataset; use flickr8k")
        pairs = D.flickr8k(d.root or None, d.image_size or 224)
        test = d.test_samples or max(1, len(pairs) // 5)
        train, self.test = pairs.split(test)
        if d.train_samples:
            train = D.CaptionedImages(
                train.images[: d.train_samples], train.captions[: d.train_samples], train.names[: d.train_samples]
            )
        self.train = train
        self.n_train = len(train)
        self.caption_start = [0, *itertools.accumulate(len(caps) for caps in train.captions)][:-1]  # flat row of each
        if not self.model_config.freeze_encoder:
            raise ConfigError("the image-text task trains with a frozen image tower (model.freeze_encoder=true)")
        self.test_text_tokens = 0  # with a frozen text tower: the length its cached test captions were encoded at

    def build_model(self) -> nn.Module:
        m = self.model_config
        image_encoder = build_encoder(m.encoder)
        self.image_mean, self.image_std = (
            getattr(image_encoder, "mean", (0.5,) * 3),
            getattr(image_encoder, "std", (0.5,) * 3),
        )
        image_encoder.to(self.device).eval()
        self.train_features = self._cached("image", self.train, lambda: self._image_features(image_encoder, self.train))
        self.test_features = self._cached("image", self.test, lambda: self._image_features(image_encoder, self.test))
        text_encoder = build_encoder(
            m.text_encoder, pretrained=m.pretrained, pooling=m.pooling, max_length=self.data_config.max_length
        )
        image = Embedder(nn.Identity(), ProjectionHead(feature_dim(image_encoder), m.out_dim, m.head, m.head_hidden))
        text_head = ProjectionHead(feature_dim(text_encoder), m.out_dim, m.head, m.head_hidden)
        self.frozen_text = m.freeze_text_encoder
        if self.frozen_text:  # every caption's features once; the tower itself is not part of the model
            text_encoder.to(self.device).eval()
            self.train_text = self._cached("text", self.train, lambda: self._text_features(text_encoder, self.train))
            with text_length(text_encoder, self.eval_config.max_length) as n_tokens:  # the test captions: as eval
                self.test_text = self._cached(
                    "text", self.test, lambda: self._text_features(text_encoder, self.test), n_tokens
                )
            self.test_text_tokens = n_tokens
            return TwoTower(image, Embedder(nn.Identity(), text_head))
        return TwoTower(image, Embedder(text_encoder, text_head))

    def _cached(
        self, kind: str, pairs: D.CaptionedImages, compute: Callable[[], Tensor], max_length: int = 0
    ) -> Tensor:
        """Frozen-tower features of ``pairs``, computed once and kept in the data cache, keyed by the tower (for
        text: at ``max_length`` tokens, default ``data.max_length``) and the content itself (every image's pixels
        for images, every caption for text), never by names alone."""
        m, d = self.model_config, self.data_config
        tokens = max_length or d.max_length
        tower = m.encoder if kind == "image" else f"{m.text_encoder}-{m.pretrained}-{m.pooling}-{tokens}"
        h = hashlib.sha256("\n".join([tower, str(d.image_size), *pairs.names]).encode())
        if kind == "image":
            h.update(pairs.images.contiguous().numpy().tobytes())
        else:
            h.update("\n".join(c for caps in pairs.captions for c in caps).encode())
        digest = h.hexdigest()[:16]
        return D._cached(f"flickr8k-{kind}-features-{len(pairs)}-{digest}", lambda: {"features": compute()})["features"]

    @torch.no_grad()
    def _image_features(self, encoder: nn.Module, pairs: D.CaptionedImages) -> Tensor:
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return _batched(
            lambda x: encoder(((x.float() / 255 - mean) / std).to(self.device)).float().cpu(),
            pairs.images,
            len(pairs),
            64,
        )

    @torch.no_grad()
    def _text_features(self, encoder: nn.Module, pairs: D.CaptionedImages) -> Tensor:
        captions = [c for caps in pairs.captions for c in caps]
        return _batched(lambda s: encoder(s).float().cpu(), captions, len(captions), 256)

    def batch(self, index: Tensor, share: slice, generator: torch.Generator) -> tuple[Tensor, Any]:
        """The cached image features of this share and one caption of each image, drawn for the global batch."""
        caption = torch.randint(0, 1 << 30, (index.shape[0],), generator=generator)  # one caption per image
        mine = index[share].tolist()
        counts = [len(self.train.captions[i]) for i in mine]
        picks = [int(c) % n for c, n in zip(caption[share], counts)]
        images = self.train_features[mine].to(self.device)
        if self.frozen_text:
            rows = [self.caption_start[i] + p for i, p in zip(mine, picks)]
            return images, self.train_text[rows].to(self.device)
        return images, [self.train.captions[i][p] for i, p in zip(mine, picks)]

    def embed(self, model: nn.Module, batch: tuple[Tensor, Any]) -> dict[str, Tensor]:
        z_a, z_b = model(*batch)
        return self.loss_inputs(z_a, z_b, None)

    @torch.no_grad()
    def test_embeddings(self, tower: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
        """The held-out images' and captions' embeddings, and the image each caption belongs to (``owner``)."""
        model = typing.cast(TwoTower, tower)
        images = model.a(self.test_features.to(self.device)).float().cpu()
        owner = torch.tensor([i for i, caps in enumerate(self.test.captions) for _ in caps])
        if self.frozen_text:
            texts = _batched(lambda x: model.b(x.to(self.device)).float().cpu(), self.test_text, len(owner), 1024)
        else:
            captions = [c for caps in self.test.captions for c in caps]
            with text_length(model, self.eval_config.max_length):
                texts = _batched(lambda s: model.b(s).float().cpu(), captions, len(captions), 128)
        return images, texts, owner

    @torch.no_grad()
    def heldout(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        images, texts, owner = self.test_embeddings(model)
        model.train(was_training)
        first = torch.cat([torch.ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])  # first caption of each image
        return {
            "alignment": metrics.alignment(images, texts[first], alpha=2),
            "uniformity_image": metrics.uniformity(images, t=2),
            "uniformity_text": metrics.uniformity(texts, t=2),
            "modality_gap": metrics.modality_gap(images, texts),
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
        model.eval()
        with text_length(model, self.eval_config.max_length) as n_tokens:
            images, texts, owner = self.test_embeddings(model)
        image_owner = torch.arange(images.shape[0])
        results = {
            "max_length": n_tokens or self.test_text_tokens,  # of the test captions
            "heldout": self.heldout(model),
            "test_images": int(images.shape[0]),
            "test_captions": int(texts.shape[0]),
            "text_to_image": evaluation.retrieval_recall_many(texts, images, owner, image_owner),
            "image_to_text": evaluation.retrieval_recall_many(images, texts, image_owner, owner),
        }
        return results, {}


TASK_CLASSES: dict[str, type[Task]] = {"views": ViewsTask, "text": TextTask, "image_text": ImageTextTask}


def build_task(recipe: Recipe, loss: LossSpec, device: torch.device) -> Task:
    """The task of ``recipe``, given the parts of the recipe it reads."""
    return TASK_CLASSES[recipe.task](
        recipe.data,
        recipe.model,
        recipe.eval,
        augment=recipe.augment,
        heldout_samples=recipe.train.heldout_samples,
        loss=loss,
        device=device,
    )


def loss_inputs(spec: LossSpec, has_labels: bool) -> LossInputs:
    """How a step's two embeddings ``z_a``, ``z_b`` (and labels) become the keyword arguments of the loss ``spec``.

    Resolved once, when the task is built: pairs stay pairs, ``z`` (and ``labels``) are both views stacked as one
    batch, ``views`` / ``modalities`` are the two views stacked ``(2, N, D)``. The embeddings are cast to float32,
    so that the loss runs outside autocast (logits divided by a temperature lose 2-3 digits in bfloat16).
    """
    inputs = spec.inputs
    if inputs == ("z", "labels") and not has_labels:
        raise ConfigError(f"loss {spec.name!r} needs class labels; this dataset has none")
    if inputs not in (("z_a", "z_b"), ("z", "labels"), ("z",)) and len(inputs) != 1:
        raise ConfigError(
            f"loss {spec.name!r} takes {', '.join(inputs)}: it needs a queue, momentum encoder or mixing that the "
            "training loop does not build; use it from the library (contrasphere.moco) or pick a pairwise loss"
        )

    def to_loss(z_a: Tensor, z_b: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        z_a, z_b = z_a.float(), z_b.float()
        if inputs == ("z_a", "z_b"):
            return {"z_a": z_a, "z_b": z_b}
        if inputs == ("z", "labels"):
            assert labels is not None
            return {"z": torch.cat([z_a, z_b]), "labels": torch.cat([labels, labels])}
        if inputs == ("z",):
            return {"z": torch.cat([z_a, z_b])}
        return {inputs[0]: torch.stack([z_a, z_b])}  # views / modalities stacked (V, N, D)

    return to_loss
