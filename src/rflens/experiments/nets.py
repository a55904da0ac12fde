"""The small networks the training experiments learn with (``training``, ``long-range``,
``large-kernel``, ``vit-vs-cnn``).

Every network has a ``features`` module whose output is a ``(B, C, H, W)`` grid — the layer whose
centre unit (index ``n // 2`` per axis, rflens' ``unit="center"``) the experiments probe — and a
``head`` that reads either that centre unit (``readout="center"``: the label must be decidable
from what the probed unit sees) or the average over the grid (``readout="mean"``).
:meth:`probe_center` gives, in input pixels, the centre of the probed unit's field, derived by hand
from the geometry (the TRF engine gives the same for the convolutional nets; the tests compare).

- :class:`ResidualCNN`: a 3×3 stem, a 2×2 max pool, a 1×1 widening conv and ``blocks`` residual
  blocks ``relu(x + bn(conv(relu(bn(conv(x))))))`` of 3×3 convs (BatchNorm, no conv biases).
- :class:`DepthwiseNet`: the same stem and pool, then either one depthwise ``k×k`` block or
  ``(k - 1) / 2`` depthwise 3×3 blocks (each: depthwise conv, BN, ReLU, 1×1 conv, BN, ReLU), so
  both variants have the same TRF (RepLKNet-style large kernel vs a stack of small ones).
- :class:`TinyViT`: ``p×p`` patches (default 4, so its 8×8 token grid on a 32-pixel input matches
  a two-pool CNN's grid), fixed 2-D sine-cosine position embeddings, pre-norm transformer blocks
  and :class:`TokenGrid`, which puts the tokens back on their ``(H, W)`` grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualCNN", "DepthwiseNet", "TinyViT", "TokenGrid", "calibrate_batchnorm",
           "parameter_count"]


class _Readout(nn.Module):
    """Classifier over the ``features`` grid: the centre unit's channels or their grid mean."""

    def __init__(self, channels: int, classes: int, readout: str, norm: bool = False) -> None:
        super().__init__()
        if readout not in ("center", "mean"):
            raise ValueError(f"readout must be 'center' or 'mean', not {readout!r}")
        self.readout = readout
        self.norm = nn.LayerNorm(channels) if norm else nn.Identity()
        self.linear = nn.Linear(channels, classes)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        if self.readout == "mean":
            return self.linear(self.norm(grid.mean(dim=(2, 3))))
        h, w = grid.shape[-2:]
        return self.linear(self.norm(grid[:, :, h // 2, w // 2]))


class _Net(nn.Module):
    features: nn.Module
    head: _Readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    pools: int = 1

    def probe_center(self, size: int) -> tuple[float, float]:
        """Centre (row, column, input pixels) of the field of the centre unit of ``features`` on
        a ``size``×``size`` input: the stem's ``p`` pools (jump ``s = 2^p``) map grid unit ``i`` to
        pixels ``s·i … s·i + s - 1``, and every other layer is symmetric around its input."""
        step = 2 ** self.pools
        i = (size // step) // 2
        c = step * i + (step - 1) / 2
        return (c, c)


def _stem(width: int, stem: int, pools: int = 1) -> list[nn.Module]:
    """3×3 conv to ``stem`` channels, BN, ReLU, 2×2 max pool; with ``pools=2`` a second 3×3 conv
    (to ``width``), BN, ReLU and pool, else a 1×1 conv to ``width``, BN, ReLU."""
    layers = [nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(),
              nn.MaxPool2d(2)]
    if pools == 2:
        return layers + [nn.Conv2d(stem, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(), nn.MaxPool2d(2)]
    if pools != 1:
        raise ValueError(f"pools must be 1 or 2, not {pools}")
    return layers + [nn.Conv2d(stem, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv3(relu(bn(conv3(x))))))`` at constant width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(_Net):
    """:func:`_stem` with ``pools`` max pools, then ``blocks`` :class:`ResidualBlock`\\ s; TRF
    ``8·blocks + 4`` px with one pool, ``16·blocks + 10`` with two. Single-channel input."""

    def __init__(self, blocks: int = 4, width: int = 16, stem: int = 8, classes: int = 2,
                 readout: str = "center", pools: int = 1) -> None:
        super().__init__()
        self.pools = pools
        self.features = nn.Sequential(*_stem(width, stem, pools),
                                      *[ResidualBlock(width) for _ in range(blocks)])
        self.head = _Readout(width, classes, readout)


class DepthwiseBlock(nn.Module):
    """``relu(x + bn(conv1×1(relu(bn(depthwise_k×k(x))))))``: a depthwise ``k×k`` conv and a
    pointwise conv on a residual branch (the identity shortcut RepLKNet's guideline 2 asks for)."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(width, width, kernel, padding=kernel // 2, groups=width, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.pointwise = nn.Conv2d(width, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x))))))


class DepthwiseNet(_Net):
    """The :class:`ResidualCNN` stem and pool, then ``large`` (odd): one :class:`DepthwiseBlock`
    with a ``large×large`` kernel (``stack=False``) or ``(large - 1) / 2`` blocks with 3×3 kernels
    (``stack=True``). Both have the TRF ``2·large + 2`` px (the blocks run at stride 2)."""

    def __init__(self, large: int = 13, stack: bool = False, width: int = 16, stem: int = 8,
                 classes: int = 2, readout: str = "center") -> None:
        super().__init__()
        if large < 3 or large % 2 == 0:
            raise ValueError(f"the large kernel must be odd and at least 3, not {large}")
        blocks = [DepthwiseBlock(width, 3) for _ in range((large - 1) // 2)] if stack else \
            [DepthwiseBlock(width, large)]
        self.features = nn.Sequential(*_stem(width, stem), *blocks)
        self.head = _Readout(width, classes, readout)


# --- a small vision transformer -------------------------------------------------------------------

def sincos_embedding(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(h·w, dim)``: half the channels encode the row,
    half the column, each with ``dim / 4`` frequencies ``1 / 10000^(k / (dim/4))``."""
    if dim % 4:
        raise ValueError(f"the embedding width must be a multiple of 4, not {dim}")
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (rows.reshape(-1), cols.reshape(-1)):
        angle = pos[:, None] * freq[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


class PatchTokens(nn.Module):
    """``(B, 1, H, W)`` → ``(B, (H/p)·(W/p), dim)`` tokens: a ``p×p`` stride-``p`` conv, plus the
    fixed position embedding (a buffer, not trained)."""

    def __init__(self, size: int, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch)
        n = size // patch
        self.register_buffer("pos", sincos_embedding(n, n, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU, ``mlp_ratio``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenGrid(nn.Module):
    """``(B, H·W, C)`` tokens → ``(B, C, H, W)``, row-major as :class:`PatchTokens` made them, so
    the ViT's probed output is a grid like a CNN's."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.h, self.w)


class TinyViT(_Net):
    """:class:`PatchTokens` (``patch``×``patch``), ``depth`` :class:`TransformerBlock`\\ s and
    :class:`TokenGrid`: ``features`` is the residual stream on the token grid. No class token: the
    head applies the final LayerNorm to the centre token (or the mean token) and a linear layer.
    (The LayerNorm sits in the head because the channel sum of a LayerNorm output is constant, so
    its summed readout would have a zero gradient.) Input ``1×size×size``, ``size`` divisible by
    ``patch``."""

    def __init__(self, size: int = 32, patch: int = 4, dim: int = 32, depth: int = 2, heads: int = 4,
                 mlp_ratio: int = 2, classes: int = 2, readout: str = "center") -> None:
        super().__init__()
        if size % patch:
            raise ValueError(f"the input size {size} is not divisible by the patch size {patch}")
        self.patch = patch
        n = size // patch
        self.features = nn.Sequential(PatchTokens(size, patch, dim),
                                      *[TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)],
                                      TokenGrid(n, n))
        self.head = _Readout(dim, classes, readout, norm=True)

    def probe_center(self, size: int) -> tuple[float, float]:
        """Centre of the centre token's own patch (the attention makes its TRF the whole image)."""
        i = (size // self.patch) // 2
        c = self.patch * i + (self.patch - 1) / 2
        return (c, c)


# --- helpers --------------------------------------------------------------------------------------

@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> None:
    """Set every BatchNorm's running mean and variance to the statistics of ``x`` (forward passes in
    training mode, cumulative averages), leaving its momentum and the model's mode as they were.

    Freshly built BatchNorms hold mean 0 and variance 1, which are not the statistics the network
    computes with; evaluated with them, a residual branch of a default-initialised conv is scaled
    down several-fold and the ERF at initialisation would be the identity path's alone."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
