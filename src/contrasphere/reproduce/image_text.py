"""Image-text on Flickr8k: heads on frozen EfficientNet-Lite0 and MiniLM features, by CLIP, SigLIP and align-uniform.

Both towers are frozen (ImageNet-pretrained EfficientNet-Lite0, 1280-d; all-MiniLM-L6-v2, 384-d, mean-pooled), so
their features are computed once and cached; only a linear head per modality (to a shared 256-d sphere) and the
loss's own parameters (CLIP's temperature, SigLIP's scale and bias) are trained. The last 200 of the 1,000 images
(with their 5 captions each) are held out. Each training step pairs every image of the batch with one of its
captions, drawn per step. Reported before (the same heads at their random initialisation) and after training:
recall@1/5/10 text->image and image->text over the held-out images and all their captions, the modality gap (the
distance between the two modalities' mean embeddings), alignment of matching pairs and uniformity of each modality.
"""

from __future__ import annotations

import tempfile
import typing
from pathlib import Path
from typing import Any

import torch

from .. import viz
from ..train import build, train
from ..train.config import LossConfig, Recipe, updated
from ..train.models import TwoTower
from ..train.recipes import get_recipe
from .common import Report, log, scaled

LOSSES: dict[str, dict[str, Any]] = {
    "clip": {},
    "siglip": {},
    "align_uniform": {"alpha": 2, "t": 2},
}
HEAD_DIM = 256


def _recipe(loss: str, budget: float, test_images: int) -> Recipe:
    """``flickr8k-lit`` with both towers frozen: linear heads (and the loss's parameters) on cached features."""
    tiny = budget < 0.5  # the tests: the first 80 images for training
    return updated(
        get_recipe("flickr8k-lit"),
        {
            "loss": LossConfig(loss, dict(LOSSES[loss])),
            "model.freeze_text_encoder": True,
            "model.out_dim": HEAD_DIM,
            "data.max_length": 64,
            "data.train_samples": 80 if tiny else 0,
            "data.batch_size": 16 if tiny else 128,
            "data.test_samples": test_images,
            "optim.lr": 1e-3,
            "optim.weight_decay": 0.01,
            "optim.schedule": "constant",
            "optim.warmup_steps": 0,
            "train.epochs": scaled(100, budget),
            "train.heldout_samples": test_images,
            "eval.plots": False,
        },
    )


def _flat(results: dict[str, Any]) -> dict[str, Any]:
    """One evaluation as the report's row: recall both ways, the gap, alignment and each modality's uniformity."""
    return {
        "text_to_image": results["text_to_image"],
        "image_to_text": results["image_to_text"],
        **results["heldout"],
    }


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Image-text on Flickr8k: CLIP, SigLIP and align-uniform heads on frozen towers")
    test_images = 200 if budget >= 0.5 else 20  # of the 1,000 images in the shared data
    log("  caching EfficientNet-Lite0 image and all-MiniLM-L6-v2 caption features (once)", progress)
    first = _recipe("clip", budget, test_images)
    task, model, _ = build(first, torch.device("cpu"))
    runs: dict[str, Any] = {"before": _flat(task.evaluate(model)[0])}
    n, epochs, batch = task.n_train + test_images, first.train.epochs, first.data.batch_size
    for name in LOSSES:
        log(f"  training heads with {name} for {epochs} epochs", progress)
        with tempfile.TemporaryDirectory() as folder:
            result = train(_recipe(name, budget, test_images), folder, progress=progress)
        task, model = result["task"], result["model"]
        r = _flat(task.evaluate(model)[0])
        r["history"] = [{"epoch": e["epoch"], "loss": e["loss"]} for e in result["log"] if "loss" in e]
        r["loss_parameters"] = {k: v.detach().tolist() for k, v in result["loss_module"].state_dict().items()}
        r["train_on_held_in"] = _held_in_recall(task, typing.cast(TwoTower, model))
        runs[name] = r
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Images: {n - test_images} for training, {test_images} held out (with {5 * test_images} captions); "
        f"{epochs} epochs of AdamW (lr 1e-3, weight decay 0.01), batch {batch}, linear heads to {HEAD_DIM}-d, "
        f"seed 0; recipe `flickr8k-lit` with `model.freeze_text_encoder=true`, on the one training loop. "
        "Losses: CLIP (learnable temperature, init 0.07), SigLIP (learnable scale and bias, init 10 and "
        f"-10), align-uniform (alpha=2, t=2, equal weights).",
    )
    report.table(*_table(runs))
    report.text(f"Recall in percent over the held-out images. Chance R@1 text->image is {100 / test_images:.1f}%.")
    try:
        report.figure(
            viz.plot_recall(runs, report.folder / "image_text_recall.png"), "Recall@k before and after, both ways"
        )
    except ImportError:
        pass
    return report.save(
        {"experiment": "image-text", "budget": budget, "epochs": epochs, "test_images": test_images, "runs": runs}
    )


def _table(runs: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report's table: recall both ways in percent, the modality gap, alignment and uniformity per run."""
    header = [
        "heads",
        "T->I R@1",
        "R@5",
        "R@10",
        "I->T R@1",
        "R@5",
        "R@10",
        "modality gap",
        "alignment",
        "unif. image",
        "unif. text",
    ]
    rows = []
    for name, r in runs.items():
        t2i, i2t = r["text_to_image"], r["image_to_text"]
        label = "random heads (before)" if name == "before" else name
        rows.append(
            [
                label,
                *(100 * t2i[k] for k in ("R@1", "R@5", "R@10")),
                *(100 * i2t[k] for k in ("R@1", "R@5", "R@10")),
                r["modality_gap"],
                r["alignment"],
                r["uniformity_image"],
                r["uniformity_text"],
            ]
        )
    return header, rows


def _held_in_recall(task: Any, model: TwoTower) -> dict[str, float]:
    """Text->image recall on the training images themselves (how closely the heads fit what they saw)."""
    from .. import evaluation

    with torch.no_grad():
        model.eval()
        images = model.a(task.train_features).float()
        texts = model.b(task.train_text).float()
    owner = torch.tensor([i for i, caps in enumerate(task.train.captions) for _ in caps])
    return evaluation.retrieval_recall_many(texts, images, owner, torch.arange(images.shape[0]))
