"""The MoCo machinery of contrasphere.moco: the key queue (FIFO, wrap-around) and the momentum encoder update."""

from __future__ import annotations

import pytest
import torch

from contrasphere.moco import KeyQueue, momentum_copy, momentum_update


def test_key_queue_is_fifo_with_wrap_around():
    queue = KeyQueue(size=5, dim=2, start_empty=True)
    with pytest.raises(ValueError, match="empty"):
        queue.negatives()
    rows = torch.arange(1, 15, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 0.0]])
    queue.push(rows[:3])
    assert torch.equal(queue.negatives(), rows[:3])
    queue.push(rows[3:7])  # 4 more: wraps around, overwriting the oldest
    assert torch.equal(queue.negatives()[:, 0], torch.tensor([6.0, 7.0, 3.0, 4.0, 5.0]))
    queue.push(rows[7:14])  # more than the queue holds: the last 5 survive
    assert sorted(queue.negatives()[:, 0].tolist()) == [10.0, 11.0, 12.0, 13.0, 14.0]
    snapshot = queue.negatives()
    queue.push(rows[:1])
    assert not torch.equal(snapshot, queue.negatives())  # a copy: earlier negatives are untouched
    full = KeyQueue(size=4, dim=3)
    assert full.negatives().shape == (4, 3) and torch.allclose(full.negatives().norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="dimension 2"):
        full.push(torch.ones(2, 2))
    with pytest.raises(ValueError, match="size must be"):
        KeyQueue(size=0, dim=3)


def test_momentum_update_is_an_exponential_moving_average():
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    target = momentum_copy(source)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
        source[1].running_mean.fill_(3.0)
    momentum_update(target, source, momentum=0.9)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)
    assert torch.equal(target[1].running_mean, torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, source, momentum=1.5)
