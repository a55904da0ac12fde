"""Probing the original ONNX graph with onnxruntime, independent of the PyTorch conversion.

:func:`run_values` evaluates any intermediate values of the graph. :func:`probe_hulls` measures,
for every unit of the requested values, the per-axis hull of the input pixels it depends on, by
differences: for each position ``i`` of each spatial axis, the whole hyperplane ``i`` of the input
(every channel, every position on the other axes) gets random noise added, and a unit depends on
that hyperplane when its output changes at all (any channel, exact float comparison). The hull
along the axis runs from the first to the last such ``i``. Each run has batch 1, onnxruntime
runs single-threaded with graph optimisations off, so a unit that does not depend on the changed
pixels is recomputed bit for bit. ``rounds`` independent perturbations are OR-ed, which makes a
missed dependency (a change cancelled inside the network) improbable.

A difference shows only where the network passes it on: a max pool ignores a changed pixel that
stays below the window's maximum, a ReLU one that stays negative. As the gradient-support probe
does for PyTorch models, :func:`linearize` therefore replaces (in a copy of the graph, names
kept) activations with flat or saturating parts by the identity, max-type pooling by averaging
over the same windows, ``Max``/``Min`` of tensors by their sum. The graph's geometry (which units
read which) is unchanged. Used by ``rflens trf --verify`` on ONNX models and by the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rflens.errors import RflensError


_TO_IDENTITY = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
                "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Clip",
                "Sign", "Floor", "Ceil", "Round", "Shrink"}
_TO_AVERAGE = {"GlobalMaxPool": "GlobalAveragePool", "ReduceMax": "ReduceMean", "ReduceMin": "ReduceMean",
               "Max": "Sum", "Min": "Sum"}


def linearize(model) -> None:
    """Make every dependency of ``model`` (an ``onnx.ModelProto``, changed in place) show as a
    difference: see the module docstring. Node and value names are kept."""
    from onnx import helper

    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _TO_IDENTITY:
            first = node.input[0]
            del node.input[:]
            node.input.append(first)
            del node.attribute[:]
            node.op_type = "Identity"
        elif node.op_type in _TO_AVERAGE:
            node.op_type = _TO_AVERAGE[node.op_type]
        elif node.op_type == "MaxPool" and len([o for o in node.output if o]) == 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if any(d != 1 for d in attrs.get("dilations", [])):
                continue  # average pooling has no dilations before opset 19: keep the max
            kept = [a for a in node.attribute if a.name not in ("storage_order", "dilations")]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("count_include_pad", 1))
            node.op_type = "AveragePool"


def _session(path: str, values: Sequence[str], linear: bool = False):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise RflensError(f"probing an ONNX model needs onnx and onnxruntime ({exc.name} is missing); "
                          "run pip install rflens[onnx]") from exc
    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    known = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    for name in values:
        if name not in known:
            raise RflensError(f"{Path(path).name} has no value '{name}'")
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    if linear:
        linearize(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RflensError(f"onnxruntime cannot load {Path(path).name}: {' '.join(str(exc).split())[:240]}") from exc


def available(path: str, values: Sequence[str]) -> list[str]:
    """The names among ``values`` that the graph at ``path`` computes (a node output or its input);
    values the opset conversion created are not in the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    known = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    return [v for v in dict.fromkeys(values) if v in known]


def _input_name(session) -> str:
    inputs = session.get_inputs()
    return inputs[0].name


def run_values(path: str, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
    """The named values of the graph at ``path`` for input ``x`` (float32, with batch axis)."""
    session = _session(path, values)
    outs = session.run(list(values), {_input_name(session): np.ascontiguousarray(x, dtype=np.float32)})
    return dict(zip(values, outs))


def probe_hulls(path: str, values: Sequence[str], input_shape: Sequence[int], rounds: int = 2,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Per value ``(1, C, *S)``: an int array ``(*S, n, 2)`` holding, for every unit, the first
    and last input position along each spatial axis it depends on (``-1, -1``: none). ``n`` is the
    number of spatial axes of ``input_shape`` = ``(C, *spatial)``; values without that many
    spatial axes after the channel axis are left out."""
    shape = tuple(int(s) for s in input_shape)
    n = len(shape) - 1
    values = available(path, values)
    session = _session(path, values, linear=True)
    feed = _input_name(session)
    rng = np.random.default_rng(seed)
    base_x = rng.standard_normal((1, *shape)).astype(np.float32)
    base = dict(zip(values, session.run(list(values), {feed: base_x})))
    kept = [v for v in values if base[v].ndim == n + 2]
    lo = {v: np.full(base[v].shape[2:] + (n,), -1, dtype=np.int64) for v in kept}
    hi = {v: np.full(base[v].shape[2:] + (n,), -1, dtype=np.int64) for v in kept}
    for axis in range(n):
        for i in range(shape[1 + axis]):
            index = (slice(None), slice(None)) + tuple(i if a == axis else slice(None) for a in range(n))
            changed = {v: np.zeros(base[v].shape[2:], dtype=bool) for v in kept}
            for _ in range(rounds):
                x = base_x.copy()
                x[index] += rng.standard_normal(x[index].shape).astype(np.float32)
                outs = session.run(kept, {feed: x})
                for v, out in zip(kept, outs):
                    changed[v] |= (out != base[v]).any(axis=(0, 1))
            for v in kept:
                mask = changed[v]
                first = lo[v][..., axis]
                first[(first < 0) & mask] = i
                hi[v][..., axis][mask] = i
    return {v: np.stack([lo[v], hi[v]], axis=-1) for v in kept}


def hull_of(hulls: np.ndarray, unit: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """One unit's hull from :func:`probe_hulls` as ``((lo, hi), ...)``; None when it depends on
    no input pixel."""
    entry = hulls[tuple(unit)]
    if (entry < 0).any():
        return None
    return tuple((int(a), int(b)) for a, b in entry)


__all__ = ["run_values", "probe_hulls", "hull_of"]
