"""Which tokens decode best? Encoder-side token refinement, a measurement for issue 12 (not in the codec).

    python -m uigc_models.token_refine [--ckpt CKPT] [--images six|all|kodim01,...] [--iters 20]
        [--lr 0.01] [--w-lpips 1] [--w-mse 4] [--prior ../models/uigc-small/prior.bin] [--save DIR]

The tokenizer's encoder picks, at every position, the codeword nearest to its latent. Given the
decoder, that is not the grid that decodes best. Here the latent z of one image is optimised by
Adam. The forward pass quantises z to its nearest codeword; the gradient passes straight through
the quantiser. The loss is LPIPS-alex at a random offset (0..15 px per axis, new every step: the
lattice is not locked to the token grid), plus 0.5 L1 plus `--w-mse` MSE, on the decoder's raw
output. The grid of the lowest loss seen is kept.

Both grids are scored the way spot_check scores a checkpoint. The decoded picture goes through the
colour thumbnail's correction (32:4). The scores are LPIPS-alex, aligned and at odd offsets
(artefacts.lpips_shifted), PSNR, the periodic figure, and the bits of the grid under the integer
prior (intprior_ref.grid_bits, the Rust prior's reference: a packet's payload without headers).

The gap between the two grids bounds what a better encoder could give with the same decoder and
codebook. models/README.md "Which tokens decode best" has the measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from . import colour
from .artefacts import lpips_shifted, periodic_ratios
from .common import DATA_ROOT, set_threads
from .data import load_rgb, to_tensor_m11
from .evaluate import psnr_u8
from .export import load_tokenizer
from .lpips import LPIPS
from .spot_check import select_images, to_u8

DEFAULT_CKPT = os.path.expanduser("~/.cache/uigc/runs/imported/uigc-small-0.3.0.pt")
DEFAULT_PRIOR = os.path.join(os.path.dirname(__file__), "..", "uigc-small", "prior.bin")


def refine(tok, lp, t: torch.Tensor, iters: int, lr: float, w_lpips: float, w_mse: float,
           seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """(best grid [1,h,w], its loss, the encoder grid's loss) for one image t [1,3,H,W] in [-1,1]."""
    with torch.no_grad():
        z0 = tok.encode_z(t)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    g = torch.Generator().manual_seed(seed)
    h, w = t.shape[-2:]
    best_loss, best, first = float("inf"), None, None
    for i in range(max(1, iters)):
        # the quantiser in eval mode: nearest codeword, straight-through gradient, no EMA update
        q, idx, _ = tok.quant(tok.quant.normalize(z))
        y = tok.decoder(q)
        dy, dx = (int(v) for v in torch.randint(0, 16, (2,), generator=g))
        crop = (..., slice(dy, dy + h - 16), slice(dx, dx + w - 16))
        loss = (w_lpips * lp(y[crop], t[crop]).mean() + 0.5 * (y - t).abs().mean()
                + w_mse * ((y - t) ** 2).mean())
        value = float(loss.detach())
        first = value if first is None else first
        if value < best_loss:
            best_loss, best = value, idx.clone()
        if i + 1 < iters:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return best, best_loss, first


@torch.no_grad()
def score(tok, lp, prior, x: np.ndarray, t: torch.Tensor, idx: torch.Tensor) -> dict:
    from . import prior_model
    y = colour.correct(tok.decode_indices(idx).clamp(-1, 1), t, 32, 4).clamp(-1, 1)
    rec = to_u8(y)
    rt = to_tensor_m11(rec[None])
    bits, _ = prior_model.int_grid_bits(prior, idx[0].numpy())
    return {"lpips_alex": float(lp(rt, t)), "lpips_alex_shifted": lpips_shifted(lp, t, rt),
            "psnr": psnr_u8(x, rec), "periodic_max": periodic_ratios(x, rec)["periodic_max"],
            "bits": float(bits.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=DEFAULT_CKPT, help="an f=16 tokenizer checkpoint (default: the 0.3.0 import)")
    ap.add_argument("--prior", default=DEFAULT_PRIOR, help="integer prior.bin for the bits column")
    ap.add_argument("--images", default="six")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--w-lpips", type=float, default=1.0)
    ap.add_argument("--w-mse", type=float, default=4.0)
    ap.add_argument("--save", default=None, help="directory for the refined grids (<image>.npy, int16)")
    ap.add_argument("--out", default=None, help="JSON file of the per-image records and the means")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    from . import intprior_ref
    tok, _ = load_tokenizer(args.ckpt)
    tok.requires_grad_(False)
    lp = LPIPS("alex")
    lp.requires_grad_(False)
    prior = intprior_ref.load_prior(args.prior)
    records = []
    for f in select_images(args.images, args.data_root):
        name = os.path.basename(f)[:-4]
        x = load_rgb(f)
        x = x[:x.shape[0] // 16 * 16, :x.shape[1] // 16 * 16]
        t = to_tensor_m11(x[None])
        t0 = time.time()
        idx0 = tok.encode_indices(t)
        idx1, loss1, loss0 = refine(tok, lp, t, args.iters, args.lr, args.w_lpips, args.w_mse)
        rec = {"image": name, "changed": float((idx1 != idx0).float().mean()), "loss": [loss0, loss1],
               "seconds": time.time() - t0,
               "encoder": score(tok, lp, prior, x, t, idx0), "refined": score(tok, lp, prior, x, t, idx1)}
        records.append(rec)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            np.save(os.path.join(args.save, name + ".npy"), idx1[0].numpy().astype(np.int16))
        e, r = rec["encoder"], rec["refined"]
        print(f"{name}: {rec['changed'] * 100:.0f} % of tokens changed, {rec['seconds']:.0f} s | " + ", ".join(
            f"{k} {e[k]:.4g} -> {r[k]:.4g}" for k in e), flush=True)
    means = {side: {k: float(np.mean([r[side][k] for r in records])) for k in records[0][side]}
             for side in ("encoder", "refined")}
    means["changed"] = float(np.mean([r["changed"] for r in records]))
    print(json.dumps({"images": len(records), **means}, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"args": vars(args), "records": records, "means": means}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
