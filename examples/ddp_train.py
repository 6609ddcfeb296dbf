"""Train a small encoder with any registered loss under torchrun: the same command on 1 or K processes.

    torchrun --nproc_per_node 2 examples/ddp_train.py --loss nt_xent --steps 20
    python examples/ddp_train.py --loss nt_xent --steps 20          # one process, same global batch

Data: scikit-learn's 8x8 digits as shipped with contrasphere (raw pixels), two noisy views per image. Each rank
takes its share of every global batch (shares may differ in size), embeddings are gathered with gradients
(GatherLoss), and DistributedDataParallel averages the gradients: the trained parameters equal those of the
one-process run up to floating-point rounding. Writes the final parameters to --out (rank 0).
"""

from __future__ import annotations

import argparse
import gc
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import contrasphere
from contrasphere.cli.metrics_cmd import example_paths
from contrasphere.distributed import all_reduce_mean, rank, world_size
from contrasphere.losses import GatherLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="nt_xent", help="a registered loss with inputs z_a, z_b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--out", default=None, help="where rank 0 saves the final parameters (.pt)")
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:  # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(0)
    pixels = torch.from_numpy(np.load(example_paths()[0])).double() / 16.0
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)).double()
    if world_size() > 1:
        model = DistributedDataParallel(model)
    loss_fn = GatherLoss(contrasphere.create_loss(args.loss).double())
    optimizer = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=0.5)
    noise = torch.Generator().manual_seed(1)  # the same global views on every rank
    for step in range(args.steps):
        index = torch.randint(0, pixels.shape[0], (args.batch,), generator=noise)
        x = pixels[index]
        x_a = x + 0.1 * torch.randn(x.shape, generator=noise, dtype=x.dtype)
        x_b = x + 0.1 * torch.randn(x.shape, generator=noise, dtype=x.dtype)
        # this rank's share: uneven when the batch does not divide (rank 0 gets the remainder)
        bounds = np.linspace(0, args.batch, world_size() + 1).round().astype(int)
        mine = slice(bounds[rank()], bounds[rank() + 1])
        z = F.normalize(model(torch.cat([x_a[mine], x_b[mine]])), dim=1)
        half = z.shape[0] // 2
        loss = loss_fn(z_a=z[:half], z_b=z[half:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reported = float(all_reduce_mean(loss))  # a collective: every rank takes part
        if rank() == 0 and (step % 5 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss {reported:.6f}", flush=True)
    if rank() == 0 and args.out:
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        torch.save({k: v.detach().clone() for k, v in inner.state_dict().items()}, args.out)
    if dist.is_initialized():
        del model  # the DDP wrapper's reducer must go before the process group, or exit can abort
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
