"""Where models come from: ``torchvision:NAME[@WEIGHTS]``, ``timm:NAME[@TAG]``, ``file.py:factory``,
layer spec files and ONNX files (:mod:`rflens.sources.onnx`); trained weights from local caches or
files (:mod:`rflens.sources.weights`); and ``--input`` shapes. Knows nothing of receptive fields."""

from rflens.sources.models import check_input_shape, default_input_shape, load_model, parse_input

__all__ = ["load_model", "parse_input", "default_input_shape", "check_input_shape"]
