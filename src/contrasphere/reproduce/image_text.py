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

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..train import data as D
from .. import evaluation, metrics
from ..losses import create_loss
from ..train.models import EfficientNetLite0, TextEncoder
from .common import Report, log, scaled

LOSSES = {
    "clip": {},
    "siglip": {},
    "align_uniform": {"alpha": 2, "t": 2},
}
HEAD_DIM = 256


def _features(pairs: D.CaptionedImages, progress: bool) -> dict[str, torch.Tensor]:
    def build() -> dict[str, torch.Tensor]:
        log(
            "  encoding images with EfficientNet-Lite0 and captions with all-MiniLM-L6-v2 (cached afterwards)", progress
        )
        tower = EfficientNetLite0().eval()
        with torch.no_grad():
            images = torch.cat(
                [tower((pairs.images[i : i + 50].float() / 255 - 0.5) / 0.5) for i in range(0, len(pairs), 50)]
            )
            text = TextEncoder(max_length=64).eval()
            captions = [c for caps in pairs.captions for c in caps]
            texts = torch.cat([text(captions[i : i + 256]) for i in range(0, len(captions), 256)])
        owner = torch.tensor([i for i, caps in enumerate(pairs.captions) for _ in caps])
        return {"images": images, "texts": texts, "owner": owner}

    digest = hashlib.sha256("\n".join(pairs.names).encode()).hexdigest()[:16]
    key = f"flickr8k-features-{len(pairs)}-{digest}"
    return D._cached(key, build)


def _evaluate(heads: dict[str, torch.nn.Module], feats: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        img = F.normalize(heads["image"](feats["images"][keep]), dim=1)
        text_rows = torch.isin(feats["owner"], keep)
        txt = F.normalize(heads["text"](feats["texts"][text_rows]), dim=1)
        owner = torch.searchsorted(keep, feats["owner"][text_rows])
    first = torch.cat([torch.ones(1, dtype=torch.bool), owner[1:] != owner[:-1]])
    image_ids = torch.arange(img.shape[0])
    return {
        "text_to_image": evaluation.retrieval_recall_many(txt, img, owner, image_ids),
        "image_to_text": evaluation.retrieval_recall_many(img, txt, image_ids, owner),
        "modality_gap": metrics.modality_gap(img, txt),
        "alignment": metrics.alignment(img, txt[first], alpha=2),
        "uniformity_image": metrics.uniformity(img, t=2),
        "uniformity_text": metrics.uniformity(txt, t=2),
    }


def _heads(seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {"image": torch.nn.Linear(1280, HEAD_DIM), "text": torch.nn.Linear(384, HEAD_DIM)}


def train_heads(
    loss_name: str, feats: dict[str, torch.Tensor], train_ids: torch.Tensor, *, epochs: int, batch: int = 128,
    lr: float = 1e-3, seed: int = 0,
) -> tuple[dict[str, torch.nn.Module], list[dict[str, float]], torch.nn.Module]:  # fmt: skip
    heads = _heads(seed)
    loss_fn = create_loss(loss_name, **LOSSES[loss_name])
    params = [p for h in heads.values() for p in h.parameters()] + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    captions_of = [torch.nonzero(feats["owner"] == i).flatten() for i in range(int(feats["owner"].max()) + 1)]
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for index in train_ids[torch.randperm(len(train_ids), generator=generator)].split(batch):
            if len(index) < 2:
                continue
            pick = torch.randint(0, 1 << 30, (len(index),), generator=generator)
            rows = torch.stack([captions_of[i][p % len(captions_of[i])] for i, p in zip(index.tolist(), pick.tolist())])
            z_img = F.normalize(heads["image"](feats["images"][index]), dim=1)
            z_txt = F.normalize(heads["text"](feats["texts"][rows]), dim=1)
            loss = loss_fn(z_img, z_txt)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        history.append({"epoch": epoch + 1, "loss": total / max(1, steps)})
    return heads, history, loss_fn


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Image-text on Flickr8k: CLIP, SigLIP and align-uniform heads on frozen towers")
    test_images = 200 if budget >= 0.5 else 20
    pairs = D.flickr8k(None, 224)
    if budget < 0.5:  # the tiny budget of the tests: the first 100 images
        pairs = D.CaptionedImages(pairs.images[:100], pairs.captions[:100], pairs.names[:100])
    feats = _features(pairs, progress)
    n = len(pairs)
    train_ids, test_ids = torch.arange(n - test_images), torch.arange(n - test_images, n)
    epochs = scaled(100, budget)
    before = _evaluate(_heads(0), feats, test_ids)
    runs: dict[str, Any] = {"before": before}
    for name in LOSSES:
        log(f"  training heads with {name} for {epochs} epochs", progress)
        heads, history, loss_fn = train_heads(name, feats, train_ids, epochs=epochs)
        result = _evaluate(heads, feats, test_ids)
        result["history"] = history
        result["loss_parameters"] = {k: v.detach().tolist() for k, v in loss_fn.state_dict().items()}
        result["train_on_held_in"] = _evaluate(heads, feats, train_ids)["text_to_image"]
        runs[name] = result
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Images: {n - test_images} for training, {test_images} held out (with {5 * test_images} captions); "
        f"{epochs} epochs of AdamW (lr 1e-3, weight decay 0.01), batch 128, linear heads to {HEAD_DIM}-d, "
        f"seed 0. Losses: CLIP (learnable temperature, init 0.07), SigLIP (learnable scale and bias, init 10 and "
        f"-10), align-uniform (alpha=2, t=2, equal weights).",
    )
    header = ["heads", "T->I R@1", "R@5", "R@10", "I->T R@1", "R@5", "R@10", "modality gap", "alignment",
              "unif. image", "unif. text"]  # fmt: skip
    rows = []
    for name, r in runs.items():
        t2i, i2t = r["text_to_image"], r["image_to_text"]
        label = "random heads (before)" if name == "before" else name
        rows.append([label, *(100 * t2i[k] for k in ("R@1", "R@5", "R@10")), *(100 * i2t[k] for k in ("R@1", "R@5", "R@10")),
                     r["modality_gap"], r["alignment"], r["uniformity_image"], r["uniformity_text"]])  # fmt: skip
    report.table(header, rows)
    report.text("Recall in percent over the held-out images. Chance R@1 text->image is "
                f"{100 / test_images:.1f}%.")  # fmt: skip
    try:
        report.figure(_plot(runs, report.folder / "image_text_recall.png"), "Recall@k before and after, both ways")
    except ImportError:
        pass
    return report.save({"experiment": "image-text", "budget": budget, "epochs": epochs, "test_images": test_images,
                        "runs": runs})  # fmt: skip


def _plot(runs: dict[str, Any], path: Path) -> Path:
    from ..viz import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    ks = ("R@1", "R@5", "R@10")
    width = 0.8 / len(runs)
    for ax, direction in zip(axes, ("text_to_image", "image_to_text")):
        for i, (name, r) in enumerate(runs.items()):
            ax.bar([j + i * width for j in range(3)], [100 * r[direction][k] for k in ks], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(3)], ks)
        ax.set_title(direction.replace("_", " "))
    axes[0].set_ylabel("recall (%)")
    axes[1].legend(fontsize=7, frameon=False)
    return _save(fig, path, plt)
