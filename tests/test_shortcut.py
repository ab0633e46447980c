"""The first-layer shortcut (sgdwalk.shortcut) against direct evaluation in float64, and the slice
mode ``auto`` picks by timing.

Models with a Linear, a Conv and a BatchNorm first layer: the shortcut's slice equals the plain
one (every layer run at every point) and an independent reference, in loop and vmap modes; where
it cannot apply (BatchNorm first, a parameter read before the first layer) it is off and says why.
"""

from __future__ import annotations

import pytest
import torch
from test_measurements import TOL, reference_loss
from torch import nn

from sgdwalk.batches import make_chunks
from sgdwalk.landscape import interpolation_alphas
from sgdwalk.probe import Evaluator, flat_params
from sgdwalk.shortcut import find_first_layer
from sgdwalk.slicing import AUTO_TRIALS, AutoMode, Slicer


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Scaled(nn.Module):
    """Reads a parameter of its own before the first layer: the shortcut must not apply."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) * self.scale)


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "linear": (
            nn.Sequential(
                nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)
            ),
            (2, 3),
        ),  # fmt: skip
        "conv": (
            nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16, 3),
            ),
            (2, 4, 4),
        ),  # fmt: skip
        "batchnorm": (
            nn.Sequential(
                nn.Flatten(), nn.BatchNorm1d(6), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)
            ),
            (2, 3),
        ),  # fmt: skip
        "scaled": (Scaled(), (2, 3)),
        "inplace": (
            nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4, 3)),
            (2, 3),
        ),  # the ReLU writes into z  # fmt: skip
    }


def _setup(kind: str, mode: str = "loop", shortcut: bool = True):
    model, shape = _models()[kind]
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, *shape, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    chunks = make_chunks(x, y, 8)  # 8, 8, 4: BatchNorm's statistics per chunk
    theta0 = flat_params(model)
    theta1 = theta0 + 0.3 * torch.randn(theta0.shape, generator=gen)
    ev = Slicer(Evaluator(model), mode)
    ev.use_shortcut = shortcut
    return model, ev, chunks, theta0, theta1


EXPECTED = {"linear": "on: the first layer '1' (Linear)", "conv": "on: the first layer '0' (Conv2d)",
            "batchnorm": "off: the first layer is a BatchNorm1d, not a Linear or a convolution",
            "scaled": "off: the first layer's input (Linear) depends on parameters",
            "inplace": "on: the first layer '0' (Conv1d)"}  # fmt: skip


@pytest.mark.parametrize("mode", ["loop", "vmap"])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_shortcut_slice_equals_the_plain_slice_and_the_reference(kind, mode):
    alphas = interpolation_alphas(6)
    model, ev, chunks, theta0, theta1 = _setup(kind, mode)
    fast = ev.losses(theta0, theta1, alphas, chunks)
    assert ev.take_notes() == [f"first-layer shortcut {EXPECTED[kind]}"]
    assert (ev.first_layer is not False) is EXPECTED[kind].startswith("on")
    _, plain_ev, *_ = _setup(kind, mode, shortcut=False)
    plain = plain_ev.losses(theta0, theta1, alphas, chunks)
    assert plain_ev.first_layer is None  # never looked for
    ref = [reference_loss(model, theta0 + a * (theta1 - theta0), chunks) for a in alphas]
    assert fast.tolist() == pytest.approx(plain.tolist(), rel=TOL)
    assert fast.tolist() == pytest.approx(ref, rel=TOL)
    if mode == "loop":  # the ends are plain passes in both
        assert fast[0].item() == plain[0].item() and fast[-1].item() == plain[-1].item()


def _count_first_layer_runs(monkeypatch, ev: Slicer) -> list[int]:
    """How often the shadow's first layer really runs (replayed calls do not count)."""
    runs = [0]
    cls = type(ev.first_layer.layer)
    original = cls.forward

    def counted(self, x):
        if self is ev.first_layer.layer:
            runs[0] += 1
        return original(self, x)

    monkeypatch.setattr(cls, "forward", counted)
    return runs


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_a_walk_runs_the_first_layer_once_a_step(monkeypatch, mode):
    """Steps chained as the meter chains them (θ_{t+1} the same tensor, L_0 reused): z(θ_t) is
    the previous step's z(θ_{t+1}), so the layer runs on the θ_{t+1} pass only."""
    alphas = interpolation_alphas(8)
    model, ev, chunks, theta0, theta1 = _setup("linear", mode)
    first = ev.losses(theta0, theta1, alphas, chunks)
    runs = _count_first_layer_runs(monkeypatch, ev)
    theta2 = theta1 + 0.2 * (theta1 - theta0)
    second = ev.losses(theta1, theta2, alphas, chunks, first=first[-1])
    assert runs[0] == len(chunks)  # 3: the θ2 pass; not K + 1 = 9 passes' worth (27)
    ref = [reference_loss(model, theta1 + a * (theta2 - theta1), chunks) for a in alphas]
    assert second.tolist() == pytest.approx(ref, rel=TOL)
    # a θ_t that is not the kept θ_{t+1} (same values are fine): z(θ_t) from the kept inputs
    runs[0] = 0
    other = theta0 + 0.1
    third = ev.losses(other, theta1, alphas, chunks, first=first[0] * 0 + 1.0)
    assert runs[0] == 2 * len(chunks)  # θ1's pass and z(θ_t) alone
    ref = [reference_loss(model, other + a * (theta1 - other), chunks) for a in alphas[1:]]
    assert third[1:].tolist() == pytest.approx(ref, rel=TOL)


def test_new_chunks_are_recorded_afresh():
    """``--probe batch``: every step's chunks differ; nothing kept from the last ones is used."""
    alphas = interpolation_alphas(4)
    model, ev, chunks, theta0, theta1 = _setup("conv")
    ev.losses(theta0, theta1, alphas, chunks)
    gen = torch.Generator().manual_seed(5)
    fresh = make_chunks(torch.randn(12, 2, 4, 4, generator=gen), torch.randint(0, 3, (12,)), 8)
    got = ev.losses(theta1, theta0, alphas, fresh)
    ref = [reference_loss(model, theta1 + a * (theta0 - theta1), fresh) for a in alphas]
    assert got.tolist() == pytest.approx(ref, rel=TOL)


def test_too_large_outputs_turn_it_off(monkeypatch):
    from sgdwalk import shortcut

    monkeypatch.setattr(shortcut, "SHORTCUT_BYTES", 100)
    _, sl, chunks, *_ = _setup("linear")
    found, why = find_first_layer(sl.ev, chunks)
    assert found is None and why.startswith("off: the first layer's outputs over the probe need")


def test_finding_it_leaves_the_evaluator_as_it_was():
    _, sl, chunks, theta0, _ = _setup("scaled")
    ev = sl.ev
    before = ev.flat.clone()
    find_first_layer(ev, chunks)
    assert torch.equal(ev.flat, before) and torch.equal(ev.flat, theta0)
    assert "forward" not in vars(ev.shadow.fc)


# ---------------------------------------------------------------- auto


def test_auto_keeps_the_candidate_with_the_shortest_best_time():
    auto = AutoMode(shortcut=True)
    assert auto.candidates == [("loop", True), ("vmap", True), ("loop", False), ("vmap", False)]
    timings = [9.0] * 4 + [0.030, 0.021, 0.031, 0.020] + [0.029, 0.025, 0.032, 0.024]
    chosen = [auto.took(auto.next(), t) for t in timings]  # warm-ups ignored, then two rounds
    assert chosen[:-1] == [None] * (4 * (1 + AUTO_TRIALS) - 1)
    assert chosen[-1] == ("vmap", False)  # the best 20 ms
    assert auto.message(("vmap", False)) == (
        "slice mode auto: vmap, timed on the first steps (a slice: vmap 20 ms, vmap + first-layer "
        "shortcut 21 ms, loop + first-layer shortcut 29 ms, loop 31 ms)"
    )
    assert AutoMode(shortcut=False).candidates == [("loop", False), ("vmap", False)]


@pytest.mark.parametrize("kind", ["conv", "batchnorm"])
def test_auto_settles_on_a_mode_and_notes_it(kind):
    alphas = interpolation_alphas(4)
    model, ev, chunks, theta0, theta1 = _setup(kind, "auto")
    ref = [reference_loss(model, theta0 + a * (theta1 - theta0), chunks) for a in alphas]
    rounds = 4 if kind == "conv" else 2  # with and without the shortcut where it applies
    for _ in range(rounds * (1 + AUTO_TRIALS)):
        got = ev.losses(theta0, theta1, alphas, chunks)
        assert got.tolist() == pytest.approx(ref, rel=TOL)  # every trial is a real slice
    assert ev.mode in ("loop", "vmap")
    chosen = ev.take_notes()[-1].split(",")[0]  # "slice mode auto: vmap + first-layer shortcut"
    assert ev.use_shortcut is ("shortcut" in chosen) and (kind == "conv" or not ev.use_shortcut)
    settled = ev.mode, ev.use_shortcut
    ev.losses(theta0, theta1, alphas, chunks)
    assert (ev.mode, ev.use_shortcut) == settled and not ev.take_notes()


def test_auto_notes_its_choice():
    alphas = interpolation_alphas(4)
    _, ev, chunks, theta0, theta1 = _setup("conv", "auto")
    for _ in range(4 * (1 + AUTO_TRIALS)):
        ev.losses(theta0, theta1, alphas, chunks)
    first, chosen = ev.take_notes()
    assert first == "first-layer shortcut on: the first layer '0' (Conv2d)"
    name = ev.mode + (" + first-layer shortcut" if ev.use_shortcut else "")
    assert chosen.startswith(f"slice mode auto: {name}, timed on the first steps (a slice: {name} ")


class Branchy(nn.Module):
    """Takes a data-dependent branch: torch.func cannot vmap it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        return z if z.sum().item() > -1e9 else -z


def test_auto_falls_back_to_loop_when_vmap_fails():
    gen = torch.Generator().manual_seed(2)
    model = Branchy()
    chunks = make_chunks(torch.randn(10, 6, generator=gen), torch.randint(0, 3, (10,)), 5)
    theta0 = flat_params(model)
    theta1 = theta0 + 0.1
    ev = Slicer(Evaluator(model), "auto")
    alphas = interpolation_alphas(3)
    for _ in range(2):
        got = ev.losses(theta0, theta1, alphas, chunks)
    ref = [reference_loss(model, theta0 + a * (theta1 - theta0), chunks) for a in alphas]
    assert got.tolist() == pytest.approx(ref, rel=TOL)
    assert ev.mode == "loop"
    assert ev.take_notes()[-1].startswith("slice mode auto: loop (vmap failed on this model:")


def test_the_chunk_without_batchnorm_fits_the_cpu_caches():
    """Without BatchNorm the chunk changes only speed: small for a CNN's large layer outputs
    (10 MB for 64 examples), large for an MLP's (10 kB an example; 512 and 1,024 ran alike)."""
    from sgdwalk.models import cnn, mlp
    from sgdwalk.probe import CHUNK, speed_chunk

    y = torch.zeros(2, dtype=torch.long)
    assert speed_chunk(cnn((3, 32, 32), 10), torch.zeros(2, 3, 32, 32), y) == 64
    assert speed_chunk(mlp((1, 28, 28), 10, batchnorm=False), torch.zeros(2, 1, 28, 28), y) == 512
    assert speed_chunk(nn.Linear(3, 2), torch.zeros(2, 3), y) == CHUNK


class InFours(nn.Module):
    """Takes batches of four only: the two-example probes of the shortcut and the chunk size fail."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % 4:
            raise ValueError("batches of four, please")
        return self.fc(x.flatten(1))


def test_a_model_that_will_not_take_two_examples_goes_without():
    from sgdwalk.probe import CHUNK, speed_chunk

    model = InFours()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 2, 3, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    chunks = make_chunks(x, y, 4)
    theta0 = flat_params(model)
    theta1 = theta0 + 0.1
    ev = Slicer(Evaluator(model), "loop")
    alphas = interpolation_alphas(4)
    got = ev.losses(theta0, theta1, alphas, chunks)
    assert ev.take_notes() == ["first-layer shortcut off: two examples did not run through the "
                               "model (batches of four, please)"]  # fmt: skip
    ref = [reference_loss(model, theta0 + a * (theta1 - theta0), chunks) for a in alphas]
    assert got.tolist() == pytest.approx(ref, rel=TOL)
    assert torch.equal(ev.ev.flat, theta1)  # the slice's last point, whatever the tracing did
    assert speed_chunk(model, x[:2], y[:2]) == CHUNK


def test_the_note_names_a_first_layer_with_its_article():
    """ "an Embedding", never "a Embedding"."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3))
    chunks = make_chunks(torch.randint(0, 10, (6, 3)), torch.randint(0, 3, (6,)), 3)
    _, why = find_first_layer(Evaluator(model), chunks)
    assert why == "off: the first layer is an Embedding, not a Linear or a convolution"
