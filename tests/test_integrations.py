"""The Walker inside PyTorch Lightning and the Hugging Face Trainer, with tiny models built here
(nothing downloaded). Skipped where the optional extra is not installed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdwalk.records import FINISHED
from sgdwalk.session import open_session


def toy(n: int = 128, d: int = 6, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_lightning_fit_with_accumulation_counts_each_optimizer_step_once(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from sgdwalk.integrations.lightning import WalkerCallback

    x, y = toy()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _i):
            xb, yb = batch
            return nn.functional.cross_entropy(self(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    grads = []
    module = Module()
    callback = WalkerCallback(probe=(x, y), session="pl", sessions_dir=tmp_path, budget=None)
    trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=4, callbacks=[callback],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip

    class Grads(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads.append(torch.cat([p.grad.reshape(-1) for p in pl_module.parameters()]).norm())

    trainer.callbacks.append(Grads())
    trainer.fit(module, loader)
    with open_session(tmp_path / "pl") as s:
        steps, epochs = list(s.steps()), list(s.epochs())
        assert s.status == FINISHED
    assert len(steps) == 2 * 128 // (8 * 4) == len(grads)  # one step per 4 micro-batches
    assert [r.grad_norm for r in steps] == pytest.approx([g.item() for g in grads], rel=1e-5)
    assert [e.epoch for e in epochs] == [1, 2] and [r.epoch for r in steps] == [1] * 4 + [2] * 4
    # the batch loss is the mean of the four micro-batch losses, not Lightning's divided value
    assert all(0.5 < r.batch_loss < 2.0 for r in steps)
    assert all(r.measured and len(r.slice) == 11 for r in steps)


def test_hf_trainer_with_a_tiny_model_from_a_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sgdwalk.integrations.hf import WalkerCallback

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(1, 50, (64, 8))
    labels = (ids[:, 0] > 25).long()
    rows = [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long), "labels": lab}
            for i, lab in zip(ids, labels, strict=True)]  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=1,
        learning_rate=1e-3, gradient_accumulation_steps=2, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    callback = WalkerCallback(session="hf", sessions_dir=tmp_path, probe_size=32, budget=None)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   callbacks=[callback])  # fmt: skip
    trainer.train()
    with open_session(tmp_path / "hf") as s:
        steps, config_ = list(s.steps()), s.config
        assert s.status == FINISHED
    assert len(steps) == 64 // 16
    assert config_["model"] == "BertForSequenceClassification" and config_["lr"] == 1e-3
    assert all(r.batch_size == 16 for r in steps)  # 2 micro-batches of 8 seen by the model
    assert all(math.isfinite(r.batch_loss) and r.measured for r in steps)
    assert callback.walker is not None and callback.walker.probe.size == 32
