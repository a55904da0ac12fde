"""Token grids, windows, rolls and attention against a gradient-support oracle on the real models.

The oracle here runs the unmodified model with random float64 weights and a random input: softmax,
GELU and LayerNorm have non-zero derivatives almost everywhere, so a pixel gets a non-zero gradient
exactly when a path reaches it (independent of rflens: the unit's tensor elements are picked by
hand from the layout, the support read off ``torch.autograd.grad``).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import rflens

timm = pytest.importorskip("timm")
from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402


def _support(model: nn.Module, module: nn.Module | None, pick, shape) -> tuple | None:
    """Per-axis hull of the input pixels with a non-zero gradient of ``pick(output of module)``."""
    x = torch.randn((1, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    seen = {}
    handle = module.register_forward_hook(lambda _m, _i, o: seen.setdefault("y", o)) if module else None
    out = model(x)
    if handle:
        handle.remove()
    y = seen.get("y", out)
    (g,) = torch.autograd.grad(pick(y).sum(), x)
    g = g[0].abs().sum(0)
    rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
    if not len(rows):
        return None
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=8, depths=(2, 2),
                           num_heads=(1, 1), num_classes=0).double().eval()


@pytest.mark.parametrize("layer", ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0",
                                   "layers.1.blocks.1"])
def test_swin_window_and_shifted_window_boxes_match_the_oracle(swin, layer, one_thread) -> None:
    """(B, H, W, C) rows; blocks .1 roll the map by half a window before partitioning it."""
    rf = rflens.receptive_field(swin, example_inputs=torch.empty(1, 3, 32, 32, dtype=torch.float64))
    row = rf[layer]
    assert row.known and not row.is_global and row.shape[1:3] == row.grid
    module = swin.get_submodule(layer)
    for r, c in itertools.product(*map(range, row.grid)):
        assert row.box((r, c), clip=True) == _support(swin, module, lambda y: y[0, r, c], (3, 32, 32))
    # the first block's windows are 4 tokens (8 pixels) apart; shifted ones cross window borders
    if layer == "layers.0.blocks.0":
        assert row.box((5, 6), clip=True) == ((8, 15), (8, 15))


@pytest.mark.parametrize("kind, expected", [("block", ((4, 7), (4, 7))), ("grid", ((1, 13), (2, 14)))])
def test_maxvit_block_and_grid_attention_match_the_oracle(kind, expected, one_thread) -> None:
    """Block attention mixes within 4x4 windows; grid attention mixes units 4 apart (dilated)."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            cfg = MaxxVitTransformerCfg(dim_head=8, window_size=(4, 4), grid_size=(4, 4))
            self.attn = PartitionAttentionCl(8, partition_type=kind, cfg=cfg)

        def forward(self, x):
            return self.attn(self.stem(x).permute(0, 2, 3, 1))

    model = Net().double().eval()
    rf = rflens.receptive_field(model, example_inputs=torch.empty(1, 3, 16, 16, dtype=torch.float64))
    row = rf["attn"]
    assert row.known and not row.is_global
    for r, c in itertools.product(range(16), range(16)):
        assert row.box((r, c), clip=True) == _support(model, None, lambda y: y[0, r, c], (3, 16, 16))
    assert row.box((5, 6), clip=True) == expected


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                             num_classes=4).double().eval()


def test_vit_tokens_keep_their_grid_and_attention_is_global(vit, one_thread) -> None:
    rf = rflens.receptive_field(vit, example_inputs=torch.empty(1, 3, 32, 32, dtype=torch.float64))
    assert all(layer.known for layer in rf.layers), [l.name for l in rf.layers if not l.known]
    embed = rf["patch_embed"]  # (B, 16 tokens, C): a 4x4 grid of 8x8 patches
    assert embed.grid == (4, 4) and not embed.is_global
    pos = rf["pos_drop"]  # the class token prepended: 17 tokens, the grid unchanged
    assert pos.shape[1] == 17 and pos.grid == (4, 4)
    for r, c in itertools.product(range(4), range(4)):
        expected = ((8 * r, 8 * r + 7), (8 * c, 8 * c + 7))
        token = 1 + 4 * r + c  # by hand: the class token first, then the grid row by row
        assert pos.box((r, c), clip=True) == expected
        assert _support(vit, vit.pos_drop, lambda y: y[0, token], (3, 32, 32)) == expected
        assert [a.tolist() for a in pos.locate((r, c))] == [[0], [token], list(range(16))]
    block = rf["blocks.0"]
    assert block.is_global and block.size == (8, 8)  # the local path: its own patch
    everything = ((0, 31), (0, 31))
    for r, c in ((0, 0), (3, 1), (2, 2)):
        assert block.box((r, c), clip=True) == everything
        assert _support(vit, vit.blocks[0], lambda y: y[0, 1 + 4 * r + c], (3, 32, 32)) == everything
    head = rf["output"]  # the class token after attention: it depends on every pixel
    assert head.is_global and head.known


class Tokens(nn.Module):
    """Patches, a class token, the grid sliced back out and reshaped to a map, a conv on it."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 4, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 4))
        self.conv = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + 1.0
        grid = t[:, 1:].transpose(1, 2).reshape(t.shape[0], 4, 4, 4)
        return self.conv(grid), t[:, 0]


def test_slicing_the_extra_tokens_off_gives_the_grid_back(one_thread) -> None:
    model = Tokens().double().eval()
    rf = rflens.receptive_field(model, example_inputs=torch.empty(1, 1, 16, 16, dtype=torch.float64))
    out = rf["output"]
    assert out.known and not out.is_global and out.size == (12, 12) and out.jump == (4, 4)
    for r, c in itertools.product(range(4), range(4)):
        assert out.box((r, c), clip=True) == _support(model, None, lambda y: y[0][0, 0, r, c], (1, 16, 16))
    assert "output[1]" not in rf  # the class token never saw a pixel: no dependency, no row


def test_roll_is_a_cyclic_permutation(one_thread) -> None:
    class Roll(nn.Module):
        def forward(self, x):
            return torch.roll(x, shifts=(2, -3), dims=(2, 3))

    rf = rflens.receptive_field(Roll(), (1, 6, 7))
    out = rf["output"]
    for r, c in itertools.product(range(6), range(7)):
        assert out.box((r, c), clip=True) == (((r - 2) % 6,) * 2, ((c + 3) % 7,) * 2)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "swin_v2_t", "maxvit_t"])
def test_torchvision_transformers_are_known(name) -> None:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    rf = rflens.receptive_field(model, (3, 224, 224))
    assert all(layer.known for layer in rf.layers), [l.name for l in rf.layers if not l.known][:3]
    assert rf["output"].is_global


def test_erf_of_token_layers_probes_the_grid_token(vit, one_thread) -> None:
    """(B, T, C) and (B, H, W, C) rows: the centre unit is a grid position, the readout sums the
    features of that one token (never over tokens); the map covers the unit's own patch only."""
    import numpy as np

    from rflens.erf import effective_receptive_field

    erf = effective_receptive_field(vit, "patch_embed", (3, 32, 32), samples=2, progress=False,
                                    weights="as-is", dtype="float64")
    assert erf.unit == (2, 2)
    rows, cols = np.nonzero(erf.raw.sum(1))[0], np.nonzero(erf.raw.sum(0))[0]
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (16, 23, 16, 23)  # patch (2, 2): pixels 16..23
    cls = effective_receptive_field(vit, "blocks.0", (3, 32, 32), samples=2, progress=False,
                                    unit="cls", dtype="float64")
    assert cls.unit == ("token:0",) and (cls.raw > 0).all()  # the class token attended to all
    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=8, depths=(2,),
                           num_heads=(1,), num_classes=0).double().eval()
    erf = effective_receptive_field(swin, "layers.0.blocks.0", (3, 32, 32), samples=2, progress=False)
    rows, cols = np.nonzero(erf.raw.sum(1))[0], np.nonzero(erf.raw.sum(0))[0]
    assert erf.unit == (8, 8) and erf.trf.box == ((16, 23), (16, 23))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (16, 23, 16, 23)  # its 4x4-token window


def _token_supports(model: nn.Module, module: nn.Module, shape) -> "collections.Counter":
    """The multiset of per-token input hulls of ``module``'s (B, N, C) output (token order aside)."""
    import collections

    x = torch.randn((1, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    seen = {}
    handle = module.register_forward_hook(lambda _m, _i, o: seen.setdefault("y", o))
    model(x)
    handle.remove()
    y, boxes = seen["y"], collections.Counter()
    for t in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        g = g[0].abs().sum(0)
        rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
        boxes[(int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))] += 1
    return boxes


@pytest.mark.parametrize("layer", ["blocks.0", "blocks.1"])
def test_hiera_mask_unit_attention_matches_the_oracle(layer, one_thread) -> None:
    """Hiera keeps its tokens in an 'unrolled' order and attends within mask units: every grid unit's
    box, as a multiset over the grid, is the oracle's multiset over the tokens."""
    import collections

    from timm.models.hiera import Hiera

    torch.manual_seed(0)
    model = Hiera(img_size=(32, 32), embed_dim=8, num_heads=1, stages=(1, 1, 1), q_pool=2,
                  mask_unit_size=(4, 4), mask_unit_attn=(True, True, False), patch_kernel=(3, 3),
                  patch_stride=(2, 2), patch_padding=(1, 1), num_classes=0,
                  global_pos_size=(16, 16)).double().eval()
    rf = rflens.receptive_field(model, example_inputs=torch.empty(1, 3, 32, 32, dtype=torch.float64))
    row = rf[layer]
    assert row.known and not row.is_global
    mine = collections.Counter(row.box(u, clip=True) for u in itertools.product(*map(range, row.grid)))
    assert mine == _token_supports(model, model.get_submodule(layer), (3, 32, 32))
    assert row.axes[0].jump == (2 if layer == "blocks.0" else 4)  # token spacing, pixels


def test_detector_fpn_rows_match_the_oracle(one_thread) -> None:
    """The feature pyramid of torchvision's detectors (resnet18 body here, frozen batch norm): every
    level's boxes, corners, borders and centre, against the gradient support on the backbone."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    fpn = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5).double().eval()
    rf = rflens.receptive_field(fpn, example_inputs=torch.empty(1, 3, 64, 64, dtype=torch.float64))
    checked = 0
    for key in ("0", "1", "2", "3", "pool"):
        name = f"output[{key}]"
        row = rf[name]
        assert row.known and not row.is_global, name
        h, w = row.grid
        for r, c in {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w // 2)}:
            got = row.box((r, c), clip=True)
            assert got == _support(fpn, None, lambda y: y[key][0, :, r, c], (3, 64, 64)), (name, r, c)
            checked += 1
    assert checked >= 17


class _WindowLocal(nn.Module):
    """A depthwise conv (padded inside each window) and an optional 2x2 average pool run on
    4x4 window partitions, then the windows put back: EfficientViT's and SAM2-Hiera's pattern."""

    def __init__(self, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, 4, 4)
        t = self.pool(self.conv(t))
        n = t.shape[-1]
        return t.view(b, h // 4, w // 4, c, n, n).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h // 4 * n, w // 4 * n)


@pytest.mark.parametrize("pool", [False, True])
def test_window_local_ops_match_the_oracle(pool, one_thread) -> None:
    torch.manual_seed(0)
    model = _WindowLocal(pool).double()
    rf = rflens.receptive_field(model, example_inputs=torch.empty(1, 2, 8, 12, dtype=torch.float64))
    row = rf["output"]
    assert row.known and not row.is_global
    for r, c in itertools.product(*map(range, row.grid)):
        assert row.box((r, c), clip=True) == _support(model, None, lambda y: y[0, :, r, c], (2, 8, 12))
    # units at a window's border read only their own window (its own zero padding)
    if not pool:
        assert row.box((3, 5), clip=True) == ((2, 3), (4, 6))
