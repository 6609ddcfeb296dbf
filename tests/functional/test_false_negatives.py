"""False negatives eliminated by sample id, and LLaVE's hardness weighting, across the InfoNCE family.

Every loss that takes ``ids`` is checked against a loop from its equation (``references/false_negatives.py``),
value and gradient, dense and tiled at sizes no tile divides; distinct ids must change nothing.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import near, sphere
from references import false_negatives as ref

from contrasphere import functional as CF
from contrasphere import losses
from contrasphere.errors import InputError, InputTypeError

IDS = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5, 0, 6, 7])  # 11 pairs: id 0 three times, id 1 twice

CASES = {
    "info_nce": (
        lambda a, b, ids, bs: CF.info_nce(a, b, temperature=0.3, ids=ids, block_size=bs),
        lambda a, b, ids: ref.info_nce(a, b, ids, temperature=0.3),
    ),
    "info_nce+hardness": (
        lambda a, b, ids, bs: CF.info_nce(a, b, temperature=0.3, hardness=2.5, ids=ids, block_size=bs),
        lambda a, b, ids: ref.info_nce(a, b, ids, temperature=0.3, hardness=2.5),
    ),
    "nt_xent": (
        lambda a, b, ids, bs: CF.nt_xent(a, b, temperature=0.4, ids=ids, block_size=bs),
        lambda a, b, ids: ref.nt_xent(a, b, ids, temperature=0.4),
    ),
    "clip": (
        lambda a, b, ids, bs: CF.clip_loss(a, b, logit_scale=5.0, ids=ids, block_size=bs),
        lambda a, b, ids: ref.clip(a, b, ids, logit_scale=5.0),
    ),
    "clip+hardness": (
        lambda a, b, ids, bs: CF.clip_loss(a, b, logit_scale=5.0, hardness=3.0, ids=ids, block_size=bs),
        lambda a, b, ids: ref.clip(a, b, ids, logit_scale=5.0, hardness=3.0),
    ),
    "dcl": (
        lambda a, b, ids, bs: CF.dcl(a, b, temperature=0.3, ids=ids, block_size=bs),
        lambda a, b, ids: ref.dcl(a, b, ids, temperature=0.3),
    ),
    "dclw": (
        lambda a, b, ids, bs: CF.dclw(a, b, temperature=0.3, sigma=0.7, ids=ids, block_size=bs),
        lambda a, b, ids: ref.dcl(
            a, b, ids, temperature=0.3, weight=2 - a.shape[0] * torch.softmax((a * b).sum(1) / 0.7, 0)
        ),
    ),
    "hard_negative": (
        lambda a, b, ids, bs: CF.hard_negative_nt_xent(
            a, b, temperature=0.5, tau_plus=0.1, beta=0.8, ids=ids, block_size=bs
        ),
        lambda a, b, ids: ref.hard_negative(a, b, ids, temperature=0.5, tau_plus=0.1, beta=0.8),
    ),
    "debiased": (
        lambda a, b, ids, bs: CF.debiased_nt_xent(a, b, temperature=0.5, tau_plus=0.1, ids=ids, block_size=bs),
        lambda a, b, ids: ref.hard_negative(a, b, ids, temperature=0.5, tau_plus=0.1, beta=0.0),
    ),
    "gte_info_nce": (
        lambda a, b, ids, bs: CF.gte_info_nce(a, b, temperature=0.2, ids=ids, block_size=bs),
        lambda a, b, ids: ref.gte(a, b, ids, temperature=0.2),
    ),
    "hn_nce": (
        lambda a, b, ids, bs: CF.hn_nce(a, b, logit_scale=4.0, alpha=0.8, beta1=0.5, beta2=1.2, ids=ids, block_size=bs),
        lambda a, b, ids: ref.hn_nce(a, b, ids, logit_scale=4.0, alpha=0.8, beta1=0.5, beta2=1.2),
    ),
    "euclidean_clip": (
        lambda a, b, ids, bs: CF.euclidean_clip(1.4 * a, b, logit_scale=1.5, ids=ids, block_size=bs),
        lambda a, b, ids: ref.euclidean_clip(1.4 * a, b, ids, logit_scale=1.5),
    ),
    "margin_info_nce": (
        lambda a, b, ids, bs: CF.margin_info_nce(a, b, temperature=0.25, margin=0.2, ids=ids, block_size=bs),
        lambda a, b, ids: ref.margin_info_nce(a, b, ids, temperature=0.25, margin=0.2),
    ),
    **{
        f"kernel_info_nce[{kernel}]": (
            lambda a, b, ids, bs, k=kernel: CF.kernel_info_nce(
                1.2 * a, b, kernel=k, temperature=0.6, laplacian_temperature=0.4, ids=ids, block_size=bs
            ),
            lambda a, b, ids, k=kernel: ref.kernel_info_nce(
                1.2 * a, b, ids, kernel=k, temperature=0.6, laplacian_temperature=0.4
            ),
        )
        for kernel in ("gaussian", "laplacian", "mixture")
    },
}


def _value_and_grads(fn, a, b):
    value = fn(a, b)
    return (value.detach(), *torch.autograd.grad(value, (a, b)))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("block", [0, 4])
def test_sample_ids_leave_false_negatives_out_as_the_equation_says(name, block):
    z_a = sphere(IDS.shape[0], 6, seed=3, grad=True)
    z_b = near(z_a, 0.6).requires_grad_()
    fast, slow = CASES[name]
    got = _value_and_grads(lambda a, b: fast(a, b, IDS, block), z_a, z_b)
    want = _value_and_grads(lambda a, b: slow(a, b, IDS), z_a, z_b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_distinct_ids_change_nothing_and_duplicates_do(name):
    z_a = sphere(IDS.shape[0], 6, seed=4)
    z_b = near(z_a, 0.6)
    fast, _ = CASES[name]
    plain = fast(z_a, z_b, None, 0)
    if "hardness" not in name:
        torch.testing.assert_close(fast(z_a, z_b, torch.arange(IDS.shape[0]) * 7, 0), plain, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fast(z_a, z_b, IDS, 0), plain)


def test_macl_leaves_false_negatives_out_of_its_weights_and_softmax():
    z_a = sphere(IDS.shape[0], 6, seed=5, grad=True)
    z_b = near(z_a, 0.6).requires_grad_()
    tau = 0.2 * 2.0 ** float((z_a * z_b).sum(1).mean().detach())

    def slow(a, b):  # the authors' MACLa with the false negatives' columns removed from each row
        terms = []
        for i in range(a.shape[0]):
            keep = [j for j in range(a.shape[0]) if IDS[j] != IDS[i] or j == i]
            logits = torch.stack([a[i] @ b[j] for j in keep]) / tau
            p = torch.softmax(logits, 0)
            own = keep.index(i)
            weight = (1 / (1 - p[own])).detach()
            terms.append(-weight * torch.log(p[own]))
        return torch.stack(terms).mean()

    got = _value_and_grads(lambda a, b: CF.macl(a, b, temperature=0.2, alpha=2.0, ids=IDS), z_a, z_b)
    want = _value_and_grads(slow, z_a, z_b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_hardness_is_sentence_transformers_in_batch_hardness():
    """sentence-transformers' MultipleNegativesRankingLoss with ``hardness_mode="in_batch_negatives"`` (v5.2, the
    lines that compute its penalty, ported): logits ``scale * cos + alpha * sg(cos)`` off the diagonal."""
    q = sphere(13, 5, seed=6, grad=True)
    d = near(q, 0.5).requires_grad_()
    scale, alpha = 20.0, 9.0

    def theirs(q, d):
        sim = q @ d.T
        penalty = alpha * sim.detach()
        penalty[torch.eye(q.shape[0], dtype=torch.bool)] = 0.0
        scores = sim * scale + penalty
        return -(scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()

    got = _value_and_grads(lambda a, b: CF.info_nce(a, b, temperature=1 / scale, hardness=alpha), q, d)
    for g, w in zip(got, _value_and_grads(theirs, q, d)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_hardness_puts_more_weight_on_the_hardest_negative():
    # anchor 0 is closer to negative d[1] (cosine 0.45) than to d[2] (0.21)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0]]), dim=1)
    q.requires_grad_()

    def push(hardness):  # the gradient on anchor 0: its descent moves q[0] away from the negatives it weighs
        (grad,) = torch.autograd.grad(CF.info_nce(q, d, temperature=0.5, hardness=hardness), q)
        return grad[0]

    # the positive's pull is the same; the extra push is along the hardest negative, d[1], more than d[2]
    extra = push(9.0) - push(0.0)
    assert float(extra @ d[1]) > 0 > float(extra @ d[2])


def test_all_rows_of_one_id_is_an_error_where_no_negative_would_be_left():
    z_a, z_b = sphere(4, 3, seed=7), sphere(4, 3, seed=8)
    same = torch.zeros(4, dtype=torch.long)
    for fn in (CF.dcl, CF.dclw, CF.hard_negative_nt_xent, CF.debiased_nt_xent, CF.hn_nce, CF.macl):
        with pytest.raises(InputError, match="same sample id"):
            fn(z_a, z_b, ids=same)
    # where the positive stays in the denominator, one id for all leaves the positive alone: a loss of 0 (GTE
    # counts the positive twice, once from each side: log 2)
    for fn in (CF.info_nce, CF.nt_xent, CF.clip_loss, CF.margin_info_nce):
        assert float(fn(z_a, z_b, ids=same)) == pytest.approx(0.0, abs=1e-12)
    assert float(CF.gte_info_nce(z_a, z_b, ids=same)) == pytest.approx(math.log(2), abs=1e-12)


def test_bad_ids_are_explained():
    z = sphere(5, 3, seed=9)
    with pytest.raises(InputError, match=r"shape \(5,\)"):
        CF.info_nce(z, z, ids=torch.arange(4))
    with pytest.raises(InputTypeError, match="integer sample ids"):
        CF.clip_loss(z, z, ids=torch.arange(5.0))
    with pytest.raises(InputTypeError, match="torch.Tensor"):
        CF.nt_xent(z, z, ids=[0, 1, 2, 3, 4])
    with pytest.raises(InputError, match="hardness"):
        CF.info_nce(z, z, hardness=-1.0)


@pytest.mark.parametrize("name", ["clip", "hn_nce", "euclidean_clip", "info_nce", "nt_xent", "dcl", "gte_info_nce"])
def test_modules_take_ids(name):
    spec = losses.loss_spec(name)
    assert spec.takes_ids
    loss = losses.create_loss(name)
    z_a = sphere(IDS.shape[0], 6, seed=10)
    z_b = near(z_a, 0.6)
    kwargs = {} if spec.fn is None else loss.function_kwargs()
    assert torch.isclose(loss(z_a, z_b, ids=IDS), spec.fn(z_a, z_b, ids=IDS, **kwargs))


def test_clip_module_hardness_is_a_hyperparameter():
    loss = losses.CLIPLoss(hardness=9.0, learnable=False)
    z_a = sphere(7, 4, seed=11)
    z_b = near(z_a, 0.5)
    want = CF.clip_loss(z_a, z_b, logit_scale=1 / 0.07, hardness=9.0)
    torch.testing.assert_close(loss(z_a, z_b), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="hardness"):
        losses.CLIPLoss(hardness=-2.0)
