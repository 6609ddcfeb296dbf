"""Gradient caching equals embedding the same chunks in one graph, dropout included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import contrasphere
from contrasphere.gradcache import grad_cache_backward


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 4)
    ).double()


def _embed(model, x_a, x_b):
    return {"z_a": F.normalize(model(x_a), dim=1), "z_b": F.normalize(model(x_b), dim=1)}


def _data(n=23):
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return x_a, x_a + 0.2 * torch.randn(n, 6, generator=g, dtype=torch.float64)


def _one_graph(model, loss_fn, x_a, x_b, chunk_size, **loss_kwargs):
    """The reference: the same chunks, in the same order (same dropout masks), kept in one autograd graph."""
    outs = [_embed(model, a, b) for a, b in zip(x_a.split(chunk_size), x_b.split(chunk_size))]
    loss = loss_fn(**{k: torch.cat([o[k] for o in outs]) for k in outs[0]}, **loss_kwargs)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", ["nt_xent", "clip", "align_uniform", "siglip"])
@pytest.mark.parametrize("chunk_size", [1, 5, 23, 100])
def test_grad_cache_equals_one_graph(name, chunk_size):
    x_a, x_b = _data()
    results = []
    for cached in (False, True):
        model, loss_fn = _model(), contrasphere.create_loss(name).double()
        torch.manual_seed(7)  # the dropout stream
        if cached:
            loss = grad_cache_backward(model, loss_fn, (x_a, x_b), chunk_size=chunk_size, embed=_embed)
        else:
            loss = _one_graph(model, loss_fn, x_a, x_b, chunk_size)
        grads = [p.grad for p in model.parameters()] + [p.grad for p in loss_fn.parameters()]
        results.append((loss, grads, torch.rand(1)))  # the last: where the random stream stands afterwards
    (loss_ref, grads_ref, rng_ref), (loss, grads, rng) = results
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    for g, want in zip(grads, grads_ref):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
    assert torch.equal(rng, rng_ref)  # caching leaves the random stream where one pass would


def test_grad_cache_with_labels():
    x_a, x_b = _data(20)
    labels = torch.arange(40) % 4

    def embed(model, x_a, x_b):
        return {"z": F.normalize(model(torch.cat([x_a, x_b])), dim=1)}

    loss_fn = contrasphere.create_loss("supcon").double()
    model = _model().eval()
    loss = grad_cache_backward(model, loss_fn, (x_a, x_b), chunk_size=6, embed=embed, loss_kwargs={"labels": labels})
    reference_model = _model().eval()
    z = torch.cat([embed(reference_model, a, b)["z"] for a, b in zip(x_a.split(6), x_b.split(6))])
    ref = loss_fn(z=z, labels=labels)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    for g, want in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(g.grad, want.grad)


def test_grad_cache_bad_input():
    model, loss_fn = _model(), contrasphere.create_loss("nt_xent").double()
    x_a, x_b = _data()
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache_backward(model, loss_fn, (x_a, x_b), chunk_size=0, embed=_embed)
    with pytest.raises(ValueError, match="same number of rows"):
        grad_cache_backward(model, loss_fn, (x_a, x_b[:5]), chunk_size=4, embed=_embed)
    with pytest.raises(TypeError, match="dict of embeddings"):
        grad_cache_backward(model, loss_fn, (x_a,), chunk_size=4)
