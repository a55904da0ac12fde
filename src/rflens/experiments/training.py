"""``training``: does the ERF grow while a network learns? (Luo et al. 2016, section 4.3: after
training on CIFAR-10 and CamVid the ERF was larger than at initialisation.)

Data: scikit-learn's bundled digits (1797 8×8 grey images, 10 classes; no download), upsampled
bilinearly to ``size``×``size``, standardised with the training split's mean and standard
deviation, split into training and held-out sets stratified by class (``test_fraction``).

Model (:class:`DigitsCNN`): five 3×3 'same' conv-BatchNorm-ReLU layers (16, 16, pool, 32, 32, pool,
64 channels, 2×2 max pools), global average pooling and a linear classifier; TRF of the last conv
layer 24×24. Adam (``lr``), cross-entropy, mini-batches of ``batch_size``, ``epochs`` epochs.

ERF: after every epoch (epoch 0 = the initial weights), the gradient ERF of the centre unit of
``features`` (the last ReLU, before pooling; :func:`rflens.effective_receptive_field` with the
model's own weights, in eval mode) averaged over the first ``erf_samples`` *held-out digits*, and
separately over as many Gaussian-noise inputs; both input sets are the same at every epoch. σ is
the Gaussian fit (mean of both axes, pixels of the upsampled image). Accuracy is on the whole
held-out split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rflens.errors import RflensError
from rflens.experiments.core import Check, ExperimentResult, compare, fmt, mean_sigma, measure_erf, seeded

__all__ = ["TrainingResult", "DigitsCNN", "load_digits", "run"]

LAYER = "features"


class DigitsCNN(nn.Module):
    """conv16-conv16-pool-conv32-conv32-pool-conv64 (3×3, BatchNorm, ReLU), global average pooling,
    linear classifier over ``classes``."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [1, 16, 16, "pool", 32, 32, "pool", 64]
        c_in = 1
        for c in channels[1:]:
            if c == "pool":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_digits(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(N, 1, size, size)`` float32 in [0, 1] (bilinear upsampling of the
    8×8 images divided by 16) and ``(N,)`` int64 labels."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as exc:
        raise RflensError("the training experiment needs scikit-learn, whose digits data set it "
                          "uses (pip install scikit-learn)") from exc
    digits = sk_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, torch.tensor(digits.target, dtype=torch.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: per class, a shuffled ``test_fraction`` goes to ``test``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(test_fraction * idx.size))
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass
class Epoch:
    """After ``epoch`` epochs: mean training loss of that epoch (NaN at 0), held-out accuracy, σ of
    the ERF on held-out digits and on noise (px), the ERF/TRF ratio on digits (95 % extent / TRF,
    mean of axes), and the seconds the epoch's training took."""

    epoch: int
    train_loss: float
    test_accuracy: float
    sigma_digits: float
    sigma_noise: float
    erf_trf_ratio_digits: float
    train_seconds: float

    def to_dict(self) -> dict:
        from rflens.experiments.core import jsonable

        return {k: jsonable(v) for k, v in self.__dict__.items()}


@dataclass(kw_only=True)
class TrainingResult(ExperimentResult):
    """``history`` per epoch; ``trf`` the field of the probed unit (px); ``maps`` the digits ERF
    maps (normalised) at the first and last epoch, for the figure only."""

    history: list[Epoch]
    trf: int
    train_size: int
    test_size: int
    maps: dict[int, np.ndarray] = field(repr=False, default_factory=dict)

    def data(self) -> dict:
        out = super().data()
        out.pop("maps", None)
        return out

    def figure(self):
        return _figure(self)


def _erf(model: nn.Module, probe: torch.Tensor, size: int, samples: int, seed: int,
         notes: list[str], epoch: int):
    shape = (1, size, size)
    digits = measure_erf(model, shape, notes, label=f"epoch {epoch}, digits", layer=LAYER,
                         inputs=probe, samples=samples, seed=seed)
    noise = measure_erf(model, shape, notes, label=f"epoch {epoch}, noise", layer=LAYER,
                        inputs="noise", samples=samples, seed=seed)
    return digits, noise


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, generator: torch.Generator) -> float:
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    total, count = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.numel()
        count += idx.numel()
    return total / count


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


def run(epochs: int = 8, size: int = 32, batch_size: int = 32, lr: float = 1e-3,
        erf_samples: int = 128, test_fraction: float = 0.25, subset: int | None = None,
        seed: int = 0) -> TrainingResult:
    """Train :class:`DigitsCNN` for ``epochs`` epochs, measuring the ERF and held-out accuracy
    after each (see the module docstring). ``subset`` limits the training split to that many
    images (a quick wiring check)."""
    x, y = load_digits(size)
    train, test = stratified_split(y.numpy(), test_fraction, seed)
    if subset is not None:
        train = train[np.random.default_rng(seed).permutation(train.size)[:subset]]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    probe = x[test[:erf_samples]]
    notes: list[str] = []
    with seeded(seed):
        model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history, maps = [], {}
    trf = 0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        loss = _train_epoch(model, opt, x[train], y[train], batch_size, generator) if epoch else float("nan")
        seconds = time.perf_counter() - start if epoch else 0.0
        digits, noise = _erf(model, probe, size, probe.shape[0], seed, notes, epoch)
        trf = digits.trf.size[0] if digits.trf else 0
        if epoch in (0, epochs):
            maps[epoch] = digits.normalized
        history.append(Epoch(epoch, loss, _accuracy(model, x[test], y[test]), mean_sigma(digits),
                             mean_sigma(noise), float(np.mean(digits.metrics.erf_trf_ratio)), seconds))
    return TrainingResult(
        name="training", title="ERF and accuracy while a small CNN learns scikit-learn's digits",
        checks=_checks(history),
        settings={"data": f"scikit-learn digits, 8×8 upsampled bilinearly to {size}×{size}, "
                          "standardised", "split": f"stratified, {test_fraction:g} held out",
                  "model": "5 conv3×3-BN-ReLU (16,16,pool,32,32,pool,64), GAP, linear",
                  "optimiser": f"Adam lr {lr:g}", "batch size": batch_size, "epochs": epochs,
                  "erf layer": LAYER, "erf unit": "centre",
                  "erf inputs": f"{probe.shape[0]} held-out digits; {probe.shape[0]} Gaussian-noise "
                                "inputs (the same every epoch)",
                  "subset": subset, "seed": seed},
        notes=notes, history=history, trf=trf, train_size=int(train.size), test_size=int(test.size),
        maps=maps)


def _checks(history: list[Epoch]) -> list[Check]:
    first, last = history[0], history[-1]
    checks = []
    for what, a, b in (("held-out digits", first.sigma_digits, last.sigma_digits),
                       ("noise", first.sigma_noise, last.sigma_noise)):
        ratio = b / a
        checks.append(Check(f"ERF grows during training (σ on {what}, epoch 0 → {last.epoch})",
                            "σ ratio > 1", f"{fmt(a, 2)} → {fmt(b, 2)} px (×{fmt(ratio, 3)})",
                            bool(ratio > 1), ratio))
    checks.append(compare("held-out accuracy after training (sanity, not literature)",
                          last.test_accuracy, ">=", 0.9))
    return checks


# --- figure ---------------------------------------------------------------------------------------

def _figure(r: TrainingResult):
    from rflens import plot

    fig = plot.RFFigure(figsize=(15, 3.8), dpi=plot.DPI, layout="constrained")
    ax_acc, ax_sig, ax_first, ax_last = fig.subplots(1, 4, width_ratios=(1.2, 1.2, 1, 1))
    _accuracy_panel(ax_acc, r)
    _sigma_panel(ax_sig, r)
    _map_panels(fig, (ax_first, ax_last), r)
    size = next(iter(r.maps.values())).shape[0] if r.maps else "?"
    fig.suptitle(f"training: a small CNN on scikit-learn's digits (upsampled to {size} px)", fontsize=10)
    return fig


def _accuracy_panel(ax, r: TrainingResult) -> None:
    epochs = [e.epoch for e in r.history]
    ax.plot(epochs, [e.test_accuracy for e in r.history], "o-", color="#1f77b4",
            label="held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out accuracy")
    loss_ax = ax.twinx()
    loss_ax.plot(epochs, [e.train_loss for e in r.history], "s--", color="#ff7f0e", ms=3,
                 label="training loss")
    loss_ax.set_ylabel("training loss")
    ax.legend(handles=ax.lines + loss_ax.lines, fontsize=7, loc="center right")
    ax.set_title(f"accuracy ({r.test_size} held out) and loss", fontsize=9)


def _sigma_panel(ax, r: TrainingResult) -> None:
    epochs = [e.epoch for e in r.history]
    ax.plot(epochs, [e.sigma_digits for e in r.history], "o-", color="#2ca02c",
            label="on held-out digits")
    ax.plot(epochs, [e.sigma_noise for e in r.history], "s--", color="#9467bd", label="on noise")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ERF σ (px, Gaussian fit)")
    ax.set_title(f"ERF σ of the centre unit of '{LAYER}' (TRF {r.trf})", fontsize=9)
    ax.legend(fontsize=7)


def _map_panels(fig, axes, r: TrainingResult) -> None:
    """The digits ERF at the first and last epoch, on one colour scale (the larger maximum)."""
    if not r.maps:
        return
    peak = max(float(m.max()) for m in r.maps.values())
    for ax, epoch in zip(axes, (0, r.history[-1].epoch)):
        image = ax.imshow(r.maps[epoch] / peak, cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest")
        ax.set_title(f"ERF on digits, epoch {epoch}: σ {r.history[epoch].sigma_digits:.2f}",
                     fontsize=9)
        ax.set_xlabel("column (px)")
    fig.colorbar(image, ax=axes[-1], fraction=0.046, pad=0.03, label="ERF / max of both")
