"""Run folders are never lost, shared, half-written or trusted: refusals, locks, damaged and hostile checkpoints."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrasphere.cli import main
from contrasphere.errors import ConfigError, RunError
from contrasphere.train import train
from contrasphere.train.checkpoint import recipe_changes
from contrasphere.train.config import Recipe, updated
from contrasphere.train.loop import check_device, check_ranks
from contrasphere.train.recipes import get_recipe
from contrasphere.train.rundir import RunLock, read_log, write_atomic

TINY = ["train.max_steps=3", "train.epochs=1"]


def tiny_run(folder: Path) -> dict:
    return train(get_recipe("digits", "tiny", TINY), folder, progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", "digits", "--tiny", "--set", "train.max_steps=3", "--out", str(folder), "--no-progress"]) == 0
    return folder


def copy_run(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("checkpoint.pt", "log.jsonl", "recipe.json", "eval.json"):
        (folder / name).write_bytes((finished / name).read_bytes())
    return folder


def test_a_finished_run_is_never_overwritten_without_asking(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    before = (folder / "log.jsonl").read_text()
    code = main(["train", "digits", "--tiny", "--out", str(folder), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a run logged up to step 3" in err and "--resume" in err and "--overwrite" in err
    assert (folder / "log.jsonl").read_text() == before  # untouched
    again = ["train", "digits", "--tiny", "--set", "train.max_steps=2", "--out", str(folder), "--overwrite"]
    assert main([*again, "--no-eval", "--no-progress"]) == 0
    assert not (folder / "eval.json").exists()  # the stale evaluation went with the old run
    assert json.loads((folder / "log.jsonl").read_text().splitlines()[-1])["step"] == 2  # the new run's log
    with pytest.raises(RunError, match="pass one of them"):
        train(get_recipe("digits", "tiny"), folder, resume=True, overwrite=True, progress=False)


def test_a_second_process_into_the_same_folder_fails_at_once_naming_the_holder(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".lock").write_text(str(holder.pid))
        with pytest.raises(RunError, match=f"in use by process {holder.pid}"):
            tiny_run(folder)
    finally:
        holder.kill()
        holder.wait()
    tiny_run(folder)  # the holder is gone: its lock is stale and taken over
    assert not (folder / ".lock").exists()  # released at the end


def test_the_lock_is_released_when_training_fails(tmp_path):
    recipe = get_recipe("digits", "tiny", ["data.batch_size=4096"])  # larger than the training set
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(recipe, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / ".lock").exists()
    with RunLock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text() == str(os.getpid())


def test_orphaned_temporary_files_are_removed_on_the_next_start(tmp_path):
    folder = tmp_path / "orphans"
    folder.mkdir()
    orphan = folder / ".checkpoint.pt.tmp99999"
    orphan.write_bytes(b"x" * 1000)
    tiny_run(folder)
    assert not orphan.exists()


class _Marker:
    """A pickle that creates a file when loaded: what a hostile checkpoint would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_that_carries_code_is_refused_and_never_run(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    marker = tmp_path / "pwned"
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    state["payload"] = _Marker(str(marker))
    torch.save(state, folder / "checkpoint.pt")
    assert main(["eval", str(folder)]) == 2
    assert "never loads" in capsys.readouterr().err
    assert main(["train", str(folder / "recipe.json"), "--out", str(folder), "--resume", "--no-progress"]) == 2
    assert "never loads" in capsys.readouterr().err
    from contrasphere.train.runs import load_run

    with pytest.raises(RunError, match="never loads"):
        load_run(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:2000]), "damaged or not a checkpoint"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(os.urandom(5000)), "damaged or not a checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "not a contrasphere checkpoint"),
        (lambda p: torch.save({"model": {}, "step": 1}, p), "lacks loss, optimizer"),
    ],
    ids=["truncated", "empty", "garbage", "foreign", "missing-keys"],
)
def test_damaged_checkpoints_get_one_clear_line(finished, tmp_path, capsys, damage, message):
    folder = copy_run(finished, tmp_path)
    damage(folder / "checkpoint.pt")
    for argv in (["eval", str(folder)], ["train", "digits", "--tiny", "--out", str(folder), "--resume"]):
        assert main([*argv, "--no-progress"] if argv[0] == "train" else argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_resume_refuses_a_changed_recipe_but_allows_a_longer_run(finished, tmp_path, capsys):
    folder = copy_run(finished, tmp_path)
    argv = ["train", "digits", "--tiny", "--out", str(folder), "--resume", "--no-progress", "--set"]
    assert main([*argv, "train.max_steps=3", "--set", "train.seed=7", "--set", "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.003 -> 0.5" in err and "train.seed: 0 -> 7" in err
    assert main([*argv, "train.max_steps=2", "--no-eval"]) == 2  # fewer steps than the run has done
    assert "is at step 3 of its checkpoint" in capsys.readouterr().err
    assert main([*argv, "data.batch_size=8", "--set", "train.max_steps=3"]) == 2  # what --tiny on a full run did
    assert "data.batch_size: 16 -> 8" in capsys.readouterr().err
    assert main([*argv, "train.max_steps=5", "--no-eval"]) == 0  # a longer run is allowed
    assert "trained 2 steps" in capsys.readouterr().out
    refused, allowed = recipe_changes(Recipe().to_dict(), updated(Recipe(), {"train.epochs": 20}).to_dict())
    assert refused == [] and allowed == ["train.epochs"]


def test_a_torn_last_log_line_does_not_block_resume(finished, tmp_path):
    folder = copy_run(finished, tmp_path)
    with open(folder / "log.jsonl", "a") as f:
        f.write('{"epoch": 2, "st')  # what a kill mid-append left before writes were atomic
    assert [r["step"] for r in read_log(folder)] == [0, 3]
    result = train(get_recipe("digits", "tiny", ["train.max_steps=4", "train.epochs=1"]), folder, resume=True)
    assert result["start_step"] == 3 and result["step"] == 4


def test_a_full_disk_says_so(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RunError, match="no space left on the device to write .*free some disk space"):
        write_atomic(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.device=tpu", "train.device must be auto, cpu, cuda or cuda:N"),
        ("train.threads=-1", "train.threads must be >= 0"),
        ("augment.crop_size=10000", "augment.crop_size must be between 8 and 1024"),
        ("train.epochs=-1", "train.epochs and train.max_steps must be >= 0"),
        ("optim.gamma=-1", "optim.gamma must be in (0, 1]"),
        ("optim.momentum=1.5", "optim.momentum must be in [0, 1)"),
        ("loss.args.t=-2", "loss.args: t must be a finite number > 0"),
        ("train.dist_timeout=0", "train.dist_timeout must be a positive"),
    ],
)
def test_bad_settings_are_refused_before_any_work(setting, message, capsys, tmp_path):
    assert main(["train", "digits", "--tiny", "--set", setting, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was started


def test_cuda_without_a_gpu_and_too_many_ranks_are_refused_with_the_numbers():
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            check_device("cuda")
    recipe = get_recipe("digits", "tiny", ["data.batch_size=2"])
    with pytest.raises(ConfigError, match="2 samples per micro-batch cannot give each of the 3 processes one"):
        check_ranks(recipe, 3)
    check_ranks(recipe, 2)  # one each is enough
    check_device("cpu")


def test_reproduce_refuses_an_absurd_budget(capsys):
    assert main(["reproduce", "vision", "--budget", "1e9", "--out", "unused"]) == 2
    assert "at most 100" in capsys.readouterr().err


def test_internal_errors_keep_their_traceback(monkeypatch):
    from contrasphere.cli import list_cmd

    def bug(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(list_cmd, "run", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["list"])


def _params(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def _log(folder: Path) -> list[dict]:
    timing = ("seconds", "samples_per_second", "data_fraction")
    return [{k: v for k, v in r.items() if k not in timing} for r in read_log(folder)]


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    """A real training process killed with SIGKILL (mid-step, mid-checkpoint, mid-log) and resumed until done ends
    with the uninterrupted run's parameters, bit for bit, and its log."""
    settings = ["--set", "train.max_steps=10", "--set", "train.checkpoint_every=1", "--no-eval", "--no-progress"]
    command = [sys.executable, "-m", "contrasphere.cli", "train", "digits", "--tiny", *settings]
    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", str(reference)], check=True, capture_output=True)
    # kill once the log has this many records, after this many milliseconds more (different phases of a step)
    kills = [(1, 0), (2, 5), (3, 40), (6, 1)]
    for n, (records, ms) in enumerate(kills):
        folder = tmp_path / f"killed{n}"
        process = subprocess.Popen([*command, "--out", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while process.poll() is None and len(read_log(folder)) < records:
            time.sleep(0.002)
        time.sleep(ms / 1000)
        process.kill()
        process.wait()
        for _ in range(3):  # resume until the run is complete (it may have finished before the kill)
            done = subprocess.run([*command, "--out", str(folder), "--resume"], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            if torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 10:
                break
        assert not list(folder.glob(".*.tmp*"))  # no orphan left behind
        ref, got = _params(reference), _params(folder)
        assert all(torch.equal(ref[k], got[k]) for k in ref), f"kill {n}: parameters differ"
        assert _log(folder) == _log(reference), f"kill {n}: logs differ"


def test_random_bytes_are_always_refused_as_damaged(tmp_path):
    """Random bytes fed to torch's unpickler failed with whatever the bytes happened to trigger (a KeyError from
    its memo, once in CI); every such file must get the one clear error, whatever its bytes. Half the files start
    like a pickle (protocol 2), which leads the unpickler furthest."""
    import numpy as np

    from contrasphere.errors import RunError
    from contrasphere.train import checkpoint

    rng = np.random.default_rng(0)
    path = tmp_path / "checkpoint.pt"
    for i in range(200):
        body = rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
        path.write_bytes(b"\x80\x02" + body if i % 2 else body)
        with pytest.raises(RunError, match="damaged or not a checkpoint"):
            checkpoint.load(path)
