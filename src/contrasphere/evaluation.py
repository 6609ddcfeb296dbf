"""Evaluation protocols on frozen embeddings: weighted kNN, linear probe, STS Spearman, retrieval recall@k.

Pure functions of embeddings and labels: they run without gradients (the linear probe trains only its own
classifier), work in chunks so that memory grows with the chunk and not with ``N_train x N_test``, take tensors or
NumPy arrays, and return Python numbers. Inputs are checked like every other function of the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import _validate as check
from .errors import InputError, InputTypeError


def _tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, (np.ndarray, list, tuple)):
        x = torch.as_tensor(np.asarray(x))
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, numpy.ndarray or list, got {type(x).__name__}")
    return x.detach()


def _embeddings(value: Any, name: str) -> Tensor:
    z = check.embeddings(_tensor(value, name), name)
    return z if z.dtype == torch.float64 else z.float()


def _two_sets(a: Any, b: Any, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """Both sets checked (shape, NaN/Inf) and in one dtype: float64 if either is, else float32."""
    return check.common_dtype(_embeddings(a, name_a), _embeddings(b, name_b))


def _scores(value: Any, name: str) -> Tensor:
    """A 1-d sequence of finite numbers (gold similarity scores, a variable to rank), in float64."""
    x = _tensor(value, name).double().flatten()
    check.finite(x, name, "a rank correlation needs a finite value for every pair: drop the pairs without one")
    return x


def _labels(value: Any, n: int, name: str) -> Tensor:
    y = check.labels(_tensor(value, name), n, name).long()
    if int(y.min()) < 0:
        raise InputError(f"{name} must hold class ids >= 0, got {int(y.min())}")
    return y


@torch.no_grad()
def knn_predict(
    train_z: Any,
    train_y: Any,
    test_z: Any,
    *,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    r"""Weighted k-nearest-neighbour classification on the unit sphere, ``(N_test,)`` predicted labels.

    Each test embedding votes with its ``k`` most cosine-similar training embeddings, neighbour ``j`` weighted
    :math:`e^{\cos_j / \tau}` (Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018, Sec. 3.4; the protocol of most self-supervised papers, ``k = 200``,
    :math:`\tau = 0.07`). Embeddings are L2-normalised first. ``k`` larger than the training set uses all of it;
    ties in the vote go to the smallest class id.
    """
    train_z, test_z = _two_sets(train_z, test_z, "train_z", "test_z")
    check.same_dim(train_z, test_z, "train_z", "test_z")
    train_y = _labels(train_y, train_z.shape[0], "train_y")
    temperature = check.temperature(temperature, "temperature")
    check.integer(k, "k")
    classes = int(train_y.max()) + 1 if num_classes is None else num_classes
    k = min(k, train_z.shape[0])
    train_n, test_n = F.normalize(train_z, dim=1), F.normalize(test_z, dim=1)
    out = []
    for chunk in torch.split(test_n, chunk_size):
        sims, idx = (chunk @ train_n.T).topk(k, dim=1)
        votes = torch.zeros(chunk.shape[0], classes, dtype=sims.dtype)
        # weights relative to the nearest neighbour's (topk sorts), e^((cos_j - cos_1) / tau) in (0, 1]: the vote's
        # argmax is unchanged and e^(cos / tau) no longer overflows (float32 below tau = 0.0113)
        votes.scatter_add_(1, train_y[idx], ((sims - sims[:, :1]) / temperature).exp())
        out.append(votes.argmax(1))
    return torch.cat(out)


def knn_accuracy(train_z: Any, train_y: Any, test_z: Any, test_y: Any, **kwargs: Any) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``test_y``, in [0, 1]."""
    predicted = knn_predict(train_z, train_y, test_z, **kwargs)
    test_y = _labels(test_y, predicted.shape[0], "test_y")
    return float((predicted == test_y).double().mean())


@check.hyperparameters(epochs=check.integer, batch_size=check.integer)
def linear_probe(
    train_z: Any,
    train_y: Any,
    test_z: Any,
    test_y: Any,
    *,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    normalize: bool = True,
    seed: int = 0,
    protocol: Literal["fast", "paper"] = "fast",
) -> dict[str, float]:
    """Train a linear (softmax) classifier on frozen training embeddings; report train and test accuracy.

    Adam on the cross-entropy, ``epochs`` passes over shuffled mini-batches (seeded), features L2-normalised and
    then standardised with the training set's mean and deviation (``normalize``). Returns
    ``{"train_accuracy", "test_accuracy", "test_loss"}``.

    ``protocol="paper"`` follows Wang & Isola's linear evaluation instead: raw features (no normalisation),
    Adam with lr 1e-3 and betas (0.5, 0.999), learning rate x0.2 at 60% and 80% of the epochs; ``lr``,
    ``weight_decay`` and ``normalize`` are then ignored.
    """
    paper = protocol == "paper"
    if paper:
        lr, weight_decay, normalize = 1e-3, 0.0, False
    train_z, test_z = (z.float() for z in _two_sets(train_z, test_z, "train_z", "test_z"))
    check.same_dim(train_z, test_z, "train_z", "test_z")
    train_y = _labels(train_y, train_z.shape[0], "train_y")
    test_y = _labels(test_y, test_z.shape[0], "test_y")
    if normalize:
        train_z, test_z = F.normalize(train_z, dim=1), F.normalize(test_z, dim=1)
        mean, std = train_z.mean(0), train_z.std(0).clamp_min(1e-6)
        train_z, test_z = (train_z - mean) / std, (test_z - mean) / std
    classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        classifier = torch.nn.Linear(train_z.shape[1], classes)
        torch.nn.init.zeros_(classifier.weight), torch.nn.init.zeros_(classifier.bias)
        betas = (0.5, 0.999) if paper else (0.9, 0.999)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
        milestones = [int(0.6 * epochs), int(0.8 * epochs)] if paper else []
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.2)
        for _ in range(epochs):
            for batch in torch.split(torch.randperm(train_z.shape[0], generator=generator), batch_size):
                loss = F.cross_entropy(classifier(train_z[batch]), train_y[batch])
                optimizer.zero_grad()
                torch.autograd.backward(loss)
                optimizer.step()
            schedule.step()
    with torch.no_grad():
        test_logits = classifier(test_z)
        return {
            "train_accuracy": float((classifier(train_z).argmax(1) == train_y).double().mean()),
            "test_accuracy": float((test_logits.argmax(1) == test_y).double().mean()),
            "test_loss": float(F.cross_entropy(test_logits, test_y)),
        }


def _ranks(x: Tensor) -> Tensor:
    """Ranks from 1, ties given their average rank (as scipy.stats.rankdata)."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    # average the ranks within runs of equal values
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    run_sums = torch.zeros(counts.shape[0], dtype=torch.float64).index_add_(0, inverse, ranks[order])
    ranks[order] = (run_sums / counts)[inverse]
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two 1-d sequences (Pearson correlation of their tie-averaged ranks)."""
    x, y = _scores(x, "x"), _scores(y, "y")
    if x.numel() != y.numel() or x.numel() < 2:
        raise InputError(f"x and y need the same length >= 2, got {x.numel()} and {y.numel()}")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    if denominator == 0:
        raise InputError("one of the sequences is constant: its rank correlation is undefined")
    return float((rx * ry).sum()) / denominator


@torch.no_grad()
def sts_spearman(z_a: Any, z_b: Any, gold: Any) -> float:
    """STS evaluation: Spearman correlation between the pairs' cosine similarities and the gold scores.

    The protocol of SentEval / SimCSE ("all" setting for STS12-16 is the caller's choice of concatenation).
    """
    z_a, z_b = _two_sets(z_a, z_b, "z_a", "z_b")
    check.same_shape(z_a, z_b, "z_a", "z_b")
    gold = _scores(gold, "gold")
    if gold.numel() != z_a.shape[0]:
        raise InputError(f"gold needs one score per pair ({z_a.shape[0]}), got {gold.numel()}")
    return spearman(F.cosine_similarity(z_a.double(), z_b.double(), dim=1), gold)


@torch.no_grad()
def retrieval_recall(
    queries: Any,
    gallery: Any,
    query_to_gallery: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k of cross-modal retrieval by cosine similarity: the fraction of queries with a match in the top k.

    ``query_to_gallery[i]`` is the gallery index that matches query ``i`` (e.g. the image of caption ``i``);
    for image-to-text retrieval with several captions per image, pass the captions as the gallery and use
    :func:`retrieval_recall_many`. Returns ``{"R@1": ..., "R@5": ..., ...}``.
    """
    targets = _tensor(query_to_gallery, "query_to_gallery").long().flatten()
    owners = torch.arange(_tensor(gallery, "gallery").shape[0])
    return retrieval_recall_many(queries, gallery, targets, owners, ks=ks, chunk_size=chunk_size)


@torch.no_grad()
def retrieval_recall_many(
    queries: Any,
    gallery: Any,
    query_groups: Any,
    gallery_groups: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k where a query matches every gallery item of its group (image-to-text with 5 captions per image).

    ``query_groups`` ``(Q,)`` and ``gallery_groups`` ``(G,)`` give each item's group (e.g. the image id); a query
    counts as retrieved at ``k`` when any of its group's gallery items ranks among its ``k`` most similar.
    """
    queries, gallery = _two_sets(queries, gallery, "queries", "gallery")
    check.same_dim(queries, gallery, "queries", "gallery")
    query_groups = _tensor(query_groups, "query_groups").long().flatten()
    gallery_groups = _tensor(gallery_groups, "gallery_groups").long().flatten()
    if query_groups.numel() != queries.shape[0] or gallery_groups.numel() != gallery.shape[0]:
        raise InputError("query_groups and gallery_groups need one group per query and per gallery item")
    if not bool(torch.isin(query_groups, gallery_groups).all()):
        raise InputError("some queries' groups have no item in the gallery: their recall would be 0 by construction")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise InputError(f"ks must hold positive integers, got {ks}")
    q, g = F.normalize(queries, dim=1), F.normalize(gallery, dim=1)
    hits = dict.fromkeys(ks, 0)
    for start in range(0, q.shape[0], chunk_size):
        scores = q[start : start + chunk_size] @ g.T
        groups = query_groups[start : start + chunk_size]
        # rank of the best-ranked matching item = number of gallery items scoring above it
        best_match = scores.masked_fill(gallery_groups[None, :] != groups[:, None], -torch.inf).amax(1)
        rank = (scores > best_match[:, None]).sum(1)
        for k in ks:
            hits[k] += int((rank < k).sum())
    return {f"R@{k}": hits[k] / q.shape[0] for k in ks}
