"""How much an ERF measurement costs next to the passes it cannot avoid.

For resnet50 ``layer4`` and convnext_tiny ``features.5`` at 3x224x224 (torchvision architectures with
their random initialisation: nothing is downloaded), on the same 32 noise samples in batches of 16:

- ``erf``: ``rflens.effective_receptive_field(...)`` end to end (input generation, memory estimate,
  forward to the layer, one backward per batch, float64 accumulation, the TRF engine call, metrics);
- ``plain full``: ``model(x).sum().backward()`` on the whole model (a training-style step);
- ``plain to layer``: forward to the same layer and the input gradient only (what an ERF must do).

Ratios are ``erf / plain``; the target is ``erf / plain full <= 1.3``. Also times the analytic ERF of
a 100-layer 3x3 stack (target < 50 ms). Medians over ``--repeat`` runs, after one warm-up.

    python benchmarks/erf_speed.py [--samples 32] [--batch-size 16] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torchvision

from rflens.erf.analytic import analytic_erf
from rflens.erf import ERFWarning, effective_receptive_field, trf_of_unit
from rflens.trf import LayerRef, run_to_layer
from rflens.erf.inputs import resolve_inputs

CASES = [("resnet50", "layer4"), ("convnext_tiny", "features.5")]
SHAPE = (3, 224, 224)


def batches(samples: int, batch_size: int) -> list[torch.Tensor]:
    stream = resolve_inputs("noise", SHAPE, seed=0).samples(SHAPE)
    xs = [next(stream) for _ in range(samples)]
    return [torch.stack(xs[i:i + batch_size]) for i in range(0, samples, batch_size)]


def plain_full(model: torch.nn.Module, xs: list[torch.Tensor]) -> None:
    for x in xs:
        x = x.clone().requires_grad_(True)
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)


def plain_to_layer(model: torch.nn.Module, layer: str, xs: list[torch.Tensor]) -> None:
    target = LayerRef.parse(layer, model)
    for x in xs:
        x = x.clone().requires_grad_(True)
        y = run_to_layer(model, target, (x,))
        torch.autograd.grad(y[:, :, y.shape[2] // 2, y.shape[3] // 2].sum(), x)


def run_erf(model: torch.nn.Module, layer: str, samples: int, batch_size: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        effective_receptive_field(model, layer, SHAPE, samples=samples, batch_size=batch_size,
                                  progress=False)


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xs = batches(args.samples, args.batch_size)
    rows = []
    for name, layer in CASES:
        model = getattr(torchvision.models, name)(weights=None).eval()
        t_erf = median_time(lambda: run_erf(model, layer, args.samples, args.batch_size), args.repeat)
        t_full = median_time(lambda: plain_full(model, xs), args.repeat)
        t_layer = median_time(lambda: plain_to_layer(model, layer, xs), args.repeat)
        t_trf = median_time(lambda: trf_of_unit(model, SHAPE, layer, (3, 3)), args.repeat)
        rows.append({"model": name, "layer": layer, "erf_s": t_erf, "plain_full_s": t_full,
                     "plain_to_layer_s": t_layer, "trf_engine_s": t_trf,
                     "ratio_vs_full": t_erf / t_full, "ratio_vs_layer": t_erf / t_layer})
    analytic_erf([3] * 100)
    t_analytic = median_time(lambda: analytic_erf([3] * 100), max(args.repeat, 5))
    report = {"samples": args.samples, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "device": "cpu", "cases": rows, "analytic_100x3x3_ms": t_analytic * 1e3}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.samples} samples, batches of {args.batch_size}, {report['threads']} thread(s), "
          f"median of {args.repeat}")
    print(f"{'model':<14}{'layer':<12}{'erf s':>8}{'full f+b s':>12}{'to-layer s':>12}"
          f"{'(trf s)':>9}{'erf/full':>10}{'erf/layer':>11}")
    for r in rows:
        print(f"{r['model']:<14}{r['layer']:<12}{r['erf_s']:>8.2f}{r['plain_full_s']:>12.2f}"
              f"{r['plain_to_layer_s']:>12.2f}{r['trf_engine_s']:>9.2f}{r['ratio_vs_full']:>10.2f}"
              f"{r['ratio_vs_layer']:>11.2f}")
    status = "ok" if report["analytic_100x3x3_ms"] < 50 else "SLOW"
    print(f"analytic ERF, 100-layer 3x3 stack: {report['analytic_100x3x3_ms']:.1f} ms ({status}, "
          "target < 50 ms)")


if __name__ == "__main__":
    main()
