"""Bringing an ONNX graph into the form rflens converts: the default-domain opset converted to
:data:`OPSET` with ``onnx.version_converter`` (with two repairs: attributes a downgrade leaves
behind, and the coordinates of Upsample/Resize-10, which the upgrade to Resize-11 forgets), and
constants folded into initializers."""

from __future__ import annotations

from typing import Any

import numpy as np

from rflens.errors import RflensError

OPSET = 17  # the opset onnx2torch's converters cover; graphs are converted to it


def default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise RflensError("the ONNX model imports no default-domain (ai.onnx) opset; rflens reads "
                      "standard ONNX graphs only")


def check_ops_exist(model: Any, version: int, path: str, onnx: Any) -> None:
    """Refuse ops that have no form in :data:`OPSET` (removed, experimental, or newer), naming the
    op and node; called before the checker, which prints a warning for experimental ops."""
    if version == OPSET:
        return  # unknown ops: the checker names them
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or (version > OPSET and not onnx.defs.has(node.op_type, version, "")):
            continue
        if not onnx.defs.has(node.op_type, OPSET, ""):
            where = f"{path}: ONNX op {node.op_type} (node '{node.name or node.output[0]}')"
            if version > OPSET:
                raise RflensError(f"{where} is newer than opset {OPSET}, the opset rflens converts "
                                  "graphs to; it cannot be converted (re-export without it)")
            raise RflensError(f"{where} of opset {version} has no form in opset {OPSET} (removed, "
                              "experimental or unknown), so the graph cannot be upgraded; re-export "
                              f"the model with opset_version={OPSET}")


def to_opset(model: Any, path: str, version: int, onnx: Any) -> Any:
    """The model at :data:`OPSET` (``onnx.version_converter``), or a one-line error."""
    if version == OPSET:
        return model
    old_resizes = _old_resize_modes(model, version, path, onnx) if version < 11 else {}
    try:
        converted = onnx.version_converter.convert_version(model, OPSET)
        if version > OPSET:
            _drop_newer_attributes(converted, version, path, onnx)
        for node in converted.graph.node:
            if node.op_type == "Resize" and node.output[0] in old_resizes:
                _set_attributes(node, old_resizes[node.output[0]], onnx)
        onnx.checker.check_model(converted)
    except RflensError:
        raise
    except Exception as exc:
        raise RflensError(f"{path}: opset {version} cannot be converted to opset {OPSET} "
                          f"({_one_line(exc)}); re-export the model with opset_version={OPSET}") from exc
    return converted


def _old_resize_modes(model: Any, version: int, path: str, onnx: Any) -> dict[str, dict]:
    """Upsample (opsets 7-9) and Resize-10 read ``x / scale`` (asymmetric coordinates) and, for
    nearest, floor when upsampling and ceil when downsampling (onnxruntime's reading). The version
    converter's Resize-11 omits these attributes (it would mean half_pixel), so they are set on the
    upgraded node, found by its output name."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Upsample", "Resize") or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"nearest")
        wanted = {"coordinate_transformation_mode": "asymmetric"}
        if (mode.decode() if isinstance(mode, bytes) else mode) == "nearest":
            scales = attrs.get("scales")
            if scales is None and len(node.input) > 1:
                name = node.input[1]
                scales = inits.get(name, consts.get(name))
            spatial = [float(v) for v in np.asarray(scales).reshape(-1)[2:]] if scales is not None else None
            if spatial is not None and all(v >= 1 for v in spatial):
                wanted["nearest_mode"] = "floor"
            elif spatial is not None and all(v <= 1 for v in spatial):
                wanted["nearest_mode"] = "ceil"
            else:
                raise RflensError(f"{path}: {node.op_type} node '{node.name or node.output[0]}' of opset "
                                  f"{version} rounds nearest sources differently on each axis (or its "
                                  "scales are computed in the graph); re-export the model with opset 11 "
                                  "or later")
        out[node.output[0]] = wanted
    return out


def _set_attributes(node: Any, values: dict, onnx: Any) -> None:
    kept = [a for a in node.attribute if a.name not in values]
    del node.attribute[:]
    node.attribute.extend(kept + [onnx.helper.make_attribute(k, v) for k, v in values.items()])


def _drop_newer_attributes(model: Any, version: int, path: str, onnx: Any) -> None:
    """Remove attributes a node's op gained after :data:`OPSET` that ``version_converter``'s
    downgrade leaves behind (e.g. ReduceMean-18's ``noop_with_empty_axes``) when they hold their
    default value; refuse when they do not (their meaning cannot be kept)."""
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            allowed = onnx.defs.get_schema(node.op_type, OPSET, "").attributes
            newer = onnx.defs.get_schema(node.op_type, version, "").attributes
        except Exception:  # op unknown at OPSET: the converter reports it by name later
            continue
        for attr in list(node.attribute):
            if attr.name in allowed:
                continue
            spec = newer.get(attr.name)
            default = spec.default_value if spec is not None else None
            if default is not None and default.type and \
                    onnx.helper.get_attribute_value(default) == onnx.helper.get_attribute_value(attr):
                node.attribute.remove(attr)
            else:
                raise RflensError(f"{path}: ONNX op {node.op_type} (node '{node.name or node.output[0]}') "
                                  f"uses attribute {attr.name}, which opset {OPSET} does not have; "
                                  f"re-export the model with opset_version={OPSET}")


def fold_constants(model: Any, onnx: Any) -> None:
    """Make ``Constant`` nodes and ``Identity`` nodes of constants into initializers (in place), so
    that converters see weights, shapes and scales as stored values."""
    graph = model.graph
    known = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        tensor = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            attr = node.attribute[0]
            value = onnx.helper.get_attribute_value(attr)
            if attr.name == "value":
                tensor = value
            elif attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                dtype = np.float32 if "float" in attr.name else np.int64
                tensor = onnx.numpy_helper.from_array(np.array(value, dtype=dtype))
        elif node.op_type == "Identity" and node.input[0] in known and node.output[0] not in outputs:
            tensor = known[node.input[0]]
        if tensor is None:
            kept.append(node)
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = node.output[0]
        graph.initializer.append(copy)
        known[copy.name] = copy
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 240 else text[:237] + "..."
