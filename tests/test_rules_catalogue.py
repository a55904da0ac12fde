"""The rule registry checks itself.

1. Every registered aten name exists in the installed torch and is dispatched (not only a
   CompositeImplicitAutograd kernel, which decomposes before a dispatch mode sees it).
2. A catalogue of small programs, one or more per rule, each compared unit by unit with the
   independent gradient-support oracle (tests/oracle.py): every rule function is exercised by at
   least one oracle comparison, and every registered name that a CPU build dispatches is seen.
   Ops whose gradient does not show their dependency structure (max, sort, argmax, dropout masks)
   are compared through a *twin*: the same program with a differentiable op of the same
   dependency structure (max -> sum over the same dims, sort -> sum broadcast back, cummax ->
   cumsum, dropout -> identity); the twin is what the oracle sees, the original what rflens sees.
3. Names that only CUDA/MPS/oneDNN builds dispatch are checked for argument binding: their rule,
   called with the op's own schema, must give what the CPU op's rule gives for the same geometry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rflens
from oracle import GradientOracle
from rflens.trf.engine import trace
from rflens.trf.graph import input_field
from rflens.trf.rules import RULES, Arg, OpCall
from rflens.trf.rules.registry import SCHEMAS


class Fn(nn.Module):
    """A module computing ``fn(x)``."""

    def __init__(self, fn: Callable, *modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x, *self.mods)


@dataclasses.dataclass
class Case:
    name: str
    model: nn.Module
    shape: tuple[int, ...]
    twin: nn.Module | None = None   # what the oracle runs (same dependency structure)
    is_global: bool = False         # the output depends on a whole axis (flag checked)
    dtype: torch.dtype = torch.float64  # float32 reaches the fused CPU attention kernel


def _c(c_in: int, c_out: int, k: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, **kw)


def _cases() -> list[Case]:
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1, dilation=2), nn.ReLU(),
                         nn.ConvTranspose2d(2, 1, 3, stride=2, padding=1))
    return [
        Case("conv+transposed", conv, (1, 13, 11)),
        Case("conv1d+conv3d", Fn(lambda x, a: a(x), nn.Conv1d(1, 1, 3, stride=2)), (1, 17)),
        Case("conv3d", nn.Sequential(nn.Conv3d(1, 1, 2, stride=(1, 2, 2)), nn.Conv3d(1, 1, 3, padding=1)),
             (1, 6, 7, 8)),
        Case("max+avg pools", nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, 1, 1)), (1, 12, 9)),
        Case("pools 1-D", nn.Sequential(nn.MaxPool1d(3, 2), nn.AvgPool1d(2)), (1, 21)),
        Case("pools 3-D", nn.Sequential(nn.AvgPool3d(2, 1), nn.MaxPool3d(2, 2, dilation=1)), (1, 7, 6, 7)),
        Case("adaptive pools", nn.Sequential(_c(1, 2, 2), nn.AdaptiveAvgPool2d((4, 3)),
                                             nn.AdaptiveMaxPool2d((3, 2))), (1, 13, 10)),
        Case("adaptive 3-D", nn.Sequential(nn.AdaptiveAvgPool3d((2, 3, 2)), nn.AdaptiveMaxPool3d(2)),
             (1, 6, 7, 5)),
        Case("pixel (un)shuffle", nn.Sequential(_c(1, 4, 3, padding=1), nn.PixelShuffle(2),
                                                nn.PixelUnshuffle(2), _c(4, 1, 1)), (1, 6, 8)),
        Case("upsample nearest/bilinear", nn.Sequential(nn.Upsample(scale_factor=2), _c(1, 1, 2),
                                                        nn.Upsample(scale_factor=2, mode="bilinear")),
             (1, 5, 6)),
        Case("upsample bicubic/nearest-exact",
             Fn(lambda x: F.interpolate(F.interpolate(x, scale_factor=2, mode="bicubic"),
                                        scale_factor=2, mode="nearest-exact")), (1, 5, 4)),
        Case("upsample align_corners", Fn(lambda x: F.interpolate(x, size=(9, 5), mode="bilinear",
                                                                   align_corners=True)), (1, 5, 3)),
        Case("upsample 1-D/3-D", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="linear")), (1, 7)),
        Case("upsample trilinear", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="trilinear")),
             (1, 3, 4, 3)),
        Case("upsample nearest 1-D", Fn(lambda x: F.interpolate(x, scale_factor=4)), (1, 5)),
        Case("pads", Fn(lambda x: F.pad(F.pad(F.pad(x, (1, 2, 0, 1)), (2, 1, 1, 2), mode="reflect"),
                                         (1, 1, 2, 0), mode="replicate")), (1, 6, 7)),
        Case("circular pad", nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"),
                                           nn.Conv2d(1, 1, 3, padding=2, padding_mode="circular")),
             (1, 7, 9)),
        Case("pads 1-D/3-D", Fn(lambda x: F.pad(F.pad(x, (2, 1), mode="reflect"), (1, 3),
                                                 mode="replicate")), (1, 9)),
        Case("pads 3-D", Fn(lambda x: F.pad(F.pad(x, (1, 1, 1, 0, 0, 1), mode="reflect"),
                                             (1, 0, 0, 1, 1, 1), mode="replicate")), (1, 4, 5, 4)),
        Case("views and permutes", Fn(lambda x, a: a(x.flatten(2).transpose(1, 2).reshape(x.shape[0], 6, 7, 2)
                                                      .permute(0, 3, 1, 2).unsqueeze(2).squeeze(2)),
                                      _c(2, 1, 3, padding=1)), (2, 6, 7)),
        Case("t and mm", Fn(lambda x, lin: lin(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
                             nn.Linear(3, 2)), (3, 5, 6)),
        Case("bmm over channels", Fn(lambda x: torch.matmul(x.flatten(2).transpose(1, 2),
                                                             torch.ones(3, 2, dtype=x.dtype)
                                                             ).transpose(1, 2).reshape(x.shape[0], 2, 5, 4)),
             (3, 5, 4)),
        Case("slices and selects", Fn(lambda x: torch.stack([x[:, 0, 1:-1:2], x[:, 1, :-2:2]], 1)
                                      + x[..., :1, :]), (2, 9, 10)),
        Case("split and cat back", Fn(lambda x: torch.cat(torch.split(x, [2, 3], dim=2)[::-1], dim=2)
                                      + torch.cat(torch.split(x, 2, dim=3), dim=3)), (2, 5, 6)),
        Case("cat along space", Fn(lambda x, a: torch.cat([a(x), x[:, :, 1:-1, 1:]], dim=3), _c(1, 1, 3)),
             (1, 7, 7)),
        Case("unbind+stack", Fn(lambda x: torch.stack(x.unbind(1), dim=1) * 2), (3, 4, 5)),
        Case("repeat/expand", Fn(lambda x: x.repeat(1, 1, 2, 1)[:, :, 1:] + x.expand(x.shape[0], 2, 4, 5)[:, :, :3]
                                 .repeat(1, 1, 3, 1)[:, :, :7]), (1, 4, 5)),
        # with the oracle's positive inputs none of these clamps is active (derivatives stay > 0)
        Case("pointwise", Fn(lambda x, p: F.hardtanh(torch.sigmoid(p(F.relu(x.clone().to(torch.float64)
                                                                              * 2 + 1)))
                                                     .clamp(min=0.1).clamp(max=5.0), -1, 4), nn.PReLU()),
             (1, 4, 4)),
        Case("masked_fill/expand", Fn(lambda x: x.masked_fill(torch.zeros(4, 5, dtype=torch.bool), 0.0)
                                      + x[:, :, :1].expand(x.shape[0], 2, 4, 5)), (2, 4, 5)),
        Case("dropout in train", Fn(lambda x: F.dropout(x, 0.5, training=True)), (1, 4, 4),
             twin=Fn(lambda x: x)),
        Case("copy_/fill_/zeros", Fn(lambda x: _write_into(x)), (1, 5, 6)),
        Case("reductions over channels", Fn(lambda x: x.mean(1, keepdim=True) + x.sum(1, keepdim=True)
                                            + x.amax(1, keepdim=True) + x.max(1, keepdim=True)[0]
                                            + x.var(1, keepdim=True) + x.std(1, keepdim=True)
                                            + x.logsumexp(1, keepdim=True) + x.norm(dim=1, keepdim=True)
                                            + x.prod(1, keepdim=True) + x.amin(1, keepdim=True)
                                            + x.min(1, keepdim=True)[0]
                                            + torch.linalg.vector_norm(x, dim=1, keepdim=True)),
             (3, 4, 5),
             twin=Fn(lambda x: x.sum(1, keepdim=True))),
        Case("integer reductions", Fn(lambda x: x.mean(1, keepdim=True)
                                      + x.argmax(1, keepdim=True) + x.argmin(1, keepdim=True)
                                      + (x > 1).any(1, keepdim=True) + (x > 1).all(1, keepdim=True)
                                      + torch.count_nonzero(x, 1).unsqueeze(1)
                                      + torch.aminmax(x, dim=1, keepdim=True)[0]
                                      + torch.nansum(x, 1, keepdim=True)
                                      + torch.var_mean(x, 1, keepdim=True)[0]
                                      + torch.std_mean(x, 1, keepdim=True)[1]),
             (3, 4, 5), twin=Fn(lambda x: x.sum(1, keepdim=True))),
        Case("max over space", Fn(lambda x: x.amax((2, 3), keepdim=True) * x), (1, 4, 5),
             twin=Fn(lambda x: x.sum((2, 3), keepdim=True) * x), is_global=True),
        Case("along channels", Fn(lambda x: torch.softmax(x, 1) + torch.log_softmax(x, 1)
                                  + x.cumsum(1) + x.cumprod(1) + x.logcumsumexp(1)
                                  + x.cummax(1)[0] + x.cummin(1)[0] + x.sort(1)[0]),
             (3, 4, 5), twin=Fn(lambda x: x.sum(1, keepdim=True).expand_as(x) + x)),
        Case("softmax over space", Fn(lambda x: torch.softmax(x, -1)), (1, 4, 5), is_global=True),
        Case("norms", nn.Sequential(nn.GroupNorm(1, 2), nn.BatchNorm2d(2).eval()), (2, 5, 4), is_global=True),
        Case("layer norm over channels", Fn(lambda x, ln: ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
                                            nn.LayerNorm(3)), (3, 4, 5)),
        Case("batch norm, batch statistics", nn.BatchNorm2d(2, track_running_stats=False), (2, 4, 5),
             is_global=True),
        Case("attention (math path)", Fn(lambda x: F.scaled_dot_product_attention(
            *(x.flatten(2).transpose(1, 2)[:, None],) * 3).transpose(-1, -2).reshape(x.shape[0], 2, 4, 5)),
             (2, 4, 5), is_global=True),
        Case("attention (fused CPU kernel)", Fn(lambda x: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            *(x.flatten(2).transpose(1, 2)[:, None],) * 3)[0].transpose(-1, -2).reshape(x.shape[0], 2, 4, 5)),
             (2, 4, 5), is_global=True, dtype=torch.float32),
        Case("linear on rows (addmm)", Fn(lambda x, lin: lin(x.permute(0, 2, 3, 1).reshape(-1, 3))
                                          .reshape(x.shape[0], 4, 5, 2).permute(0, 3, 1, 2), nn.Linear(3, 2)),
             (3, 4, 5)),
        Case("pooled channels-last (as_strided_)",
             Fn(lambda x, pool: pool(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)) * x,
                nn.AdaptiveAvgPool2d(1)), (2, 4, 5), is_global=True),
        Case("slice assignment", Fn(lambda x: _slice_assign(x)), (1, 6, 7)),
        Case("in-place views", Fn(lambda x: x.clone().unsqueeze_(0).squeeze_(0).transpose_(2, 3)
                                  .transpose(2, 3) + x.detach()), (1, 4, 5)),
        Case("as_strided", Fn(lambda x: x.as_strided((x.shape[0], 1, 3, 4), (20, 20, 5, 1), 1)), (1, 4, 5)),
        Case("antialiased resizes", Fn(lambda x: F.interpolate(x, size=(3, 4), mode="bilinear", antialias=True)
                                       + F.interpolate(x, size=(3, 4), mode="bicubic", antialias=True)),
             (1, 7, 9), dtype=torch.float32),
        Case("roll", Fn(lambda x: torch.roll(x, shifts=(1, -2), dims=(2, 3)) + x), (1, 5, 6)),
        Case("dtype round trip", Fn(lambda x: x.float().double() + torch.clamp_min(x, 0.1)
                                    + torch.clamp_max(x, 9.0)), (1, 4, 5)),
        Case("new tensors", Fn(lambda x: x * (x.new_ones(x.shape) + x.new_full(x.shape, 2.0)
                                              + x.new_empty(x.shape).fill_(1) + torch.full_like(x, 1)
                                              + torch.rand_like(x) + torch.randn_like(x).abs()
                                              + torch.randint_like(x, 3)
                                              + x.new_empty_strided(x.shape, x.stride()).fill_(1))),
             (1, 4, 5)),
        Case("random draws", Fn(lambda x: x * torch.empty_like(x).uniform_(1, 2)
                                * torch.empty_like(x).normal_() * torch.empty_like(x).exponential_()
                                * torch.empty_like(x).cauchy_() * torch.empty_like(x).log_normal_()
                                * torch.empty_like(x).geometric_(0.5) * torch.empty_like(x).random_(1, 5)
                                * (1 + torch.bernoulli(x.sigmoid())) * (1 + torch.bernoulli(x, 0.5))),
             (1, 4, 5), twin=Fn(lambda x: x * 2)),
        Case("resampling 3-D and 1-D", Fn(lambda x: F.interpolate(x, scale_factor=2)
                                          + F.interpolate(x, scale_factor=2, mode="nearest-exact")),
             (1, 3, 2, 4)),
        Case("nearest-exact 1-D", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact")),
             (1, 5)),
        Case("batched matmul with bias", Fn(lambda x: torch.baddbmm(x[:, 0], x[:, 0], x[:, 1])[:, None]
                                            + torch.addbmm(x[0, 0], torch.ones(3, 4, 4, dtype=x.dtype),
                                                           x[0])[None, None]
                                            + x[0, 0].clone().t_().t()[None, None]),
             (3, 4, 4), is_global=True),
        Case("unsafe splits", Fn(lambda x: torch.cat(x.unsafe_split(2, 2)[::-1], 2)
                                 + torch.cat(x.unsafe_split_with_sizes([1, 3], 2), 2)), (1, 4, 5)),
        Case("nn.Unfold columns, taps mixed, nn.Fold",
             Fn(lambda x: F.fold(_mix_taps(F.unfold(x, (3, 2), dilation=(1, 2), padding=1, stride=(2, 1)), 6),
                                 (7, 8), (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))), (1, 7, 8)),
        Case("Tensor.unfold windows", Fn(lambda x: x.unfold(3, 3, 2).unfold(2, 2, 3).sum((-1, -2))), (1, 9, 8)),
        Case("embedding of a label map", Fn(lambda x, e: e((x < -1).long()).sum(-1), nn.Embedding(3, 4)),
             (1, 5, 6), twin=Fn(lambda x: x * 2)),
        Case("products with zero clear, in place too",
             Fn(lambda x: x.clone().mul_(0).add_(F.pad(x, (1, 0))[..., :-1]) + x.clone().mul_(2) + x * 0),
             (1, 4, 5)),
        Case("whole rows of a flattened grid, and an empty slice",
             Fn(lambda x, c: c(torch.cat([x.flatten(2)[:, :, :0], x.flatten(2)[:, :, 6:18]], 2).unflatten(2, (2, 6))),
                nn.Conv2d(1, 1, 3, padding=1)), (1, 5, 6)),
        Case("masked_fill_ with a mask from the input", Fn(lambda x: x.clone().masked_fill_(x < -1, 0)),
             (1, 4, 5)),
        Case("_convolution", Fn(lambda x, w: torch._convolution(
            x, w.weight, None, [2, 1], [1, 0], [1, 2], False, [0, 0], 1, False, False, True, True),
            nn.Conv2d(1, 1, 3)), (1, 9, 8)),
    ]


def _mix_taps(cols, taps: int):
    """Every entry of an nn.Unfold column reads all of that column's taps."""
    n, ck, l = cols.shape
    grouped = cols.view(n, ck // taps, taps, l)
    return (grouped + grouped.sum(2, keepdim=True)).view(n, ck, l)


def _write_into(x):
    out = torch.zeros_like(x)
    out[:, :, 1:4].copy_(x[:, :, :3])
    fill = x.new_zeros(x.shape[0], 1, 5, 6)
    fill.fill_(2.0)
    return out + fill + torch.empty_like(x).zero_() + torch.ones_like(x)


def _slice_assign(x):
    y = x.clone()
    y[:, :, 1:3] = x[:, :, 3:5] * 2
    return y


CASES = _cases()


def _units(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every unit of a small output (corners, borders and interior alike)."""
    import itertools

    return list(itertools.product(*(range(n) for n in shape[2:])))


KNOWN_WRONG: dict[str, str] = {}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_WRONG[c.name],
                                                                           strict=True))
                                  if c.name in KNOWN_WRONG else c for c in CASES],
                         ids=[c.name for c in CASES])
def test_catalogue_matches_the_gradient_oracle(case: Case, one_thread) -> None:
    model = case.model.to(case.dtype).eval()
    rf = rflens.receptive_field(model, example_inputs=torch.empty((1, *case.shape), dtype=case.dtype))
    out = rf["output"]
    assert out.known, (out.unknown_ops, out.lost, rf.warnings)
    assert out.is_global == case.is_global
    if case.is_global:
        return  # the clipped box of a global row leaves the global path out (docs: "global")
    oracle = GradientOracle((case.twin or model).double(), case.shape)
    units = _units(oracle.output_shape("output"))
    assert tuple(out.grid) == tuple(oracle.output_shape("output")[2:])
    for unit, hull in zip(units, oracle.hulls("output", units)):
        assert out.box(unit, clip=True) == hull, (case.name, unit)


def _dispatched(case: Case) -> set[str]:
    """The op names capture recorded for the case (each went to its rule)."""
    model = case.model.to(case.dtype).eval()
    cap, _ = trace(model, (torch.empty((1, *case.shape), dtype=case.dtype, device="meta"),),
                   len(case.shape) - 1)
    return {node.name for node in cap.nodes}


# Registered names a CPU float program does not dispatch, each with the reason; each shares its rule
# function with names the catalogue does reach (checked below), and the device ones are checked
# for argument binding by test_device_only_overloads_bind_their_arguments_by_name.
NOT_ON_CPU = {
    **dict.fromkeys(["cudnn_convolution", "mkldnn_convolution", "convolution_overrideable",
                     "cudnn_batch_norm", "miopen_batch_norm", "mkldnn_max_pool2d", "mkldnn_max_pool3d",
                     "mkldnn_adaptive_avg_pool2d", "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
                     "_scaled_dot_product_fused_attention_overrideable",
                     "_scaled_dot_product_attention_math_for_mps", "_int_mm", "native_dropout"],
                    "dispatched by CUDA/MPS/ROCm/oneDNN builds only"),
    **dict.fromkeys(["quantized_max_pool1d", "quantized_max_pool2d", "quantized_max_pool3d"],
                    "quantized tensors only"),
    **dict.fromkeys(["_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                     "_native_batch_norm_legit_no_training", "view_copy", "permute_copy",
                     "transpose_copy", "t_copy", "slice_copy", "select_copy", "unsqueeze_copy",
                     "squeeze_copy", "expand_copy", "split_copy", "unbind_copy", "split_with_sizes_copy",
                     "_reshape_copy", "_reshape_alias", "as_strided_copy", "alias", "copy", "fill", "zero",
                     "lift_fresh", "lift_fresh_copy", "_conj", "_masked_scale"],
                    "names of exported / functionalized graphs (torch.export, AOTAutograd)"),
}


def test_registered_names_exist_and_are_dispatched() -> None:
    implicit_only, missing = [], []
    for name in RULES:
        if name in SCHEMAS or name.startswith("<"):
            continue  # capture's own pseudo-ops
        packet = getattr(torch.ops.aten, name, None)
        try:
            overloads = [getattr(packet, o) for o in packet.overloads()] if packet is not None else []
        except RuntimeError:
            overloads = []
        if not overloads:
            missing.append(name)
            continue
        if all(torch._C._dispatch_has_kernel_for_dispatch_key(o.name(), "CompositeImplicitAutograd")
               for o in overloads):
            implicit_only.append(name)
    assert not missing, f"registered names torch does not have: {missing}"
    assert not implicit_only, f"registered names a dispatch mode never sees: {implicit_only}"


def test_every_rule_is_exercised_by_an_oracle_case() -> None:
    seen: set[str] = set()
    for case in CASES:
        seen |= _dispatched(case)
    functions = {RULES[name] for name in seen if name in RULES}
    functions |= {RULES["<pointwise>"]} if any(n not in RULES for n in seen) else set()
    unexercised = sorted({fn.__name__ for name, fn in RULES.items()
                          if fn not in functions and name != "<pointwise>"})
    assert not unexercised, f"rules no catalogue case exercises: {unexercised}"
    unseen = sorted(name for name in RULES if name not in seen and not name.startswith("<")
                    and name not in NOT_ON_CPU)
    assert not unseen, f"registered names no catalogue case dispatches: {unseen}"


def _call(op, args: dict, shape_in, shape_out, n_spatial: int) -> list:
    """Apply the rule registered for ``op`` to an input of ``shape_in`` with ``args`` (by name)."""
    schema = tuple((a.name, a.default_value if a.has_default_value() else None)
                   for a in op._schema.arguments)
    x = Arg(shape_in, input_field(shape_in, n_spatial))
    values = [args.get(n, d) for n, d in schema]
    values[0] = x
    name = op._schema.name.split("::")[1]
    return RULES[name](OpCall(name, tuple(values), {}, [shape_out], schema=schema))


def _boxes(field, shape) -> list:
    from rflens.trf.engine import _axis_fields

    _, factors = _axis_fields(field, len(shape) - 2)
    return [(f.field.lo_table, f.field.hi_table, f.field.period, f.field.shift,
             f.lo.tolist(), f.hi.tolist()) for f in factors]


def test_device_only_overloads_bind_their_arguments_by_name() -> None:
    aten = torch.ops.aten
    w = Arg((4, 2, 3, 3), None)
    shape_in, shape_out = (1, 2, 11, 13), (1, 4, 5, 6)
    geometry = {"weight": w, "stride": [2, 2], "padding": [1, 0], "dilation": [1, 1], "groups": 1,
                "transposed": False, "output_padding": [0, 0], "bias": None}
    reference = _call(aten.convolution.default, geometry, shape_in, shape_out, 2)[0]
    for op in (aten.cudnn_convolution.default, aten.mkldnn_convolution.default,
               aten.convolution_overrideable.default):
        got = _call(op, geometry, shape_in, shape_out, 2)[0]
        assert _boxes(got, shape_out) == _boxes(reference, shape_out), op
    pool = {"kernel_size": [3, 2], "stride": [2, 2], "padding": [1, 0], "dilation": [1, 1]}
    ref = _call(aten.max_pool2d_with_indices.default, pool, shape_in, (1, 2, 6, 6), 2)[0]
    got = _call(aten.mkldnn_max_pool2d.default, pool, shape_in, (1, 2, 6, 6), 2)[0]
    assert _boxes(got, (1, 2, 6, 6)) == _boxes(ref, (1, 2, 6, 6))
    bn = {"training": False}
    for op in (aten.cudnn_batch_norm.default, aten.miopen_batch_norm.default):
        got = _call(op, bn, shape_in, shape_in, 2)[0]
        assert not got.is_global and _boxes(got, shape_in) == _boxes(input_field(shape_in, 2), shape_in)
