"""Quick decoder check of training checkpoints on a few Kodak images (PyTorch, no bundle export).

    python -m uigc_models.spot_check CKPT_OR_RUN [CKPT_OR_RUN ...] [--images six] [--colour 32:4]

For choosing between checkpoints while a run trains: each image goes through the checkpoint's
encoder and decoder (all tokens), is rounded to 8 bits and scored with LPIPS-alex and PSNR, once
raw and once after the colour thumbnail's correction (`colour.correct`, the Rust decoder's
correction in PyTorch), and given the periodic-artefact figure (artefacts.py; mean and worst over
the images of the per-image largest decoded/original power ratio at periods 4/8/16 px) and LPIPS at
odd offsets ("shifted": artefacts.lpips_shifted, which a grid locked to LPIPS's lattice cannot game). `six` = kodim01/05/09/13/17/21 (every fourth image), `all` = the 24, or a
comma-separated list of names (kodim23,kodim01). It is a spot check, not the measure: the
24-image `bench_codecs` run on the exported bundle is (and choosing checkpoints on these images is
a mild selection effect on them).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from . import colour
from .artefacts import lpips_shifted, periodic_ratios
from .common import DATA_ROOT, set_threads
from .data import list_kodak, load_rgb, to_tensor_m11
from .evaluate import psnr_u8
from .export import load_tokenizer, resolve_ckpt
from .lpips import LPIPS


def select_images(spec: str, data_root: str = DATA_ROOT) -> list[str]:
    files = list_kodak(data_root)
    if spec == "all":
        return files
    if spec == "six":
        return files[::4]
    names = [n.strip().removesuffix(".png") for n in spec.split(",") if n.strip()]
    chosen = [f for f in files if os.path.basename(f)[:-4] in names]
    missing = sorted(set(names) - {os.path.basename(f)[:-4] for f in chosen})
    if missing:
        raise FileNotFoundError(f"not among the Kodak images: {', '.join(missing)}")
    return chosen


def to_u8(y: torch.Tensor) -> np.ndarray:
    return ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


@torch.no_grad()
def score(tok, images: list[np.ndarray], lp: LPIPS, block: int, step: int) -> dict[str, tuple[float, ...]]:
    """(mean LPIPS-alex, mean PSNR, mean periodic_max, worst periodic_max, mean LPIPS-alex at odd
    offsets (artefacts.lpips_shifted)) over `images` (HxWx3 uint8, sides multiples of 16), raw and with
    the colour correction."""
    res: dict[str, list[tuple[float, float, float]]] = {"raw": [], "colour": []}
    for x in images:
        t = to_tensor_m11(x[None])
        y = tok.decode_indices(tok.encode_indices(t)).clamp(-1, 1)
        for key, out in (("raw", y), ("colour", colour.correct(y, t, block, step).clamp(-1, 1))):
            rec = to_u8(out)
            rt = to_tensor_m11(rec[None])
            res[key].append((float(lp(rt, t)), psnr_u8(x, rec), periodic_ratios(x, rec)["periodic_max"],
                             lpips_shifted(lp, t, rt)))
    return {k: tuple(float(m) for m in np.mean(v, 0)[:3]) + (float(np.max(np.asarray(v)[:, 2])),
                                                           float(np.mean(np.asarray(v)[:, 3])))
            for k, v in res.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpts", nargs="+", help="checkpoint files or run names (run name = <run>/last.pt)")
    ap.add_argument("--images", default="six", help="six | all | kodim01,kodim23,...")
    ap.add_argument("--colour", default="32:4", help="thumbnail BLOCK:STEP of the corrected score")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    block, step = colour.parse(args.colour)
    try:
        files = select_images(args.images, args.data_root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = [load_rgb(f) for f in files]
    lp = LPIPS("alex")
    print(f"{len(files)} images: {', '.join(os.path.basename(f)[:-4] for f in files)}; colour {block}:{step}")
    for spec in args.ckpts:
        tok, ck = load_tokenizer(resolve_ckpt(spec))
        r = score(tok, images, lp, block, step)
        print(f"{spec} (step {ck.get('step')}, up {tok.hparams.get('up_mode', 'nearest')}): "
              f"raw LPIPS {r['raw'][0]:.4f} (shifted {r['raw'][4]:.4f}) PSNR {r['raw'][1]:.2f} periodic "
              f"{r['raw'][2]:.2f} (worst {r['raw'][3]:.1f}) | colour LPIPS {r['colour'][0]:.4f} (shifted "
              f"{r['colour'][4]:.4f}) PSNR {r['colour'][1]:.2f} periodic {r['colour'][2]:.2f} (worst "
              f"{r['colour'][3]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
