"""Where models come from: ``torchvision:NAME``, ``timm:NAME``, ``file.py:factory``, layer spec
files; and ``--input`` shapes. Knows nothing of receptive fields."""

from rflens.sources.models import default_input_shape, load_model, parse_input

__all__ = ["load_model", "parse_input", "default_input_shape"]
