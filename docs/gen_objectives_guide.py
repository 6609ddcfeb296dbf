"""The tables of the "which objective for which data" page, made from the loss registry.

The inputs of each loss (their names, which are shared across ranks, stacked ``(V, N, D)``, row indices, and
whether ``ids`` is accepted) come from its :class:`contrasphere.LossSpec`; the data it assumes and when to use it
are written here, once per loss. ``markdown()`` raises when the registry and :data:`GUIDE` disagree (a loss with no
entry, or an entry for no loss), and the docs build (``docs/hooks.py``) calls it, so the page cannot drift from
the registry. ``python docs/gen_objectives_guide.py`` prints the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import contrasphere
from contrasphere.losses import LossSpec, loss_spec


@dataclass(frozen=True)
class Family:
    title: str
    intro: str


FAMILIES = {
    "views": Family(
        "Two augmented views of each sample (SimCLR-style, no labels)",
        "`z_a[i]` and `z_b[i]` embed two random augmentations of sample `i`; every other sample of the batch is a "
        "negative (or, for the non-contrastive losses, there are no negatives at all).",
    ),
    "pairs": Family(
        "Paired data: image-text, query-document, two modalities",
        "`z_a[i]` and `z_b[i]` come from two encoders (or one encoder on two kinds of input) and are a known "
        "matching pair. Pass `ids` when several rows share a source (the captions of one image), so that they are "
        "not each other's negatives.",
    ),
    "labels": Family(
        "Labelled data",
        "One embedding per row, with an integer class label; rows of the same class are positives.",
    ),
    "queue": Family(
        "A momentum encoder and a queue of keys (MoCo-style)",
        "`q` from the encoder, `k` from its momentum copy (the same samples, another augmentation), `queue` a "
        "`contrasphere.moco.KeyQueue` of past keys: many negatives with small batches. The queue is the same on "
        "every rank and is never gathered.",
    ),
    "multiview": Family(
        "More than two views or modalities per sample",
        "A `(V, N, D)` stack (or a list of `V` tensors `(N, D)`): `V` augmentations, crops or modalities of `N` "
        "samples.",
    ),
    "dataset": Family(
        "Per-sample state across the training set",
        "These keep one running quantity per training sample, indexed by `index` (the samples' positions in the "
        "dataset, `0 .. num_samples - 1`): the data loader must return each sample's index.",
    ),
    "regularizer": Family(
        "Regularisers and single terms",
        "Spread or shape the embeddings; usually added to one of the objectives above rather than used alone.",
    ),
}


@dataclass(frozen=True)
class Entry:
    family: str
    data: str  # what the data must provide
    when: str  # one line: when to use it


GUIDE: dict[str, Entry] = {
    # two views
    "align_uniform": Entry(
        "views",
        "two augmented views",
        "The paper's objective: separately weighted alignment and uniformity terms; its defaults (`alpha=2`, "
        "`t=2`, equal weights) are a strong baseline.",
    ),
    "nt_xent": Entry(
        "views",
        "two augmented views",
        "SimCLR's default; large batches (thousands) help, and the tiled engine keeps them memory-linear.",
    ),
    "dcl": Entry(
        "views",
        "two augmented views",
        "NT-Xent without the positive in the denominator: less sensitive to batch size and temperature.",
    ),
    "dclw": Entry("views", "two augmented views", "DCL with easy positives down-weighted (vMF weighting)."),
    "debiased": Entry(
        "views",
        "two augmented views; a guess of the class prior `tau_plus`",
        "Unlabelled data with few classes, where in-batch negatives are often false negatives.",
    ),
    "hard_negative": Entry(
        "views",
        "two augmented views; a class prior `tau_plus`",
        "Debiased loss that also up-weights hard negatives (`beta`): sharper features when negatives are easy.",
    ),
    "kernel_info_nce": Entry(
        "views",
        "two augmented views",
        "NT-Xent with a Gaussian, Laplacian or mixed kernel on distances instead of the exponential of inner products.",
    ),
    "macl": Entry(
        "views",
        "two augmented views (or pairs)",
        "The temperature follows the batch's alignment: eases the uniformity-tolerance trade-off of a fixed "
        "temperature.",
    ),
    "margin_info_nce": Entry(
        "views",
        "two views (e.g. two segments of one speaker's audio), unit vectors",
        "When positives must beat negatives by a margin (AM/AAM-Softmax style), as in speaker verification.",
    ),
    "amcl": Entry(
        "views",
        "two augmented views; one or more projection heads",
        "Learned per-pair temperatures over several heads; dense `N x N`, for moderate batches.",
    ),
    "i_mix": Entry(
        "views",
        "two views, one of them mixed by `contrasphere.functional.mix_inputs` (`mix_index`, `mix_lambda`)",
        "Domain-agnostic regularisation by input mixing: small data sets, or domains without good augmentations.",
    ),
    "spectral": Entry(
        "views",
        "two augmented views",
        "No softmax: a low-rank factorisation of the augmentation graph, with provable guarantees.",
    ),
    "barlow_twins": Entry(
        "views",
        "two augmented views",
        "No negatives: decorrelates features; works with small batches and benefits from wide projectors.",
    ),
    "vicreg": Entry(
        "views",
        "two views (the branches may be different encoders)",
        "No negatives: variance, invariance and covariance terms; robust with small batches and unlike branches.",
    ),
    "swav": Entry(
        "views",
        "two augmented views; learnable prototypes (held by the module)",
        "Online clustering (Sinkhorn codes) instead of pairwise negatives; works with small batches.",
    ),
    # pairs
    "clip": Entry(
        "pairs",
        "image-text (or any two-modality) pairs",
        "Two towers with a learnable temperature; the standard for image-text pretraining.",
    ),
    "siglip": Entry(
        "pairs",
        "image-text pairs",
        "Sigmoid per pair, no softmax over the batch: cheap to distribute, good at small and very large batches.",
    ),
    "euclidean_clip": Entry(
        "pairs",
        "image-text pairs",
        "CLIP with negative squared Euclidean distances as logits (EuCLIP).",
    ),
    "hn_nce": Entry(
        "pairs",
        "image-text pairs",
        "CLIP with negatives reweighted towards the hard ones: noisy web pairs with many easy negatives.",
    ),
    "cwcl": Entry(
        "pairs",
        "pairs of a new modality and a frozen pre-trained one (`z_a` by default, or `z_ref`)",
        "Aligning a new encoder to a frozen one: similar non-matching pairs count as partial positives.",
    ),
    "info_nce": Entry(
        "pairs",
        "query-key pairs (views or modalities); optional extra `negatives`",
        "One direction, `z_a` to `z_b` (queries to documents, anchors to positives); mined hard negatives as "
        "`negatives`.",
    ),
    "gte_info_nce": Entry(
        "pairs",
        "query-document text pairs",
        "Text embeddings for retrieval: one softmax over query-document, query-query and document-document pairs.",
    ),
    # labels
    "supcon": Entry(
        "labels",
        "class labels (optionally several views per sample)",
        "Labelled data: every same-class sample is a positive; an alternative to cross-entropy pretraining.",
    ),
    "supervised_ce": Entry(
        "labels",
        "class labels; `dim` and `num_classes` given",
        "The supervised predictive baseline (Wang & Isola, Figure 3): a linear classifier on the embeddings, "
        "trained with the encoder by cross-entropy.",
    ),
    # queue
    "moco": Entry(
        "queue",
        "a momentum encoder and a queue of keys",
        "Many negatives at a small batch size (a single GPU or CPU).",
    ),
    "align_uniform_queue": Entry(
        "queue",
        "a momentum encoder and a queue of keys",
        "The paper's ImageNet setting: alignment plus uniformity against the queue, when batches are small.",
    ),
    "mochi": Entry(
        "queue",
        "a momentum encoder and a queue of keys",
        "MoCo with synthetic hard negatives mixed from the hardest queue entries.",
    ),
    "feature_transformation": Entry(
        "queue",
        "a momentum encoder and a queue of keys",
        "MoCo with extrapolated positives and interpolated negatives in feature space: harder pairs for free.",
    ),
    # several views
    "cmc": Entry(
        "multiview",
        "`V >= 2` views or modalities (e.g. colour channels, depth, flow)",
        "InfoNCE between every pair of views: learn what all the views share.",
    ),
    "poly_view": Entry(
        "multiview",
        "`V >= 2` augmented views per sample",
        "More than two views per sample: each view an anchor for every other; more views, better features.",
    ),
    "cacr": Entry(
        "multiview",
        "`V >= 2` augmented views",
        "Attraction weighted towards far positives, repulsion towards close negatives; dense `N x N`.",
    ),
    "mmcr": Entry(
        "multiview",
        "`V >= 2` augmented views",
        "No negatives: maximise the nuclear norm of the views' centroids (manifold capacity).",
    ),
    "decoupled_uniformity": Entry(
        "multiview",
        "`V >= 2` views; optional per-sample `prior` (metadata, weak labels, a generative model's features)",
        "When prior knowledge says which samples are alike: the kernel shares centroids between them (KCL).",
    ),
    "symile": Entry(
        "multiview",
        "`M >= 2` modalities of each sample",
        "Three or more modalities with higher-order dependence (beyond pairwise CLIP).",
    ),
    "sigreg": Entry(
        "multiview",
        "`V` views of the batch",
        "LeJEPA's regulariser: pushes the embeddings towards an isotropic Gaussian; add it to a prediction loss.",
    ),
    # dataset-level state
    "sogclr": Entry(
        "dataset",
        "two views and each sample's dataset index; the training-set size",
        "Global contrastive loss at small batches, through per-sample moving averages.",
    ),
    "isogclr": Entry(
        "dataset",
        "image-text pairs and each sample's dataset index; the training-set size",
        "SogCLR with a learned temperature per sample: noisy image-text data at small batches.",
    ),
    # regularisers
    "alignment": Entry(
        "regularizer",
        "positive pairs",
        "The alignment term alone: a metric or a component; alone it collapses every embedding to one point.",
    ),
    "uniformity": Entry(
        "regularizer",
        "a batch of embeddings",
        "The uniformity term alone: spread embeddings over the sphere, e.g. added to a supervised loss.",
    ),
    "koleo": Entry(
        "regularizer",
        "a batch of embeddings",
        "Spread by nearest-neighbour distances (DINOv2); add to another loss.",
    ),
    "gor": Entry(
        "regularizer",
        "positive pairs (the non-matching pairs are the negatives)",
        "Make non-matching descriptors as spread out as uniform vectors; add to a metric-learning loss.",
    ),
}


def inputs(spec: LossSpec) -> str:
    """The loss's forward arguments, each with its role as the registry states it."""
    parts = []
    for name in spec.inputs:
        note = []
        if name in spec.shared:
            note.append("shared by all ranks")
        if name in spec.stacked:
            note.append("`(V, N, D)`")
        if name in spec.indices:
            note.append("row indices")
        parts.append(f"`{name}`" + (f" ({', '.join(note)})" if note else ""))
    if spec.takes_ids:
        parts.append("optional `ids`")
    return ", ".join(parts)


def check() -> None:
    """Raise unless every registered loss has exactly one entry in :data:`GUIDE` (and each entry a family)."""
    registered = set(contrasphere.list_losses())
    missing = sorted(registered - GUIDE.keys())
    unknown = sorted(GUIDE.keys() - registered)
    families = sorted({entry.family for entry in GUIDE.values()} - FAMILIES.keys())
    if missing or unknown or families:
        raise ValueError(
            "docs/gen_objectives_guide.py is out of date with the loss registry: "
            f"no entry for {missing}; entries for unregistered losses {unknown}; unknown families {families}"
        )


def markdown() -> str:
    """One table per kind of data: name, inputs, what the data must provide, when to use it."""
    check()
    out = []
    for key, family in FAMILIES.items():
        names = [name for name, entry in GUIDE.items() if entry.family == key]
        if not names:
            continue
        out += [f"### {family.title}", "", family.intro, ""]
        out += ["| name | inputs | the data | when to use it |", "|---|---|---|---|"]
        for name in names:
            entry, spec = GUIDE[name], loss_spec(name)
            cell = f"`{name}`" + (" (dense `N x N`)" if spec.dense_pairs else "")
            out.append(f"| {cell} | {inputs(spec)} | {entry.data} | {entry.when} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
