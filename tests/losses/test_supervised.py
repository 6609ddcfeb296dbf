"""The supervised baselines: the cross-entropy classifier loss, and SupCon's collapse (issue 14, item 2)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from references.supcontrast import hobbitlong_supcon

import contrasphere
from contrasphere import functional as CF
from contrasphere.errors import InputError


def test_supervised_ce_is_the_cross_entropy_of_its_linear_classifier():
    torch.manual_seed(0)
    loss_fn = contrasphere.create_loss("supervised_ce", dim=3, num_classes=4).double()
    z = F.normalize(torch.randn(11, 3, dtype=torch.float64), dim=1).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2])
    w, b = loss_fn.classifier.weight, loss_fn.classifier.bias
    logits = z @ w.T + b  # the equation, by hand: -log softmax of the true class, averaged over rows
    expected = -(logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)).mean()
    value = loss_fn(z, y)
    torch.testing.assert_close(value, expected)
    gz, gw = torch.autograd.grad(value, (z, w))
    ez, ew = torch.autograd.grad(expected, (z, w))
    torch.testing.assert_close(gz, ez)
    torch.testing.assert_close(gw, ew)
    assert loss_fn.predict(z).shape == (11,)


def test_supervised_ce_says_what_is_wrong_with_its_input():
    loss_fn = contrasphere.create_loss("supervised_ce", dim=2, num_classes=3)
    z = F.normalize(torch.randn(4, 2), dim=1)
    with pytest.raises(InputError, match=r"labels must lie in \[0, 3\)"):
        loss_fn(z, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(InputError, match="dim=5"):
        loss_fn(F.normalize(torch.randn(4, 5), dim=1), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(InputError, match="num_classes"):
        contrasphere.create_loss("supervised_ce", dim=2, num_classes=1)


def test_supcon_at_collapse_is_log_2n_minus_1_as_in_the_authors_code():
    # a fully collapsed batch of 2N = 512 rows: every row's softmax is uniform over the other 511, whatever the labels;
    # the authors' code scales by temperature / base_temperature (0.1 / 0.07), which gives the 8.909 that users of
    # github.com/HobbitLong/SupContrast report as a loss stuck from the first steps (issues 3 and 83, batch 256)
    z = F.normalize(torch.ones(512, 2, dtype=torch.float64), dim=1)
    labels = torch.arange(256).repeat(2) % 10
    ours = CF.supcon(z, labels, temperature=0.1)
    torch.testing.assert_close(ours, torch.tensor(math.log(511), dtype=torch.float64))
    theirs = hobbitlong_supcon(torch.stack(z.split(256), dim=1), labels[:256], temperature=0.1)
    assert round(float(theirs), 3) == 8.909
    torch.testing.assert_close(ours, theirs * 0.07 / 0.1)


def test_with_labels_the_features_cannot_predict_collapse_is_supcons_optimum():
    # averaged over every assignment of the labels to the rows (labels independent of the features), an anchor's
    # positives are a uniform subset of the other rows, so the mean loss equals the mean over all others of
    # -log p_ik, which is >= log(n - 1) (Jensen), with equality only when every p_ik is equal: the collapsed batch.
    # This is why SupCon collapses when the features do not yet separate the classes (the vision report)
    torch.manual_seed(1)
    z = F.normalize(torch.randn(6, 2, dtype=torch.float64), dim=1)
    base = torch.tensor([0, 0, 0, 1, 1, 1])
    assignments = sorted({tuple(base[list(p)].tolist()) for p in itertools.permutations(range(6))})
    assert len(assignments) == 20
    mean_loss = sum(CF.supcon(z, torch.tensor(a), temperature=0.1) for a in assignments) / len(assignments)
    s = z @ z.T / 0.1
    s.fill_diagonal_(-math.inf)
    log_p = s - torch.logsumexp(s, dim=1, keepdim=True)
    by_equation = -log_p[~torch.eye(6, dtype=torch.bool)].view(6, 5).mean()
    torch.testing.assert_close(mean_loss, by_equation)
    assert float(mean_loss) > math.log(5) + 0.1
    collapsed = F.normalize(torch.ones(6, 2, dtype=torch.float64), dim=1)
    for a in assignments:
        value = CF.supcon(collapsed, torch.tensor(a), temperature=0.1)
        torch.testing.assert_close(value, torch.tensor(math.log(5), dtype=torch.float64))
