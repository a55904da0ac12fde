"""Filter rarefaction: one network that gives the dense output of a strided one in a single pass."""

from __future__ import annotations

import copy
from typing import Sequence

from torch import Tensor, nn

from rflens.dense.geometry import DenseGeometry, analyze
from rflens.dense.modules import (CONV, CONV_T, MAXPOOL, PAD, Ints, PadThen, RarefiedAvgPool,
                                  RarefiedMaxPool, conv_pads, pad_pairs, stride_of, to_f_pad, tup)


def _rarefied_conv(m: nn.Module, f: Ints, d: int) -> nn.Module:
    dil = tup(m.dilation, d)
    pairs = [(l * fi, r * fi) for (l, r), fi in zip(conv_pads(m, d), f)]
    m.stride = (1,) * d
    m.dilation = tuple(di * fi for di, fi in zip(dil, f))
    if all(l == r for l, r in pairs):
        m.padding = tuple(l for l, _ in pairs)
        m._reversed_padding_repeated_twice = [p for p in reversed(m.padding) for _ in range(2)]
        return m
    mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
    m.padding, m.padding_mode = (0,) * d, "zeros"
    m._reversed_padding_repeated_twice = [0] * (2 * d)
    return PadThen(pairs, m, mode=mode)


def _rarefied_conv_t(m: nn.Module, f: Ints, d: int) -> nn.Module:
    m.dilation = tuple(di * fi for di, fi in zip(tup(m.dilation, d), f))
    m.padding = tuple(p * fi for p, fi in zip(tup(m.padding, d), f))
    return m


def _rarefied_pool(m: nn.Module, f: Ints, d: int) -> nn.Module:
    k = tup(m.kernel_size, d)
    pads = [p * fi for p, fi in zip(tup(m.padding, d), f)]
    if isinstance(m, MAXPOOL):
        dil = tuple(di * fi for di, fi in zip(tup(m.dilation, d), f))
        return RarefiedMaxPool(k, dil, [(p, p) for p in pads])
    return RarefiedAvgPool(k, f, tuple(pads), bool(m.count_include_pad),
                           getattr(m, "divisor_override", None))


def _rarefied(m: nn.Module, f: Ints, d: int) -> nn.Module:
    """The rarefied replacement of one module that runs at accumulated stride ``f``."""
    stride = stride_of(m, d)
    if set(f) == {1} and set(stride) == {1}:
        return m  # nothing strided before or in it: unchanged
    if isinstance(m, PAD):
        pairs = [(l * fi, r * fi) for (l, r), fi in zip(pad_pairs(m.padding, d), f)]
        m.padding = tuple(to_f_pad(pairs)) + tuple(m.padding[2 * d:])
        return m
    if isinstance(m, CONV):
        return _rarefied_conv(m, f, d)
    if isinstance(m, CONV_T):
        return _rarefied_conv_t(m, f, d)
    return _rarefied_pool(m, f, d)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _carry_hooks(old: nn.Module, new: nn.Module) -> None:
    """Give a replacement module the forward hooks of the one it replaces (e.g. truncation's)."""
    if new is old or any(m is old for m in new.modules()):
        return  # same module, or a wrapper around it: its hooks still fire
    for attr in _HOOK_DICTS:
        if hasattr(old, attr):
            getattr(new, attr).update(getattr(old, attr))


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    _carry_hooks(root.get_submodule(name), new)
    if not name:
        return new
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
    return root


def rarefy_with_geometry(model: nn.Module, example: Tensor | Sequence[int] | None) \
        -> tuple[nn.Module, DenseGeometry]:
    geometry = analyze(model, example)
    d = len(geometry.jump)
    out = copy.deepcopy(model)
    for name, f in geometry.layers.items():
        out = _replace(out, name, _rarefied(out.get_submodule(name), f, d))
    return out, geometry


def rarefy(model: nn.Module, example: Tensor | Sequence[int] | None = None) -> nn.Module:
    """A new model giving the dense output of ``model`` in one pass (filter rarefaction).

    ``model`` is deep-copied, never modified. Each Conv/ConvTranspose/pooling/padding module that
    runs on a tensor at accumulated stride ``F`` (per axis: the product of the strides of the
    rewritten layers between the input and it, found by running a copy on ``example``, see
    :func:`analyze`) becomes, with its own kernel ``k``, stride ``s``, dilation ``d`` and padding
    ``p``: stride 1, dilation ``d*F``, padding ``p*F`` (both sides; ``'same'`` resolved first,
    ``ceil_mode`` dropped), and its output is at stride ``F*s``. Consequently:

    * ``MaxPoolNd`` becomes :class:`RarefiedMaxPool` (explicit ``-inf`` padding ``p*F``);
    * ``AvgPoolNd`` (no dilation in PyTorch) becomes :class:`RarefiedAvgPool`, which keeps
      ``count_include_pad`` and ``divisor_override``;
    * a conv whose rarefied padding is asymmetric is wrapped in :class:`PadThen`;
    * padding modules pad ``p*F``; modules at ``F = 1`` with stride 1 are left as they are.

    Branches are handled per tensor: in a residual block with a stride-2 downsample both branches
    lose their stride and meet again at the same ``F``. Output index ``n`` of the result is the dense
    index of :func:`shift_and_stitch`; they agree exactly on :func:`interior`.
    Raises :class:`RflensError` naming the module for layers with no dense equivalent (adaptive
    pooling, Linear, Flatten, norms over space, upsampling, functional strided ops).
    """
    return rarefy_with_geometry(model, example)[0]
