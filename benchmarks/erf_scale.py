"""ERF throughput with one and several processes, next to the passes an ERF cannot avoid.

For one model and layer (default torchvision resnet50 ``layer4`` at 3x224x224, random
initialisation: nothing is downloaded), on the same noise samples in the same batches:

- ``plain to layer``: forward to the layer and the input gradient of the centre unit, batch by
  batch (what any ERF must compute);
- ``plain full``: ``model(x).sum().backward()`` on the whole model (a training-style step);
- ``erf 1 proc``: ``rflens.effective_receptive_field(...)`` end to end in this process (memory
  estimate, forward, backward, float64 sums, the TRF engine call, metrics);
- ``erf N proc``: the same with ``workers=N`` (N = 2 by default; this process is rank 0 and N - 1
  are started), end to end including process start-up, and the steady-state rate it implies.

Prints samples per second for each and the ratio ``erf 1 proc / plain to layer`` (target <= 1.1).
With ``--device cuda`` (where a GPU is lent) the same on the GPU; several GPUs: ``--workers N``
puts rank r on ``cuda:r``. Medians over ``--repeat`` runs after one warm-up; ``plain to layer`` and
``erf 1 proc`` alternate, so load from other processes falls on both alike.

    python benchmarks/erf_scale.py [--model resnet50] [--layer layer4] [--samples 32]
                                   [--batch-size 16] [--workers 2] [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torchvision

from rflens.erf import ERFWarning, effective_receptive_field
from rflens.erf.inputs import resolve_inputs
from rflens.trf import LayerRef, run_to_layer

SHAPE = (3, 224, 224)


def batches(samples: int, batch_size: int) -> list[torch.Tensor]:
    stream = resolve_inputs("noise", SHAPE, seed=0).samples(SHAPE)
    xs = [next(stream) for _ in range(samples)]
    return [torch.stack(xs[i:i + batch_size]) for i in range(0, samples, batch_size)]


def plain_to_layer(model, layer: str, xs: list[torch.Tensor], device: torch.device) -> None:
    target = LayerRef.parse(layer, model)
    for x in xs:
        x = x.to(device).requires_grad_(True)
        y = run_to_layer(model, target, (x,))
        torch.autograd.grad(y[:, :, y.shape[2] // 2, y.shape[3] // 2].sum(), x)
    _sync(device)


def plain_full(model, xs: list[torch.Tensor], device: torch.device) -> None:
    for x in xs:
        x = x.to(device).requires_grad_(True)
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    _sync(device)


def erf(model, layer: str, samples: int, batch_size: int, workers: int, device: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        effective_receptive_field(model, layer, SHAPE, samples=samples, batch_size=batch_size,
                                  progress=False, workers=workers, device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeat: int) -> float:
    return median_times([fn], repeat)[0]


def median_times(fns: list, repeat: int) -> list[float]:
    """Medians over ``repeat`` rounds in which the functions run one after the other (after one
    warm-up each), so load from other processes falls on all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a torchvision classification model")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    xs = batches(args.samples, args.batch_size)
    n = args.samples
    t_layer, t_erf1 = median_times([lambda: plain_to_layer(model, args.layer, xs, device),
                                    lambda: erf(model, args.layer, n, args.batch_size, 1, args.device)],
                                   args.repeat)
    for p in model.parameters():
        p.requires_grad_(True)
    t_full = median_time(lambda: plain_full(model, xs, device), args.repeat)
    for p in model.parameters():
        p.requires_grad_(False)
    # start-up of the extra processes: a run with one batch per process
    t_start = median_time(lambda: erf(model, args.layer, args.batch_size * args.workers,
                                      args.batch_size, args.workers, args.device), 1)
    t_erfn = median_time(lambda: erf(model, args.layer, n, args.batch_size, args.workers, args.device),
                         args.repeat)
    rounds = -(-n // (args.batch_size * args.workers))
    steady = t_erfn - t_start if rounds > 1 else float("nan")  # the rounds after the first
    report = {"model": args.model, "layer": args.layer, "samples": n, "batch_size": args.batch_size,
              "device": args.device, "threads": torch.get_num_threads(), "workers": args.workers,
              "plain_to_layer_s": t_layer, "plain_full_s": t_full, "erf_1_s": t_erf1,
              f"erf_{args.workers}_s": t_erfn, f"erf_{args.workers}_one_round_s": t_start,
              "samples_per_s": {"plain_to_layer": n / t_layer, "plain_full": n / t_full,
                                "erf_1": n / t_erf1, f"erf_{args.workers}": n / t_erfn,
                                f"erf_{args.workers}_after_first_round":
                                    (n - args.batch_size * args.workers) / steady
                                    if rounds > 1 and steady > 0 else None},
              "ratio_erf1_vs_plain_to_layer": t_erf1 / t_layer}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    rate = report["samples_per_s"]
    print(f"{args.model} {args.layer}, {n} samples at {'x'.join(map(str, SHAPE))}, batches of "
          f"{args.batch_size}, {args.device}, {report['threads']} thread(s), median of {args.repeat}")
    print(f"{'':28}{'seconds':>10}{'samples/s':>12}")
    print(f"{'plain to layer + input grad':28}{t_layer:>10.2f}{rate['plain_to_layer']:>12.2f}")
    print(f"{'plain full forward+backward':28}{t_full:>10.2f}{rate['plain_full']:>12.2f}")
    print(f"{'erf, 1 process':28}{t_erf1:>10.2f}{rate['erf_1']:>12.2f}")
    print(f"{f'erf, {args.workers} processes':28}{t_erfn:>10.2f}{rate[f'erf_{args.workers}']:>12.2f}")
    after = rate[f"erf_{args.workers}_after_first_round"]
    print(f"{'  (one round, start-up incl.)':28}{t_start:>10.2f}"
          f"{'':>12}" + (f"  -> {after:.2f} samples/s after it" if after else ""))
    ratio = report["ratio_erf1_vs_plain_to_layer"]
    print(f"erf 1 process / plain to layer = {ratio:.2f} ({'ok' if ratio <= 1.1 else 'ABOVE'} target 1.1)")


if __name__ == "__main__":
    main()
