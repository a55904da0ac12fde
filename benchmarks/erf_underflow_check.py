"""What the float32 underflow check inside the backward costs.

An ERF run in float32 (the default for ``weights="as-is"``) hooks, on its first batch, every
autograd node that computes new gradient values and keeps the smallest non-zero magnitude of each
gradient (:func:`rflens.erf.probe._watch_gradients`). This times one forward to the
layer plus the input-gradient backward with and without those hooks, on the same batch, and prints
the ratio (torchvision architectures with their random initialisation: nothing is downloaded).

    python benchmarks/erf_underflow_check.py [--batch-size 8] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from rflens.erf.probe import _underflow_inside, _watch_gradients
from rflens.trf import LayerRef, run_to_layer

CASES = [("resnet18", "layer3", 160), ("resnet50", "layer4", 160), ("convnext_tiny", "features.5", 160)]


def one_pass(model: torch.nn.Module, ref: LayerRef, x: torch.Tensor, watch: bool) -> float:
    x = x.clone().requires_grad_(True)
    start = time.perf_counter()
    y = run_to_layer(model, ref, (x,))
    picked = y[(slice(None), slice(None)) + tuple(n // 2 for n in y.shape[2:])]
    minima = _watch_gradients(picked) if watch else []
    torch.autograd.grad(picked.sum(), x)
    _underflow_inside(minima)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'model':<16}{'layer':<12}{'plain s':>10}{'checked s':>11}{'ratio':>8}")
    for name, layer, size in CASES:
        model = getattr(torchvision.models, name)().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        ref = LayerRef.parse(layer, model)
        x = torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
        one_pass(model, ref, x, True)  # warm-up
        plain, checked = [], []
        for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
            plain.append(one_pass(model, ref, x, False))
            checked.append(one_pass(model, ref, x, True))
        a, b = statistics.median(plain), statistics.median(checked)
        print(f"{name:<16}{layer:<12}{a:>10.3f}{b:>11.3f}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
