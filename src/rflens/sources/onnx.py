"""ONNX files as a model source: ``rflens trf model.onnx`` and ``rflens.load_model("model.onnx")``.

The file is read and checked with ``onnx`` (``onnx.checker``), its default-domain opset brought
to :data:`OPSET` with ``onnx.version_converter`` when it differs, constants folded into
initializers (``Constant`` nodes, ``Identity`` of an initializer), and the graph converted to a
``torch.fx.GraphModule`` with one submodule per ONNX node. onnx2torch converts most ops;
:mod:`rflens.sources.onnx_ops` and :mod:`rflens.sources.onnx_resize` convert those whose geometry
onnx2torch gets wrong or refuses (padding modes, transposed-convolution output shapes, Resize).

Row names: each node's submodule is named after the node (its first output's name when the node
has none), with every ``.`` replaced by ``_`` (PyTorch forbids dots in module names) and
``~2``, ``~3``, ... appended to repeated names (and to ``output``, the model's own row, and names
of ``nn.Module`` attributes such as ``type``): ``/layer1/layer1.0/conv1/Conv`` becomes the row
``/layer1/layer1_0/conv1/Conv``. ``OnnxSource.rows`` maps every row to the ONNX node and output.

The input shape comes from the graph's (single) input when its channel and spatial sizes are
static; ``--input`` gives the dynamic ones. The channel count must always agree; static spatial
sizes must agree too when some node holds a size as a constant (a ``Reshape`` to a feature map, a
``Resize`` to fixed ``sizes``, a constant ``Slice``, ...: :func:`size_baking_node`), since the graph
would compute something else at another size; otherwise they are only the default. The batch axis
is free (a graph that fixes it may still fail on other batch sizes, loudly).
"""

from __future__ import annotations

import inspect
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from rflens.errors import RflensError
from rflens.sources.onnx_prepare import OPSET, check_ops_exist, default_opset, fold_constants, to_opset

_EXTRA = "pip install rflens[onnx]"


@dataclass(frozen=True)
class OnnxSource:
    """What an ONNX-converted module remembers of its file (``model.rflens_onnx``).

    ``rows``: row name -> ``(ONNX node name, op type, output value names)``; ``input_name`` and
    ``input_dims`` (``(C, *spatial)``, None for a dynamic size) describe the graph input;
    ``accepted`` is what the module runs on (None: any size; static spatial sizes become free when
    no node bakes sizes in, see :func:`size_baking_node`), ``fixed_by`` the first node that does;
    ``opset`` is the file's own default-domain opset."""

    path: str
    input_name: str
    input_dims: tuple[int | None, ...]
    batch: int | None
    opset: int
    producer: str
    rows: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    accepted: tuple[int | None, ...] = ()
    fixed_by: str | None = None

    def value_of(self, row: str) -> str | None:
        """The ONNX value (tensor name) a row stands for: ``name`` or ``name[i]`` for output i of
        a node, ``output`` / ``output[i]`` for the graph's outputs; None for other rows."""
        m = re.fullmatch(r"(.*?)(?:\[(\d+)\])?", row)
        base, index = m.group(1), int(m.group(2) or 0)
        if base == "output" and base not in self.rows:
            return self.outputs[index] if index < len(self.outputs) else None
        entry = self.rows.get(base)
        if entry is None or index >= len(entry[2]):
            return None
        return entry[2][index] or None


def import_onnx() -> Any:
    try:
        import onnx
        import onnx2torch  # noqa: F401
    except ImportError as exc:
        raise RflensError(f"ONNX models need the onnx and onnx2torch packages ({exc.name} is "
                          f"missing); run {_EXTRA}") from exc
    return onnx


def load_onnx(path: str) -> tuple[nn.Module, dict]:
    """Read, check, convert ``path``; returns ``(module, metadata)`` like ``load_model``."""
    onnx = import_onnx()
    model = read(path, onnx)
    source_opset = default_opset(model)
    model = to_opset(model, path, source_opset, onnx)
    fold_constants(model, onnx)
    module, source = convert(model, path, source_opset)
    shape = source.input_dims if all(d is not None for d in source.input_dims) else None
    meta = {"source": "onnx", "name": Path(path).name, "input_shape": shape,
            "input_dims": source.accepted, "weights": f"the initializers stored in {Path(path).name}",
            "onnx": {"path": str(Path(path).resolve()), "opset": source_opset, "converted_opset": OPSET,
                     "producer": source.producer, "input": source.input_name, "nodes": len(source.rows)}}
    return module, meta


def declared_input_shape(path: str) -> tuple[int, ...]:
    """The graph input's ``(C, *spatial)`` when all are static; else a one-line error saying which
    sizes ``--input`` must give."""
    onnx = import_onnx()
    if not Path(path).is_file():
        raise RflensError(f"{path}: ONNX file not found; check the path (cwd is {Path.cwd()})")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise RflensError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                          f"{_one_line(exc)}); export it again or check the file") from exc
    name, dims, _ = _graph_input(model, path)
    if any(d is None for d in dims):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        example = "x".join(str(d) if d is not None else "224" for d in dims)
        raise RflensError(f"{path}: input '{name}' has dynamic sizes ({shown}, C x spatial); give them "
                          f"with --input, e.g. --input {example}")
    return tuple(int(d) for d in dims)


def read(path: str, onnx: Any) -> Any:
    """Load and check the file; every failure is one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise RflensError(f"{path}: ONNX file not found; check the path (cwd is {Path.cwd()})")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise RflensError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                          f"{_one_line(exc)}); export it again or check the file") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise RflensError(f"{path} is not an ONNX model (no graph nodes); check the file")
    check_ops_exist(model, default_opset(model), path, onnx)
    try:
        onnx.checker.check_model(model if model.ByteSize() < 2**31 - 1 else str(p))
    except Exception as exc:
        raise RflensError(f"{path} fails the ONNX checker: {_one_line(exc)}; export it again") from exc
    return model


def row_names(nodes: list) -> list[str]:
    """One unique PyTorch-legal module name per node (see the module docstring)."""
    names, seen = [], set()
    for node in nodes:
        base = (node.name or (node.output[0] if node.output else node.op_type)).replace(".", "_") or "node"
        name, k = base, 1
        while name in seen or name in ("output", "_onnx_constants") or hasattr(fx.GraphModule, name):
            k += 1
            name = f"{base}~{k}"
        seen.add(name)
        names.append(name)
    return names


def _graph_input(model: Any, path: str) -> tuple[str, tuple[int | None, ...], int | None]:
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise RflensError(f"{path} has {len(inputs)} graph inputs ({names}); rflens analyses models "
                          "with one input tensor")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    if not tensor.HasField("shape") or len(dims) < 3:
        raise RflensError(f"{path}: input '{inputs[0].name}' has rank {len(dims) if tensor.HasField('shape') else '?'}; "
                          "rflens needs (batch, channels, *spatial) with 1 to 3 spatial axes")
    if len(dims) > 5:
        raise RflensError(f"{path}: input '{inputs[0].name}' has {len(dims) - 2} spatial axes; rflens "
                          "handles 1 to 3")
    return inputs[0].name, tuple(dims[1:]), dims[0]


class _Constant(nn.Module):
    """An integer constant of the graph (a shape, axes, indices): kept as a real tensor, not a
    buffer, so that a run on meta tensors can still read it; moved with the module."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self) -> torch.Tensor:
        return self.value

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        self.value = fn(self.value)
        return super()._apply(fn, recurse)


def check_input(x: torch.Tensor, dims: tuple, label: str, fixed_by: str | None) -> torch.Tensor:
    """Refuse an input whose channel or (for a graph that bakes sizes in) spatial sizes differ from
    the graph's static ones."""
    got = tuple(x.shape[1:])
    if len(got) != len(dims) or any(d is not None and d != g for d, g in zip(dims, got)):
        want = "x".join("?" if d is None else str(d) for d in dims)
        why = f" ({fixed_by} fixes the sizes)" if fixed_by else ""
        raise RflensError(f"{label} takes inputs of shape {want} (C x spatial, ? = any size){why}; got "
                          f"{'x'.join(map(str, got))}; give a matching --input, or export the model "
                          "with dynamic axes")
    return x


def size_baking_node(model: Any) -> str | None:
    """The first node that holds a spatial size as a constant, as ``"<op> node '<name>'"``: a
    ``Reshape``/``Expand``/``Tile``/``ConstantOfShape`` to a constant shape of rank 3 or more, a
    ``Resize`` to constant ``sizes``, a ``Slice``/``Split`` with constants along an axis after the
    channel axis of a tensor of rank 3 or more, a constant ``Range``. None when the graph computes
    at any spatial size the way it does at its declared one (the sizes it needs come from
    ``Shape``, scales, or flattening to ``(batch, features)``). ``model`` has inferred shapes."""
    import onnx

    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
             if v.type.tensor_type.HasField("shape")}

    def const(node, k):
        return init.get(node.input[k]) if len(node.input) > k and node.input[k] else None

    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        op, baked = node.op_type, False
        if op in ("Reshape", "Expand", "Tile", "ConstantOfShape"):
            shape = const(node, 0 if op == "ConstantOfShape" else 1)
            baked = shape is not None and shape.size >= 3
        elif op == "Resize":
            baked = const(node, 3) is not None and const(node, 3).size > 0
        elif op == "Range":
            baked = all(const(node, k) is not None for k in range(3))
        elif op in ("Slice", "Split"):
            rank = ranks.get(node.input[0], 4)
            if op == "Slice":
                starts = const(node, 1)
                if starts is None:
                    continue  # computed from Shape: follows the input
                axes = const(node, 3)
                axes = list(range(starts.size)) if axes is None else axes.reshape(-1).tolist()
            else:
                if const(node, 1) is None:
                    continue
                axes = [next((a.i for a in node.attribute if a.name == "axis"), 0)]
            baked = rank >= 3 and any(a % rank >= 2 for a in axes)
        if baked:
            return f"{op} node '{node.name or node.output[0]}'"
    return None


def convert(model: Any, path: str, source_opset: int) -> tuple[fx.GraphModule, OnnxSource]:
    """Build the GraphModule: one submodule per ONNX node, named by :func:`row_names`."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    from rflens.sources.onnx_ops import CONVERTERS, ConversionError
    from rflens.sources.onnx_resize import CONVERTERS as RESIZE

    label = Path(path).name
    input_name, dims, batch = _graph_input(model, path)
    try:
        model = safe_shape_inference(model)
    except Exception as exc:
        raise RflensError(f"{path}: ONNX shape inference failed ({_one_line(exc)}); check the file") from exc
    init = {t.name for t in model.graph.initializer}
    kept_inputs = [i for i in model.graph.input if i.name not in init]
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    names = row_names(list(model.graph.node))
    originals = [(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]
    for node, name in zip(model.graph.node, names):
        node.name = name
    graph = OnnxGraph(model.graph)
    ours = {**CONVERTERS, **RESIZE}
    fx_graph = fx.Graph()
    root = nn.Module()
    constants = nn.Module()
    root.add_module("_onnx_constants", constants)
    values: dict[str, fx.Node] = {}
    x = fx_graph.placeholder("input")
    fixed_by = size_baking_node(model)
    accepted = dims if fixed_by else dims[:1] + (None,) * (len(dims) - 1)
    values[input_name] = fx_graph.call_function(check_input, (x, accepted, label, fixed_by))

    def value(name: str) -> Any:
        if not name:
            return None
        if name in values:
            return values[name]
        if name not in graph.initializers:
            raise RflensError(f"{path}: value '{name}' is used before it is computed; the graph is not "
                              "in topological order or is missing a node")
        tensor = graph.initializers[name].to_torch()
        key = f"c{len(constants._modules) + len(constants._buffers)}"
        if tensor.is_floating_point() or tensor.is_complex():
            constants.register_buffer(key, tensor)
            values[name] = fx_graph.get_attr(f"_onnx_constants.{key}")
        else:
            constants.add_module(key, _Constant(tensor))
            values[name] = fx_graph.call_module(f"_onnx_constants.{key}")
        return values[name]

    rows = {}
    for (orig, op, outs), node in zip(originals, graph.nodes.values()):
        name = node.name
        where = f"ONNX op {op} (node '{orig or outs[0]}')"
        if node.domain not in ("", "ai.onnx"):
            raise RflensError(f"{path}: {where} is in domain '{node.domain}', which rflens cannot "
                              "convert; export the model without custom or runtime-specific ops")
        try:
            if op in ours:
                module, inputs = ours[op](node, graph)
            else:
                converter = get_converter(operation_type=op, version=OPSET, domain=node.domain)
                result = converter(node, graph)
                module, inputs = result.torch_module, tuple(result.onnx_mapping.inputs)
        except ConversionError as exc:
            raise RflensError(f"{path}: {where} cannot be converted: {exc}") from exc
        except NotImplementedError as exc:
            what = "has no PyTorch conversion" if "not implemented (" in str(exc) else \
                f"cannot be converted ({_one_line(exc)})"
            raise RflensError(f"{path}: {where} {what}; rflens cannot analyse this graph") from exc
        except RflensError:
            raise
        except Exception as exc:
            raise RflensError(f"{path}: {where} cannot be converted ({type(exc).__name__}: "
                              f"{_one_line(exc)})") from exc
        root.add_module(name, module)
        args = [value(v) for v in inputs]
        kwargs = {}
        if None in args:  # skipped optional inputs: pass the rest by keyword, as onnx2torch does
            params = list(inspect.signature(module.forward).parameters)
            first = args.index(None)
            kwargs = {params[i]: a for i, a in enumerate(args) if i >= first and a is not None}
            args = args[:first]
        call = fx_graph.call_module(name, tuple(args), kwargs)
        real = list(node.output_values)
        while len(real) > 1 and not real[-1]:  # unused optional outputs (MaxPool's Indices, ...)
            real.pop()
        if len(real) == 1:
            values[real[0]] = call
        else:
            for i, out in enumerate(real):
                if out:
                    values[out] = fx_graph.call_function(operator.getitem, (call, i))
        rows[name] = (orig, op, outs)
    outputs = [value(o.name) for o in model.graph.output]
    fx_graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    module = fx.GraphModule(root, fx_graph, class_name="OnnxModel")
    source = OnnxSource(str(Path(path).resolve()), input_name, dims, batch, source_opset,
                        f"{model.producer_name} {model.producer_version}".strip(), rows,
                        tuple(o.name for o in model.graph.output), accepted, fixed_by)
    module.rflens_onnx = source
    module.eval()
    return module, source


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 240 else text[:237] + "..."


def is_onnx_path(text: str) -> bool:
    return Path(text).suffix.lower() == ".onnx"


__all__ = ["OPSET", "OnnxSource", "load_onnx", "is_onnx_path", "check_input"]
