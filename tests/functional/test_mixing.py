"""Mixing objectives: MoCHi's synthetic negatives, i-Mix and feature transformation, against the authors' code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import grad_pair, near, sphere
from references.feature_transformation import ft_authors
from references.i_mix import i_mix_authors

from contrasphere import functional as CF


def test_mochi_negatives_are_the_papers_mixtures():
    q = sphere(5, 6, seed=80)
    queue = sphere(40, 6, seed=81)
    synthetic = CF.mochi_negatives(q, queue, n_hard=8, s_mix=30, s_query=20, generator=torch.Generator().manual_seed(0))
    assert synthetic.shape == (5, 50, 6)
    torch.testing.assert_close(synthetic.norm(dim=2), torch.ones(5, 50, dtype=torch.float64))
    for i in range(5):
        hardest = queue[(q[i] @ queue.T).topk(8).indices]  # (8, D)
        for h in synthetic[i, :30]:  # a positive combination of two of the hardest: h ~ alpha n_j + (1-alpha) n_l
            pair_fits = [
                torch.linalg.lstsq(torch.stack([hardest[j], hardest[m]]).T, h[:, None]).solution.flatten()
                for j in range(8)
                for m in range(8)
            ]
            assert any(
                (c >= -1e-9).all() and torch.allclose(torch.stack([hardest[j], hardest[m]]).T @ c, h, atol=1e-9)
                for c, (j, m) in zip(pair_fits, [(j, m) for j in range(8) for m in range(8)])
            )
        for h in synthetic[i, 30:]:  # beta q + (1 - beta) n_j with beta <= 0.5: q's weight never exceeds n_j's
            fits = [torch.linalg.lstsq(torch.stack([q[i], n]).T, h[:, None]).solution.flatten() for n in hardest]
            assert any(
                c[0] >= -1e-9 and c[0] <= c[1] + 1e-9 and torch.allclose(torch.stack([q[i], n]).T @ c, h, atol=1e-9)
                for c, n in zip(fits, hardest)
            )


def test_mochi_matches_moco_reference_with_the_synthetic_negatives():
    q = sphere(7, 8, seed=82, grad=True)
    k = near(q, 0.3)
    queue = sphere(30, 8, seed=83)
    synthetic = CF.mochi_negatives(q, queue, n_hard=10, s_mix=6, s_query=4, generator=torch.Generator().manual_seed(1))
    ours = CF.mochi(q, k, queue, temperature=0.2, synthetic=synthetic)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.T
    l_syn = torch.einsum("nd,nsd->ns", q, synthetic)
    logits = torch.cat([l_pos, l_neg, l_syn], dim=1) / 0.2
    ref = F.cross_entropy(logits, torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    no_synthetic = CF.mochi(q, k, queue, temperature=0.2, s_mix=0, s_query=0)
    torch.testing.assert_close(no_synthetic, CF.moco_info_nce(q, k, queue, temperature=0.2))
    seeded = [CF.mochi(q, k, queue, n_hard=10, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1]) and seeded[0] > no_synthetic  # harder negatives, larger loss


def test_i_mix_matches_the_authors_weighted_cross_entropies():
    z_a = sphere(9, 5, seed=84, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    x = torch.randn(9, 3)
    mixed, index, lam = CF.mix_inputs(x, alpha=1.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(mixed, lam[:, None] * x + (1 - lam[:, None]) * x[index])
    assert sorted(index.tolist()) == list(range(9)) and bool(((lam >= 0.5) & (lam <= 1)).all())
    again = CF.mix_inputs(x, alpha=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[1], index) and torch.equal(again[2], lam)
    lam = lam.double()

    ours = grad_pair(lambda a, b: CF.i_mix(a, b, index, lam, temperature=0.2), z_a, z_b)
    for got, want in zip(ours, grad_pair(lambda a, b: i_mix_authors(a, b, index, lam, 0.2), z_a, z_b)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(CF.i_mix(z_a, z_b, index, 1.0), CF.info_nce(z_a, z_b, temperature=0.2))
    with pytest.raises(ValueError, match="mix_lambda"):
        CF.i_mix(z_a, z_b, index, 1.5)
    with pytest.raises(ValueError, match="one weight per row"):
        CF.i_mix(z_a, z_b, index, torch.ones(3))
    with pytest.raises(ValueError, match="mix_index must index"):
        CF.i_mix(z_a, z_b, index + 1, 0.5)


@pytest.mark.parametrize("per_dimension,postmix_norm", [(False, False), (True, False), (False, True)])
def test_feature_transformation_matches_authors_code(per_dimension, postmix_norm):
    q = sphere(8, 6, seed=97, grad=True)
    k = near(q, 0.3)
    queue = sphere(25, 6, seed=98)
    g = torch.Generator().manual_seed(5)
    if per_dimension:  # the authors' dim_mask='both': one Beta weight per coordinate
        pos_mask = 1 + torch.distributions.Beta(2.0, 2.0).sample((8, 6)).double()
        neg_mask = torch.distributions.Beta(1.6, 1.6).sample((25, 6)).double()
        indices = torch.randperm(25, generator=g)
    else:
        draw = CF.feature_transformation_draw(25, generator=g)
        pos_mask, neg_mask, indices = draw["pos_lambda"], draw["neg_lambda"], draw["neg_index"]
        assert 1 <= pos_mask <= 2 and 0 <= neg_mask <= 1
    ours = CF.feature_transformation(
        q,
        k,
        queue,
        pos_lambda=pos_mask,
        neg_lambda=neg_mask,
        neg_index=indices,
        temperature=0.2,
        normalize_positives=postmix_norm,
    )
    ref = ft_authors(q, k, queue, pos_mask, neg_mask, indices, 0.2, postmix_norm)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    # lambda = mu = 1 leaves the features alone: MoCo's loss
    plain = CF.feature_transformation(q, k, queue, pos_lambda=1.0, neg_lambda=1.0, neg_index=indices, temperature=0.2)
    torch.testing.assert_close(plain, CF.moco_info_nce(q, k, queue, temperature=0.2))
