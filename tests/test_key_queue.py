"""The MoCo machinery of contrasphere.moco: the key queue (FIFO, wrap-around) and the momentum encoder update."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrasphere.moco import KeyQueue, momentum_copy, momentum_update


def test_key_queue_is_fifo_with_wrap_around():
    queue = KeyQueue(size=5, dim=2, start_empty=True, normalized=False)  # keys of norm 1..14: their order shows
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


def test_keys_must_be_unit_vectors_unless_the_queue_is_told_otherwise():
    g = torch.Generator().manual_seed(0)
    raw = 3.0 * torch.randn(6, 8, generator=g)  # an encoder's output, not normalised
    queue = KeyQueue(size=16, dim=8)
    before = queue.negatives()
    with pytest.raises(ValueError) as info:
        queue.push(raw)
    message = str(info.value)
    assert "unit vectors" in message and "F.normalize(k, dim=1)" in message and "normalized=False" in message
    assert "norms range from" in message
    assert torch.equal(queue.negatives(), before) and int(queue.pointer) == 0  # nothing was stored
    unit = F.normalize(raw, dim=1)
    queue.push(unit)
    torch.testing.assert_close(queue.negatives()[:6], unit)
    queue.push(unit.double() * (1 + 5e-4))  # within the tolerance of 1e-3
    with pytest.raises(ValueError, match="unit vectors"):
        queue.push(unit * (1 + 2e-3))
    with pytest.raises(ValueError, match="unit vectors"):
        queue.push(torch.zeros(2, 8))
    # half precision rounds a unit vector's norm by up to half its epsilon: bfloat16's 2^-8 is tolerated
    for dtype in (torch.float16, torch.bfloat16):
        keys = F.normalize(torch.randn(64, 8, generator=g), dim=1).to(dtype)
        queue.push(keys)
        with pytest.raises(ValueError, match="unit vectors"):
            queue.push(keys * 1.05)
    # the opt-out stores whatever it is given
    free = KeyQueue(size=4, dim=8, normalized=False)
    free.push(raw[:4])
    torch.testing.assert_close(free.negatives(), raw[:4])


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
