"""Evaluation protocols against scikit-learn, scipy and direct loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from contrasphere import evaluation as E


def _clusters(n, d=8, classes=4, seed=0, noise=0.8):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64), y


@pytest.mark.parametrize("k", [1, 7, 50, 1000])
def test_knn_matches_scikit_learn(k):
    train_z, train_y = _clusters(300, seed=1)
    test_z, test_y = _clusters(97, seed=2, noise=1.5)
    tau = 0.1
    ours = E.knn_predict(train_z, train_y, test_z, k=k, temperature=tau, chunk_size=13)
    n_neighbors = min(k, 300)
    sk = KNeighborsClassifier(n_neighbors=n_neighbors, metric="cosine", weights=lambda d: np.exp((1 - d) / tau))
    sk.fit(train_z.numpy(), train_y.numpy())
    assert torch.equal(ours, torch.from_numpy(sk.predict(test_z.numpy())))
    accuracy = E.knn_accuracy(train_z, train_y, test_z, test_y, k=k, temperature=tau)
    assert accuracy == pytest.approx(float((ours == test_y).double().mean()))


def test_knn_on_tiny_sets_and_bad_input():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert E.knn_predict(z, torch.tensor([0, 1]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]), k=200).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"train_y must have shape \(2,\)"):
        E.knn_predict(z, torch.tensor([0]), z)
    with pytest.raises(ValueError, match="k must be"):
        E.knn_predict(z, torch.tensor([0, 1]), z, k=0)
    with pytest.raises(ValueError, match="same embedding dimension"):
        E.knn_predict(z, torch.tensor([0, 1]), torch.ones(1, 3))


@pytest.mark.slow
def test_linear_probe_matches_logistic_regression_on_digits():
    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1300], order[1300:]
    ours = E.linear_probe(x[train], y[train], x[test], y[test], epochs=60, lr=1e-2)
    # scikit-learn on the same features: L2-normalised, then standardised on the training set
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean, std = xn[train].mean(0), np.maximum(xn[train].std(0, ddof=1), 1e-6)
    sk = LogisticRegression(max_iter=2000, C=10.0).fit((xn[train] - mean) / std, y[train])
    sk_accuracy = sk.score((xn[test] - mean) / std, y[test])
    assert ours["test_accuracy"] > 0.93 and abs(ours["test_accuracy"] - sk_accuracy) < 0.03
    assert ours["train_accuracy"] >= ours["test_accuracy"] - 0.02 and math.isfinite(ours["test_loss"])


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    assert E.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert E.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        E.spearman([1, 1, 1], [1, 2, 3])
    z_a, z_b = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    gold = rng.uniform(0, 5, 50)
    cos = torch.nn.functional.cosine_similarity(z_a, z_b).numpy()
    assert E.sts_spearman(z_a, z_b, gold) == pytest.approx(spearmanr(cos, gold).statistic, abs=1e-12)


def _loop_recall(q, g, q_groups, g_groups, k):
    q = torch.nn.functional.normalize(q, dim=1)
    g = torch.nn.functional.normalize(g, dim=1)
    hits = 0
    for i in range(q.shape[0]):
        top = torch.argsort(q[i] @ g.T, descending=True)[:k]
        hits += int(any(g_groups[j] == q_groups[i] for j in top))
    return hits / q.shape[0]


def test_retrieval_recall_matches_a_loop():
    images = torch.randn(30, 6, dtype=torch.float64)
    captions = images.repeat_interleave(5, 0) + 1.2 * torch.randn(150, 6, dtype=torch.float64)  # 5 captions each
    image_of_caption = torch.arange(30).repeat_interleave(5)
    text_to_image = E.retrieval_recall(captions, images, image_of_caption, ks=(1, 5, 10), chunk_size=7)
    image_to_text = E.retrieval_recall_many(images, captions, torch.arange(30), image_of_caption, chunk_size=4)
    for k in (1, 5, 10):
        assert text_to_image[f"R@{k}"] == pytest.approx(
            _loop_recall(captions, images, image_of_caption, torch.arange(30), k)
        )
        assert image_to_text[f"R@{k}"] == pytest.approx(
            _loop_recall(images, captions, torch.arange(30), image_of_caption, k)
        )
    assert E.retrieval_recall(images, images, torch.arange(30))["R@1"] == 1.0
    with pytest.raises(ValueError, match="no item in the gallery"):
        E.retrieval_recall(images, images[:5], torch.arange(30))


@pytest.mark.slow
def test_paper_linear_protocol_follows_its_schedule_on_raw_features():
    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16, digits.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1300], order[1300:]
    ours = E.linear_probe(x[train], y[train], x[test], y[test], epochs=20, protocol="paper")
    # the protocol written out: raw features, zero-initialised classifier, Adam(1e-3, betas (0.5, 0.999)),
    # learning rate x0.2 at 60% and 80% of the epochs, the same seeded mini-batches
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    classifier = torch.nn.Linear(64, 10)
    torch.nn.init.zeros_(classifier.weight), torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(0)
    for epoch in range(20):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.2 ** ((epoch >= 12) + (epoch >= 16))
        for batch in torch.randperm(1300, generator=generator).split(256):
            loss = torch.nn.functional.cross_entropy(classifier(xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = classifier(torch.from_numpy(x[test]))
    expected = float((logits.argmax(1) == torch.from_numpy(y[test])).double().mean())
    assert ours["test_accuracy"] == expected
    assert ours["test_loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[test]))), rel=1e-5
    )
    with pytest.raises(ValueError, match="protocol must be"):
        E.linear_probe(x[train], y[train], x[test], y[test], protocol="sklearn")


# --- mixed precision, NaN/Inf, small temperatures --------------------------------------------------------------
def _pairs_of_views(n=40, d=6, seed=4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    return a, a + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % 4


EVALUATIONS = {
    "knn_accuracy": lambda a, b, y: E.knn_accuracy(a, y, b, y, k=5),
    "linear_probe": lambda a, b, y: E.linear_probe(a, y, b, y, epochs=3, batch_size=16),
    "sts_spearman": lambda a, b, y: E.sts_spearman(a, b, torch.linspace(0, 5, a.shape[0]).sin()),
    "retrieval_recall": lambda a, b, y: E.retrieval_recall(a, b, torch.arange(a.shape[0])),
    "retrieval_recall_many": lambda a, b, y: E.retrieval_recall_many(a, b, y, y),
}


@pytest.mark.parametrize("name", sorted(EVALUATIONS))
def test_mixed_float32_and_float64_inputs_are_promoted(name):
    a, b, y = _pairs_of_views()
    run = EVALUATIONS[name]
    # linear_probe trains its classifier in float32 whatever it is given; the others promote to the wider dtype
    want = run(a.float(), b.float(), y) if name == "linear_probe" else run(a, b, y)
    assert run(a, b.float(), y) == pytest.approx(want, rel=1e-6)
    assert run(a.float(), b, y) == pytest.approx(want, rel=1e-6)
    assert run(a.numpy(), b.float().numpy(), y.numpy()) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", sorted(EVALUATIONS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_in_the_embeddings_is_refused(name, bad):
    a, b, y = _pairs_of_views()
    for which in ("first", "second"):
        x = (a if which == "first" else b).clone()
        x[-1, 2] = bad
        args = (x, b, y) if which == "first" else (a, x, y)
        with pytest.raises(ValueError, match=r"contains 1 NaN or Inf value\(s\) out of 240"):
            EVALUATIONS[name](*args)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_scores_is_refused(bad):
    a, b, _ = _pairs_of_views()
    gold = torch.linspace(0, 5, 40, dtype=torch.float64)
    gold[7] = bad
    with pytest.raises(ValueError, match=r"gold contains 1 NaN or Inf value\(s\) out of 40; .*drop"):
        E.sts_spearman(a, b, gold)
    with pytest.raises(ValueError, match=r"x contains 1 NaN or Inf value\(s\) out of 40; .*drop"):
        E.spearman(gold.numpy(), np.arange(40.0))
    with pytest.raises(ValueError, match=r"y contains 1 NaN"):
        E.spearman(list(range(40)), gold.tolist())
    assert E.spearman(np.arange(40.0), torch.arange(40, dtype=torch.float32)) == pytest.approx(1.0)


@pytest.mark.parametrize("temperature", [0.05, 0.01, 0.005, 1e-3])
def test_knn_votes_do_not_overflow_at_small_temperatures(temperature):
    # e^(cos / tau) overflows float32 below tau = 1 / 88.7 (and float64 below 1 / 709): the votes are weighted
    # relative to each query's nearest neighbour; reference: the log of each class's vote, in float64
    train_z, train_y = _clusters(300, seed=5, noise=2.5)
    test_z, _ = _clusters(80, seed=6, noise=2.5)
    k = 30
    sims = torch.nn.functional.normalize(test_z, dim=1) @ torch.nn.functional.normalize(train_z, dim=1).T
    top, index = sims.topk(k, dim=1)
    log_votes = torch.full((80, 4), -math.inf, dtype=torch.float64)
    for c in range(4):
        mine = torch.where(train_y[index] == c, top / temperature, -math.inf)
        log_votes[:, c] = torch.logsumexp(mine, dim=1)
    want = log_votes.argmax(1)
    for dtype in (torch.float32, torch.float64):
        got = E.knn_predict(train_z.to(dtype), train_y, test_z.to(dtype), k=k, temperature=temperature)
        assert torch.equal(got, want), dtype
    with pytest.raises(ValueError, match="temperature must be at least 1e-20"):
        E.knn_predict(train_z, train_y, test_z, temperature=1e-40)
