"""The decoder's colour-thumbnail correction (docs/bitstream.md, "Colour thumbnail") in PyTorch.

The Rust decoder moves the block means (in YCbCr) of its decoded picture to the quantised block
means the packet carries. Training the tokenizer decoder with this correction in the loop
(`train.py --colour-loop`) lets it spend its capacity on structure and texture instead of on the
colours the thumbnail supplies. Same fixed-point weights, rounding and interpolation as
`src/codec/colour.rs`; only float rounding differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 full range, 8-bit fixed point (weights / 256), as in the packet format.
_FWD = torch.tensor([[77.0, 150.0, 29.0], [-43.0, -85.0, 128.0], [128.0, -107.0, -21.0]]) / 256.0
# Inverse used by the decoder to turn YCbCr differences into RGB differences.
_INV = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def parse(spec: str) -> tuple[int, int]:
    """'BLOCK:STEP' -> (block, step), validated like the Rust ColourParams."""
    block, step = (int(v) for v in spec.split(":"))
    if block not in (8, 16, 32, 64, 128) or not 1 <= step <= 32:
        raise ValueError(f"colour {spec!r}: block 8..128 (power of two), step 1..32")
    return block, step


def _ycc_means(x255: torch.Tensor, block: int) -> torch.Tensor:
    """Block means over the pixels of each block (the last row/column of blocks may be partial)."""
    ycc = torch.einsum("ij,njhw->nihw", _FWD.to(x255), x255)
    h, w = ycc.shape[-2:]
    pad = (0, -w % block, 0, -h % block)
    sums = F.avg_pool2d(F.pad(ycc, pad), block) * block * block
    ones = F.pad(torch.ones(1, 1, h, w, device=ycc.device, dtype=ycc.dtype), pad)
    counts = F.avg_pool2d(ones, block) * block * block
    return sums / counts


def _axis(n: int, blocks: int, block: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps between block centres, clamped at the borders (as the Rust decoder)."""
    f = ((torch.arange(n, device=device, dtype=torch.float32) + 0.5) / block - 0.5).clamp(0, blocks - 1)
    i0 = f.floor().long()
    i1 = (i0 + 1).clamp(max=blocks - 1)
    return i0, i1, f - i0


def thumbnail(x: torch.Tensor, block: int, step: int) -> torch.Tensor:
    """Quantised block means of images `x` in [-1, 1] (N, 3, H, W), in units of 8-bit levels."""
    m = _ycc_means((x + 1) * 127.5, block)
    q = torch.floor(m / step + 0.5)
    lo = torch.tensor([0.0, -128.0, -128.0], device=x.device).view(1, 3, 1, 1)
    hi = torch.tensor([255.0, 128.0, 128.0], device=x.device).view(1, 3, 1, 1)
    q = torch.maximum(torch.minimum(q, torch.floor(hi / step + 0.5)), torch.floor(lo / step + 0.5))
    return q * step


def apply(y: torch.Tensor, thumb: torch.Tensor, block: int) -> torch.Tensor:
    """Decoded images `y` in [-1, 1] moved to the block means `thumb` (differentiable in y)."""
    d = thumb - _ycc_means((y + 1) * 127.5, block)
    (h, w), (rows, cols) = y.shape[-2:], d.shape[-2:]
    r0, r1, fy = _axis(h, rows, block, y.device)
    c0, c1, fx = _axis(w, cols, block, y.device)
    fy, fx = fy.to(d).view(-1, 1), fx.to(d)
    d = d[..., r0, :] * (1 - fy) + d[..., r1, :] * fy
    d = d[..., c0] * (1 - fx) + d[..., c1] * fx
    return y + torch.einsum("ij,njhw->nihw", _INV.to(y), d) / 127.5


def correct(y: torch.Tensor, x: torch.Tensor, block: int, step: int) -> torch.Tensor:
    """`y` corrected with the thumbnail of the originals `x` (what the receiver shows)."""
    return apply(y, thumbnail(x, block, step), block)
