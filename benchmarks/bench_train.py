"""Training throughput on CIFAR-10 with augmentation on, and the share of time spent preparing data.

    python benchmarks/bench_train.py                          # cifar10-nt-xent, 30 steps, batch 512
    python benchmarks/bench_train.py --recipe cifar10-align-uniform --steps 20 --set data.batch_size=256

Runs the real training loop (`contrasphere.train.train`) for ``--steps`` optimiser steps after ``--warmup``
untimed ones, and reports views per second (each sample is two augmented views) and the fraction of the step
time spent drawing and applying augmentations (indexing the decoded uint8 images, crop + flip resampling, colour
jitter, grayscale, normalisation). It also times, separately and each as a median of repeats, the augmentation
of one global batch of views and one forward + backward of the model on such a batch (under the recipe's
precision). Writes benchmarks/results/train-<recipe>[-<tag>].json. Run it alone on the machine: a second busy
process stalls PyTorch's threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from contrasphere.train import build, train
from contrasphere.train.recipes import get_recipe

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cifar10-nt-xent")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()
    recipe = get_recipe(args.recipe, overrides=args.overrides)
    batch = recipe.data.batch_size
    print(f"{args.recipe}: batch {batch} samples = {2 * batch} views, {recipe.model.encoder} {recipe.model.widths}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    # the real loop: warm-up steps, then the timed steps (one log record at the end = one "epoch" of the run)
    with tempfile.TemporaryDirectory() as tmp:
        recipe.train.max_steps = args.warmup
        train(recipe, tmp, progress=False)
        recipe.train.max_steps = args.warmup + args.steps
        result = train(recipe, tmp, resume=True, progress=True)
    record = result["log"][-1]
    loop = {
        "steps": args.steps,
        "seconds": record["seconds"],
        "samples_per_second": record["samples_per_second"],
        "views_per_second": 2 * record["samples_per_second"],
        "data_fraction": record["data_fraction"],
    }

    # the two parts alone
    task, model, _ = build(recipe, torch.device("cpu"))
    index = torch.arange(batch)
    generator = torch.Generator().manual_seed(0)

    def augment_only() -> None:
        params = task.augment.sample(2 * batch, generator)
        images = task.train.images[index]
        task.augment.apply(images, {k: v[:batch] for k, v in params.items()})
        task.augment.apply(images, {k: v[batch:] for k, v in params.items()})

    views = torch.randn(2 * batch, task.channels, recipe.augment.crop_size, recipe.augment.crop_size)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.train.precision)

    def model_only() -> None:
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(views).sum()
        loss.backward()

    parts = {}
    for name, fn in (("augment", augment_only), ("forward_backward", model_only)):
        fn()
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        parts[name] = {
            "median_seconds": statistics.median(times),
            "views_per_second": 2 * batch / statistics.median(times),
        }

    out = {"recipe": args.recipe, "overrides": args.overrides, "batch_size": batch, "threads": torch.get_num_threads(),
           "loop": loop, "parts": parts}  # fmt: skip
    print(json.dumps(out, indent=2))
    path = HERE / "results" / f"train-{args.recipe}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
