"""contrasphere.integrations.lightning: a real Lightning Trainer on CPU; the logged geometry equals
contrasphere.metrics on the embeddings the module returned (its most recent queue_size pairs)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning", reason="needs the lightning extra: pip install 'contrasphere[lightning]'")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from contrasphere import metrics  # noqa: E402
from contrasphere.errors import InputError, InputTypeError  # noqa: E402
from contrasphere.integrations.lightning import GeometryCallback, _Queue  # noqa: E402

pytestmark = [  # Lightning's own notes about these tiny runs
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
]


class TwoViews(pl.LightningModule):
    """A linear encoder trained to align two noisy views; its steps return the contract's dict."""

    def __init__(self, out: str = "pairs", dump: str | None = None) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 5)
        self.out = out
        self.dump = dump
        self.train_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.val_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _pairs(self, batch):
        x_a, x_b = batch
        z_a, z_b = self.encoder(x_a), self.encoder(x_b)
        loss = -(F.normalize(z_a, dim=1) * F.normalize(z_b, dim=1)).sum(1).mean()
        return loss, z_a, z_b

    def training_step(self, batch, batch_idx):
        loss, z_a, z_b = self._pairs(batch)
        self.train_pairs.append((z_a.detach().clone(), z_b.detach().clone()))
        if self.out == "loss":
            return loss
        return {"loss": loss, "z_a": z_a, "z_b": z_b}

    def validation_step(self, batch, batch_idx):
        loss, z_a, z_b = self._pairs(batch)
        if not self.trainer.sanity_checking:
            self.val_pairs.append((z_a.clone(), z_b.clone()))
        return {"loss": loss, "z_a": z_a, "z_b": z_b}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def on_fit_end(self) -> None:  # under DDP: every rank's embeddings and values, for the parent to check
        if self.dump is not None:
            a = torch.cat([p[0] for p in self.train_pairs]).tolist()
            b = torch.cat([p[1] for p in self.train_pairs]).tolist()
            cb = next(c for c in self.trainer.callbacks if isinstance(c, GeometryCallback))
            logged = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
            with open(f"{self.dump}/rank{self.global_rank}.json", "w") as f:
                json.dump({"a": a, "b": b, "last": cb.last, "logged": logged}, f)


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, x + 0.3 * torch.randn(n, 6, generator=g))


def _trainer(tmp_path, callback, **kw) -> pl.Trainer:
    kw = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1, **kw}
    return pl.Trainer(
        logger=CSVLogger(str(tmp_path), name="geometry"),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kw,
    )


def _expected(pairs, k: int, prefix: str, **kw) -> dict[str, float]:
    a = torch.cat([p[0] for p in pairs])[-k:]
    b = torch.cat([p[1] for p in pairs])[-k:]
    both = torch.cat([a, b])
    return {
        f"{prefix}alignment": metrics.alignment(a, b, alpha=kw.get("alpha", 2.0)),
        f"{prefix}uniformity": metrics.uniformity(both, t=kw.get("t", 2.0)),
        f"{prefix}effective_rank": metrics.effective_rank(both),
    }


def _csv(tmp_path) -> list[dict[str, str]]:
    path = next(tmp_path.glob("geometry/version_*/metrics.csv"))
    with path.open() as f:
        return list(csv.DictReader(f))


def test_train_stage_logs_the_most_recent_pairs(tmp_path):
    torch.manual_seed(0)
    module = TwoViews()
    callback = GeometryCallback(queue_size=20, alpha=1.0, t=3.0)  # 5 batches of 8: the last 2.5 batches
    _trainer(tmp_path, callback).fit(module, DataLoader(_data(40, 0), batch_size=8))
    assert len(module.train_pairs) == 5
    expected = _expected(module.train_pairs, 20, "train_", alpha=1.0, t=3.0)
    assert callback.last == pytest.approx(expected, rel=1e-12)
    # the embeddings moved during the epoch: the oldest pairs would give another value
    older = _expected(module.train_pairs[:3], 20, "train_", t=3.0)["train_uniformity"]
    assert abs(older - expected["train_uniformity"]) > 1e-4
    rows = [row for row in _csv(tmp_path) if row.get("train_uniformity")]
    assert len(rows) == 1  # one value per epoch, through the logger (float32 there)
    for key, value in expected.items():
        assert float(rows[0][key]) == pytest.approx(value, rel=1e-6), key


def test_validation_stage_skips_the_sanity_check(tmp_path):
    torch.manual_seed(1)
    module = TwoViews()
    callback = GeometryCallback(stage="validation", queue_size=1000)
    trainer = _trainer(tmp_path, callback, max_epochs=2, num_sanity_val_steps=2)
    trainer.fit(module, DataLoader(_data(16, 1), batch_size=8), DataLoader(_data(12, 2), batch_size=5))
    assert len(module.val_pairs) == 6  # 2 epochs of 3 batches; the sanity check's 2 are not in the queue
    expected = _expected(module.val_pairs[3:], 1000, "val_")  # the last epoch only: the queue empties per epoch
    assert callback.last == pytest.approx(expected, rel=1e-12)
    rows = [row for row in _csv(tmp_path) if row.get("val_alignment")]
    assert len(rows) == 2
    for key, value in expected.items():
        assert float(rows[-1][key]) == pytest.approx(value, rel=1e-6), key
        assert float(trainer.callback_metrics[key]) == pytest.approx(value, rel=1e-6)


def test_the_queue_keeps_the_most_recent_rows():
    q = _Queue(5)
    rows = torch.arange(24.0).reshape(12, 2)
    for chunk in rows.split([3, 1, 4, 4]):
        q.add(chunk, -chunk)
    a, b = q.pairs()
    assert torch.equal(a, rows[-5:]) and torch.equal(b, -rows[-5:])
    assert sum(c[0].shape[0] for c in q.chunks) <= 5 + 4  # old chunks are dropped, not kept forever
    q.add(torch.zeros(9, 2), torch.zeros(9, 2))  # a chunk larger than the queue
    assert q.pairs()[0].shape == (5, 2) and len(q.chunks) == 1


def test_a_step_without_the_embeddings_says_what_to_return(tmp_path):
    with pytest.raises(InputError, match=r"return \{'loss': loss, 'z_a': z_a, 'z_b': z_b\}"):
        _trainer(tmp_path, GeometryCallback()).fit(TwoViews(out="loss"), DataLoader(_data(8, 0), batch_size=4))


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(InputError, match="stage"):
        GeometryCallback(stage="test")
    with pytest.raises(InputTypeError, match="keys"):
        GeometryCallback(keys=("z_a",))
    with pytest.raises(InputError, match="queue_size"):
        GeometryCallback(queue_size=0)
    with pytest.raises(InputError, match="alpha"):
        GeometryCallback(alpha=-1.0)
    callback = GeometryCallback()
    with pytest.raises(InputError, match="same shape"):
        callback._collect({"z_a": torch.ones(3, 4), "z_b": torch.ones(2, 4)})
    with pytest.raises(InputError, match=r"shape \(B, D\)"):
        callback._collect({"z_a": torch.ones(3), "z_b": torch.ones(3)})


@pytest.mark.slow
def test_ddp_gathers_every_ranks_queue(tmp_path):
    """Two CPU processes (forked: no re-import): the values are those of the union of both ranks' queues."""
    torch.manual_seed(2)
    module = TwoViews(dump=str(tmp_path))
    callback = GeometryCallback(queue_size=12)  # 24 rows per rank in batches of 8: the last 12 of each
    trainer = _trainer(tmp_path, callback, strategy="ddp_fork", devices=2)
    trainer.fit(module, DataLoader(_data(48, 3), batch_size=8))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["a"]) == len(ranks[1]["a"]) == 24 and ranks[0]["a"] != ranks[1]["a"]  # two halves
    a = torch.cat([torch.tensor(r["a"])[-12:] for r in ranks])
    b = torch.cat([torch.tensor(r["b"])[-12:] for r in ranks])
    both = torch.cat([a, b])
    expected = {
        "train_alignment": metrics.alignment(a, b),
        "train_uniformity": metrics.uniformity(both),
        "train_effective_rank": metrics.effective_rank(both),
    }
    for r in ranks:
        assert r["last"] == pytest.approx(expected, rel=1e-12)  # every rank got rank 0's values
        for key, value in expected.items():
            assert r["logged"][key] == pytest.approx(value, rel=1e-6)
    # and not the value of one rank's share alone
    alone = metrics.uniformity(torch.cat([a[:12], b[:12]]))
    assert abs(alone - expected["train_uniformity"]) > 1e-4
