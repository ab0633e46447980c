"""Transformers: curvature through PyTorch's fused attention (whose kernels have no double
backward), for a user's ``nn.TransformerEncoder`` and a Hugging Face model built from a config (no
download) at its default attention."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import sgdwalk


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x)).mean(1))


def _walk(tmp_path, model, probe, loss_fn, batches, **kw):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of ours reaches the user's terminal
        with sgdwalk.Walker(model, probe, loss_fn, session="t", sessions_dir=tmp_path,
                            hessian_every=2, top_k=2, budget=None, **kw) as walker:  # fmt: skip
            walker.attach(opt)
            for batch in batches:
                opt.zero_grad()
                loss = loss_fn(model, batch) if loss_fn else nn.functional.cross_entropy(
                    model(batch[0]), batch[1])  # fmt: skip
                loss.backward()
                opt.step()
    with sgdwalk.open_session(tmp_path / "t") as s:
        return s.status, list(s.steps()), list(s.curvature()), list(s.events())


def test_an_encoder_with_fused_attention_records_slices_and_finite_curvature(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randint(0, 11, (64, 5)), torch.randint(0, 11, (64,))
    status, steps, passes, _ = _walk(tmp_path, Encoder(), (x, y), None,
                                     [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)])  # fmt: skip
    assert status == "finished" and len(steps) == 4 and all(r.measured for r in steps)
    assert [c.step for c in passes] == [0, 2, 4]
    assert all(math.isfinite(v) for c in passes for v in c.eigenvalues)
    assert all(c.edge_ratio is not None for c in passes[1:])  # AdamW's edge after its 1st step


def test_a_hugging_face_causal_lm_at_its_default_attention(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.config._attn_implementation == "sdpa"  # the fused kernels, as users run it
    ids = torch.randint(0, 50, (48, 8))
    probe = {"input_ids": ids, "labels": ids}  # causal-LM: the model shifts the labels itself

    def lm_loss(m, batch):
        return m(**batch).loss

    batches = [{"input_ids": ids[i : i + 8], "labels": ids[i : i + 8]} for i in range(0, 32, 8)]
    status, steps, passes, _ = _walk(tmp_path, model, probe, lm_loss, batches)
    assert status == "finished" and len(steps) == 4 and all(r.measured for r in steps)
    assert all(math.isfinite(r.batch_loss) for r in steps)
    assert len(passes) == 3 and all(math.isfinite(v) for c in passes for v in c.eigenvalues)


def test_padded_batches_with_attention_masks_and_ignored_labels(tmp_path):
    """Language-model batches as a tokenizer pads them: an attention mask with zeros at the pads
    and labels -100 there (cross-entropy's ignore index), tied input/output embeddings (GPT-2's
    default): every slice and every pass is finite, and nothing warns."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    ids = torch.randint(1, 40, (32, 10))
    lengths = torch.randint(4, 11, (32,))
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pads are token 0
    labels = ids.masked_fill(mask == 0, -100)
    probe = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def lm_loss(m, batch):
        return m(**batch).loss

    batches = [{k: v[i : i + 8] for k, v in probe.items()} for i in range(0, 32, 8)]
    status, steps, passes, events = _walk(tmp_path, model, probe, lm_loss, batches)
    assert status == "finished" and len(steps) == 4 and all(r.measured for r in steps)
    assert all(math.isfinite(v) for r in steps for v in r.slice)
    assert passes and all(math.isfinite(v) for c in passes for v in c.eigenvalues)
    assert not [e for e in events if e.level == "warning"]
