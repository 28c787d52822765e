"""Periodic-artefact figure: how much a decoder adds at fixed pixel periods (the f=16 tokenizer's grid).

    python -m uigc_models.artefacts ORIGINAL.png DECODED.png

For each period p in (4, 8, 16) px and each axis, the ratio

    sum of |FFT(luma_decoded - mean)|^2 over the 3x3 frequency bins around the period-p peak
    ----------------------------------------------------------------------------------------
    the same sum for the original

where luma is BT.601 Y' of the 8-bit RGB image and the peak of period p lies at frequency index
round(N / p) along one axis and 0 along the other (N = image height for `v`, width for `h`). `v`
is the period along the vertical axis (a pattern that repeats every p rows: horizontal stripes),
`h` along the horizontal axis. A decoder without a grid stays near or below 1 (a blurring one below);
a visible cross-hatch gives tens to hundreds. The 3x3 neighbourhood wraps around (the bins just
below zero along the other axis are the negative frequencies).
"""
from __future__ import annotations

import sys

import numpy as np

PERIODS = (4, 8, 16)
KEYS = tuple(f"p{p}{ax}" for p in PERIODS for ax in ("v", "h"))


def luma(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 (uint8 or float, 0..255) -> HxW float64 BT.601 Y'."""
    f = np.asarray(rgb, np.float64)
    if f.ndim == 2:
        return f
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _power(rgb: np.ndarray) -> np.ndarray:
    y = luma(rgb)
    y = y - y.mean()
    return np.abs(np.fft.fft2(y)) ** 2


def _band(pw: np.ndarray, p: int, axis: str) -> float:
    h, w = pw.shape
    if axis == "v":
        ky, kx = int(round(h / p)), 0
    else:
        ky, kx = 0, int(round(w / p))
    rows = [(ky + d) % h for d in (-1, 0, 1)]
    cols = [(kx + d) % w for d in (-1, 0, 1)]
    return float(pw[np.ix_(rows, cols)].sum())


def periodic_ratios(original: np.ndarray, decoded: np.ndarray, periods=PERIODS, eps: float = 1e-9) -> dict:
    """{'p4v': r, 'p4h': r, 'p8v': ..., 'periodic_max': max of them} for two images of the same size."""
    if original.shape[:2] != decoded.shape[:2]:
        raise ValueError(f"sizes differ: {original.shape} vs {decoded.shape}")
    po, pd = _power(original), _power(decoded)
    out = {}
    for p in periods:
        for ax in ("v", "h"):
            out[f"p{p}{ax}"] = _band(pd, p, ax) / max(_band(po, p, ax), eps)
    out["periodic_max"] = max(out.values())
    return out


def periodic_record(original: np.ndarray, decoded: np.ndarray) -> dict:
    """The figure as stored in evaluation records: {'periodic_max': .., 'periodic': {'p8v': .., ...}}."""
    r = periodic_ratios(original, decoded)
    return {"periodic_max": r.pop("periodic_max"), "periodic": r}


def summarise(records: list[dict]) -> dict:
    """Means / maxima over records carrying periodic_record()'s fields."""
    rs = [r for r in records if "periodic_max" in r]
    if not rs:
        return {}
    m = [r["periodic_max"] for r in rs]
    worst = max(rs, key=lambda r: r["periodic_max"])
    wk = max(worst["periodic"], key=worst["periodic"].get)
    return {"periodic_max_mean": float(np.mean(m)), "periodic_max_median": float(np.median(m)),
            "periodic_max_worst": float(max(m)),
            "periodic_worst_at": f"{worst.get('image', '?')} {wk}",
            "periodic_images_over_2": int(sum(v > 2 for v in m))}


# Offsets (dy, dx) that are odd, so LPIPS-alex's stride-4/8/16 lattice never sits on the token grid.
SHIFTS = ((3, 5), (5, 3), (1, 7), (7, 1))


def lpips_shifted(lp, ref, rec, shifts=SHIFTS, margin: int = 8) -> float:
    """Mean LPIPS of two images (tensors [1,3,H,W] in [-1,1]) both cropped by `margin` px at each offset.
    LPIPS-alex samples on a lattice fixed to the image origin, which is also the token grid: a decoder
    can lower plain LPIPS with a pattern locked to it (0.3.0: 0.385 aligned vs 0.435 at offset (3,5) on
    six Kodak images). The shifted score does not reward that."""
    import torch
    h, w = ref.shape[-2] - margin, ref.shape[-1] - margin
    with torch.no_grad():
        return float(sum(float(lp(rec[..., dy:dy + h, dx:dx + w], ref[..., dy:dy + h, dx:dx + w]))
                         for dy, dx in shifts) / len(shifts))


def main(argv=None) -> int:
    from .data import load_rgb
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    r = periodic_ratios(load_rgb(argv[0]), load_rgb(argv[1]))
    print(" ".join(f"{k}={v:.3g}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
