"""Side-by-side picture: original | uigc | AV1 at similar bytes, one row per image.

    python -m uigc_models.side_by_side --bundle uigc-small --images kodim23 kodim01 \
        --out ../docs/side_by_side.png [--keep all]

uigc: the real packet from the Rust CLI (`uigc encode/decode`); AV1: `aomenc --allintra
--end-usage=q --cpu-used=0` at the cq-level whose raw OBU size is closest to the uigc packet.
Each panel is labelled with its bytes, bpp, PSNR and LPIPS-alex.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from .bench_codecs import Metrics, av1_matched, uigc_point
from .common import DATA_ROOT, set_threads
from .data import load_rgb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uigc", default=os.path.join(os.path.dirname(__file__), "../../target/release/uigc"))
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", nargs="+", default=["kodim23", "kodim01"])
    ap.add_argument("--keep", default="all")
    ap.add_argument("--regen", default="argmax")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=512, help="panel width in pixels")
    args = ap.parse_args(argv)
    set_threads(2)
    from PIL import Image, ImageDraw
    metrics = Metrics()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.images:
            path = os.path.join(args.data_root, "kodak", name + ".png")
            ref = load_rgb(path)
            h, w = ref.shape[:2]
            size, rec, _ = uigc_point(args.uigc, args.bundle, path, args.keep, args.regen, tmp)
            cq, asize, arec = av1_matched(ref, size, tmp)
            panels = []
            for label, img, nbytes in (("original", ref, None), ("uigc", rec, size), (f"AV1 cq {cq}", arec, asize)):
                im = Image.fromarray(img)
                scale = args.width / w
                im = im.resize((args.width, round(h * scale)), Image.LANCZOS)
                d = ImageDraw.Draw(im)
                text = label
                if nbytes is not None:
                    m = metrics(ref, img)
                    text += f": {nbytes} B, {nbytes * 8 / (w * h):.4f} bpp, {m['psnr']:.1f} dB, LPIPS {m['lpips_alex']:.3f}"
                d.rectangle([0, 0, 8 + 6 * len(text), 14], fill=(0, 0, 0))
                d.text((4, 2), text, fill=(255, 255, 255))
                panels.append(np.asarray(im))
            rows.append(np.concatenate(panels, 1))
    width = max(r.shape[1] for r in rows)
    out = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], 0)
    Image.fromarray(out).save(args.out, optimize=True)
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
