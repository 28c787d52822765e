"""Where does the decoder's pixel grid come from? Measurements behind issue 12's first item.

    python -m uigc_models.grid_probe CKPT [--images six] [--out probe.json]

For one checkpoint, the same weights are decoded with each decoder upsampling variant: `nearest`
(as trained), `bilinear` in all four Up blocks, and bilinear in one Up block only (`bil@1` = the
H/16 -> H/8 block, ..., `bil@4` = H/2 -> H). Up block i turns 2x2 feature blocks of size 2^(5-i) px
(at the output) into a grid of that period: @1 -> 16 px, @2 -> 8 px, @3 -> 4 px, @4 -> 2 px.
No retraining: the bilinear variants are the trained weights run with another interpolation, so
their quality is not the point; their grid is.

Per variant:
* Kodak (encoder tokens): periodic figure (artefacts.py, decoded/original) mean / worst, PSNR;
* block template: the mean 16x16 (and 8x8) luma pattern over all blocks of a decoded image, the
  image mean removed, RMS in 8-bit levels (a natural photo's is ~0.3; a phase-locked grid adds to it);
* random token grids (uniform over the codebook, 32x48 tokens): the spectral peak prominence at periods
  4/8/16 px per axis (3x3 band power at the period's bin over the mean of the same band moved 3-5
  bins along the axis), so no original is needed;
* constant token grids (4 codes, 40x40 tokens): luma std over the central 320x320 px (10 tokens
  from the border, beyond the zero padding's reach): ~0 means the decoder adds nothing where the tokens
  do not change, i.e. the grid comes from token transitions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from .artefacts import PERIODS, luma, periodic_ratios
from .common import DATA_ROOT, set_threads
from .data import load_rgb, to_tensor_m11
from .evaluate import psnr_u8
from .export import load_tokenizer, resolve_ckpt
from .model import Up
from .spot_check import select_images, to_u8


def up_blocks(tok) -> list[Up]:
    return [m for m in tok.decoder.net if isinstance(m, Up)]


def set_variant(tok, variant: str) -> None:
    ups = up_blocks(tok)
    for i, u in enumerate(ups, 1):
        if variant == "nearest":
            u.mode = "nearest"
        elif variant == "bilinear":
            u.mode = "bilinear"
        elif variant.startswith("bil@"):
            u.mode = "bilinear" if i == int(variant[4:]) else "nearest"
        else:
            raise ValueError(variant)


def block_template_rms(y: np.ndarray, b: int) -> float:
    h, w = (y.shape[0] // b) * b, (y.shape[1] // b) * b
    t = y[:h, :w].reshape(h // b, b, w // b, b).mean((0, 2))
    return float(np.sqrt(((t - t.mean()) ** 2).mean()))


def prominence(rgb: np.ndarray) -> dict:
    y = luma(rgb)
    pw = np.abs(np.fft.fft2(y - y.mean())) ** 2
    h, w = pw.shape

    def band(ky, kx):
        return float(pw[np.ix_([(ky + d) % h for d in (-1, 0, 1)], [(kx + d) % w for d in (-1, 0, 1)])].sum())
    out = {}
    for p in PERIODS:
        for ax in ("v", "h"):
            n = h if ax == "v" else w
            k0 = int(round(n / p))
            at = (lambda k: band(k, 0)) if ax == "v" else (lambda k: band(0, k))
            ref = np.mean([at(k0 + s) for s in (-5, -4, -3, 3, 4, 5)])
            out[f"p{p}{ax}"] = at(k0) / max(ref, 1e-9)
    return out


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--images", default="six")
    ap.add_argument("--variants", nargs="+", default=["nearest", "bilinear", "bil@1", "bil@2", "bil@3", "bil@4"])
    ap.add_argument("--random-grids", type=int, default=3)
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    tok, ck = load_tokenizer(resolve_ckpt(args.ckpt))
    trained = tok.hparams.get("up_mode", "nearest")
    files = select_images(args.images, args.data_root)
    imgs = [load_rgb(f) for f in files]
    toks = [tok.encode_indices(to_tensor_m11(a[None])) for a in imgs]
    g = torch.Generator().manual_seed(0)
    rand = [torch.randint(0, tok.quant.k, (1, 32, 48), generator=g) for _ in range(args.random_grids)]
    const = [torch.full((1, 40, 40), int(c)) for c in torch.randint(0, tok.quant.k, (4,), generator=g)]
    orig = {"template16_rms": float(np.mean([block_template_rms(luma(a), 16) for a in imgs])),
            "template8_rms": float(np.mean([block_template_rms(luma(a), 8) for a in imgs]))}
    print(f"{args.ckpt} (trained with {trained}); {len(imgs)} images; originals: block template RMS "
          f"16px {orig['template16_rms']:.2f}, 8px {orig['template8_rms']:.2f}")
    res = {"ckpt": args.ckpt, "trained_up_mode": trained, "images": [os.path.basename(f) for f in files],
           "original": orig, "variants": {}}
    for v in args.variants:
        t0 = time.time()
        set_variant(tok, v)
        per = []
        for a, idx in zip(imgs, toks):
            rec = to_u8(tok.decode_indices(idx).clamp(-1, 1))
            r = periodic_ratios(a, rec)
            per.append({"psnr": psnr_u8(a, rec), **r, "t16": block_template_rms(luma(rec), 16),
                        "t8": block_template_rms(luma(rec), 8)})
        rp = [prominence(to_u8(tok.decode_indices(i).clamp(-1, 1))) for i in rand]
        cs = [float(luma(to_u8(tok.decode_indices(i).clamp(-1, 1)))[160:-160, 160:-160].std()) for i in const]
        keys = [k for k in per[0] if k.startswith("p") and k != "psnr" and k != "periodic_max"]
        row = {"psnr": float(np.mean([p["psnr"] for p in per])),
               "periodic_max_mean": float(np.mean([p["periodic_max"] for p in per])),
               "periodic_max_worst": float(np.max([p["periodic_max"] for p in per])),
               "periodic_mean_per_key": {k: float(np.mean([p[k] for p in per])) for k in keys},
               "template16_rms": float(np.mean([p["t16"] for p in per])),
               "template8_rms": float(np.mean([p["t8"] for p in per])),
               "random_prominence": {k: float(np.mean([r[k] for r in rp])) for k in rp[0]} if rp else {},
               "constant_interior_std": cs, "seconds": time.time() - t0}
        res["variants"][v] = row
        pk = row["periodic_mean_per_key"]
        print(f"{v:>9}: PSNR {row['psnr']:.2f}  periodic max mean {row['periodic_max_mean']:.2f} worst "
              f"{row['periodic_max_worst']:.1f}  | mean p4v {pk['p4v']:.2f} p4h {pk['p4h']:.2f} p8v {pk['p8v']:.2f} "
              f"p8h {pk['p8h']:.2f} p16v {pk['p16v']:.2f} p16h {pk['p16h']:.2f} | template RMS 16px "
              f"{row['template16_rms']:.2f} 8px {row['template8_rms']:.2f} | random-token prominence "
              + " ".join(f"{k} {x:.1f}" for k, x in row["random_prominence"].items())
              + f" | constant-grid interior std {max(cs):.3f}", flush=True)
    set_variant(tok, trained)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
