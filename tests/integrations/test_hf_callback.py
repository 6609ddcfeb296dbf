"""contrasphere.integrations.hf: a real transformers.Trainer on a tiny random BERT, built locally (no hub access);
the logged geometry equals contrasphere.metrics on embeddings recomputed here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="needs the hf extra: pip install 'contrasphere[hf]'")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate: pip install 'contrasphere[hf]'")

from transformers import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from contrasphere import metrics  # noqa: E402
from contrasphere.errors import InputError, InputTypeError  # noqa: E402
from contrasphere.integrations.hf import GeometryCallback  # noqa: E402

VOCAB = 40
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "log", "a", "big", "small", "red", "blue", "fast", "slow"]


def _config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )


def _tokens(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Padded input ids (0 is [PAD]) with lengths from 3 to ``length`` and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _pooled(encoder: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the encoder's last hidden states over the real tokens, computed here independently."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
    encoder.train(was)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def _expected(z_a: torch.Tensor, z_b: torch.Tensor, **kw) -> dict[str, float]:
    both = torch.cat([z_a, z_b])
    return {
        "eval_alignment": metrics.alignment(z_a, z_b, alpha=kw.get("alpha", 2.0)),
        "eval_uniformity": metrics.uniformity(both, t=kw.get("t", 2.0)),
        "eval_effective_rank": metrics.effective_rank(both),
    }


class _Recorder(TrainerCallback):
    """Stands in for a report_to backend: keeps every on_log payload."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def _args(tmp_path, **kw) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=5e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **kw,
    )


def _mlm_rows(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    t = _tokens(n, 10, seed)
    return [{**{k: v[i] for k, v in t.items()}, "labels": t["input_ids"][i]} for i in range(n)]


def test_trainer_logs_the_geometry_of_the_held_out_pairs(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(_config())
    held_a = _tokens(12, 10, 1)
    held_b = {
        "input_ids": held_a["input_ids"].roll(1, 1) * held_a["attention_mask"],
        **{"attention_mask": held_a["attention_mask"]},
    }
    callback = GeometryCallback(held_a, held_b, batch_size=5, alpha=1.5, t=3.0)
    recorder = _Recorder()
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, logging_steps=1),
        train_dataset=_mlm_rows(12, 2),
        eval_dataset=_mlm_rows(4, 3),
        callbacks=[recorder],
    )
    assert callback.attach(trainer) is callback
    callback.attach(trainer)  # a second attach does not register it twice
    assert trainer.callback_handler.callbacks.count(callback) == 1
    trainer.train()

    logged = [entry for entry in recorder.logs if "eval_alignment" in entry]
    assert len(logged) == 2  # one per evaluation, reaching on_log (every report_to backend)
    # the held-out pairs were measured with the weights of each step: training moved them
    assert logged[0]["eval_uniformity"] != logged[-1]["eval_uniformity"]
    # recompute with the trained encoder (the weights of the last evaluation, at step 2)
    expected = _expected(_pooled(model.bert, held_a), _pooled(model.bert, held_b), alpha=1.5, t=3.0)
    for key, value in expected.items():
        assert logged[-1][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert any("eval_effective_rank" in entry for entry in trainer.state.log_history)

    # evaluate() returns them too (what metric_for_best_model reads)
    returned = trainer.evaluate()
    for key, value in expected.items():
        assert returned[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _tokenizer(tmp_path) -> BertTokenizerFast:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


TEXTS_A = ["the cat sat on the mat", "a big dog ran", "the red log", "a small blue cat ran fast", "the dog sat"]
TEXTS_B = ["the cat sat on a mat", "a big dog ran fast", "the red big log", "a small cat ran", "the slow dog sat"]


def test_texts_are_tokenised_with_the_trainers_processing_class(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(1)
    config = _config()
    config.vocab_size = len(tokenizer)
    model = BertModel(config)
    callback = GeometryCallback(TEXTS_A, TEXTS_B, batch_size=2)  # no tokenizer: the trainer's
    trainer = Trainer(
        model=model,
        args=_args(tmp_path),
        eval_dataset=[dict(tokenizer(text)) for text in TEXTS_A],
        processing_class=tokenizer,
        callbacks=[callback],  # not attached: evaluate()'s dict and the log history only, with a warning
    )
    with pytest.warns(UserWarning, match="attach"):
        returned = trainer.evaluate()
    encode = lambda texts: dict(tokenizer(texts, padding=True, return_tensors="pt"))  # noqa: E731
    expected = _expected(_pooled(model, encode(TEXTS_A)), _pooled(model, encode(TEXTS_B)))
    for key, value in expected.items():
        assert returned[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        assert trainer.state.log_history[-1][key] == returned[key]


def test_a_user_embed_fn_and_the_modes_restored(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(2)
    config = _config()
    config.vocab_size = len(tokenizer)
    model = BertModel(config)
    model.train()
    model.embeddings.eval()  # a frozen part: must stay in eval mode
    cls = lambda m, batch: m(**batch).last_hidden_state[:, 0]  # noqa: E731  the [CLS] token, not the mean
    callback = GeometryCallback(TEXTS_A, TEXTS_B, tokenizer=tokenizer, embed_fn=cls, normalize=True, t=1.0)
    measured = callback.measure(model)
    assert model.training and model.encoder.training and not model.embeddings.training
    model.eval()
    with torch.no_grad():
        z_a = model(**tokenizer(TEXTS_A, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
        z_b = model(**tokenizer(TEXTS_B, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    both = torch.cat([z_a, z_b])
    assert measured["alignment"] == pytest.approx(metrics.alignment(z_a, z_b), rel=1e-5)
    assert measured["uniformity"] == pytest.approx(metrics.uniformity(both, t=1.0), rel=1e-5)
    assert measured["effective_rank"] == pytest.approx(metrics.effective_rank(both), rel=1e-5)


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="positive pairs"):
        GeometryCallback(TEXTS_A, TEXTS_B[:3])
    with pytest.raises(InputTypeError, match="same form"):
        GeometryCallback(TEXTS_A, _tokens(5, 4, 0))
    with pytest.raises(InputTypeError, match="list of texts"):
        GeometryCallback("a text", "another")
    with pytest.raises(InputError, match="different numbers of rows"):
        GeometryCallback({"input_ids": torch.ones(3, 4).long(), "attention_mask": torch.ones(2, 4)}, _tokens(3, 4, 0))
    with pytest.raises(InputError, match="t must be"):
        GeometryCallback(TEXTS_A, TEXTS_B, t=0)
    model = BertModel(_config())
    with pytest.raises(InputError, match="no tokenizer"):
        GeometryCallback(TEXTS_A, TEXTS_B).measure(model)
    with pytest.raises(InputError, match="embed_fn returned 1 embeddings for a batch of 3"):
        GeometryCallback(_tokens(3, 4, 0), _tokens(3, 4, 1), embed_fn=lambda m, b: torch.ones(1, 4)).measure(model)
    with pytest.raises(InputError, match=r"shape \(B, D\)"):
        GeometryCallback(_tokens(3, 4, 0), _tokens(3, 4, 1), embed_fn=lambda m, b: torch.ones(3)).measure(model)

    class Opaque(nn.Module):  # returns something without hidden states
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(2, 2)

        def forward(self, input_ids, attention_mask=None):
            return {"scores": input_ids.float()}

    with pytest.raises(InputError, match="pass embed_fn="):
        GeometryCallback(_tokens(3, 4, 0), _tokens(3, 4, 1)).measure(Opaque())
