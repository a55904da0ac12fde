"""Dense prediction from a strided network: shift-and-stitch and filter rarefaction.

A network whose total stride (jump) on an axis is ``J`` gives one output per ``J`` input pixels. Two
ways to get an output at *every* pixel (docs/receptive-fields.md, "Dense prediction"):

* :func:`shift_and_stitch` (OverFeat, FCN) runs the network ``prod(J)`` times on shifted inputs and
  interleaves the outputs;
* :func:`rarefy` builds a new network with every stride set to 1 and every later kernel (convolution
  and pooling window) dilated by the product of the strides removed before it, which gives the same
  dense output in one pass.

Conventions (per spatial axis; inputs are batched ``(B, C, *spatial)`` with 1, 2 or 3 spatial axes)
--------------------------------------------------------------------------------------------------
* ``N`` input length, ``J`` total stride, shifts ``s = 0 .. J-1`` (``prod(J)`` shifted passes in all).
* Shift ``s`` means the network sees the input *starting at offset s*: the input is cropped to
  ``x[..., s:]`` and zero-padded **at the far end** back to length ``N``, so every shift gives the same
  number ``M`` of outputs. Output ``i`` of shift ``s`` lands at dense index ``n = J*i + s``; the
  stitched map has ``J*M`` positions.
* The rarefied network runs once on the unshifted input; its output index is the dense index ``n``
  directly. It has ``L`` positions (``L`` may differ from ``J*M`` by a few border positions).
* Dense unit ``n`` sees the input pixels ``[n + lo, n + hi]``, where ``[lo, hi]`` is the field of unit 0
  of the strided network (``lo = -P``, ``hi = R - 1 - P``; union over branches) — see
  :class:`DenseGeometry`.
* **Interior** (:func:`interior`): the dense positions where both methods agree exactly (up to float
  rounding) are those whose computation reads no padding in either method::

      n + lo >= n mod J      shift s = n mod J has real pixels only from offset s on (it pads
                             before); equivalently n >= J*ceil(-lo/J), the first multiple of J >= P
      n + hi <= N - 1        past the end one method reads zeros as data, the other as padding
      n < min(J*M, L)        the position exists in both outputs

  so the interior is one contiguous range per axis. Agreement is guaranteed there. Outside it (the
  borders) the two may legitimately differ: each method inserts its zero (or ``-inf``) padding at
  different places, and biases or pooling make that visible.

Rarefaction rewrites ``Conv{1,2,3}d``, stride-1 ``ConvTranspose{1,2,3}d``, ``MaxPool{1,2,3}d``,
``AvgPool{1,2,3}d`` and padding modules; every other op must keep the geometry (pointwise ops,
BatchNorm in eval mode, residual additions, channel concatenation, ...) or run before any stride.
The geometry comes from the TRF engine (:mod:`rflens.dense.geometry`), which also names any op
that has no dense form (global pooling, norms over space, resampling, functional strided ops).

Modules: :mod:`.geometry` (what the network does, from the TRF engine), :mod:`.modules` (the
rewritten layers and their replacements), :mod:`.rarefy`, :mod:`.stitch` (shift-and-stitch,
truncation, comparison).
"""

from rflens.dense.geometry import DenseGeometry, analyze
from rflens.dense.modules import PadThen, RarefiedAvgPool, RarefiedMaxPool
from rflens.dense.rarefy import rarefy
from rflens.dense.stitch import (Truncated, compare, dense_output, interior, shift_and_stitch,
                                 shifted_input, stitch, truncate)

__all__ = ["DenseGeometry", "RarefiedAvgPool", "RarefiedMaxPool", "PadThen", "Truncated", "analyze",
           "rarefy", "truncate", "shifted_input", "stitch", "shift_and_stitch", "dense_output",
           "interior", "compare"]
