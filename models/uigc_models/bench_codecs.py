"""Rate-quality benchmark on Kodak: uigc (real packets from the Rust CLI) and AV1 (aomenc), one
JSON schema for every codec, per image.

    python -m uigc_models.bench_codecs --uigc ../target/release/uigc --bundle uigc-small \
        --points all half quarter eighth sixteenth max-bytes:600 --regen argmax iterative:4 \
        --av1 --out ~/.cache/uigc/runs/bench-kodak

Every record: {"codec", "setting", "image", "width", "height", "bytes", "bpp", "psnr", "ms_ssim",
"lpips_alex", "lpips_alex_shifted", "chroma_err", "periodic_max", "periodic", "seconds"}
(lpips_alex_shifted: at odd offsets, artefacts.lpips_shifted; periodic: artefacts.py, the
decoded/original luma power at periods 4/8/16 px per axis, periodic_max its largest); bytes are the real file sizes (the uigc packet, the raw AV1 OBU
stream). `--av1` encodes each image with `aomenc --allintra --end-usage=q --cpu-used=0` at the
cq-level whose size is closest to the matching uigc packet (binary search; the first uigc point
named by --av1-match). Writes records.json, summary.json (means per codec/setting) and a plot
ladder.png (bpp vs LPIPS-alex and PSNR). Kodak is evaluation data only.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import tempfile
import time

import numpy as np
import torch

from .artefacts import lpips_shifted, periodic_record
from .common import DATA_ROOT, set_threads
from .data import list_kodak, load_rgb


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


class Metrics:
    def __init__(self):
        from pytorch_msssim import ms_ssim

        from .lpips import LPIPS
        self.lp = LPIPS("alex")
        self.ms_ssim = ms_ssim

    def __call__(self, ref: np.ndarray, rec: np.ndarray) -> dict:
        t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
        a, b = t(ref), t(rec)
        with torch.no_grad():
            lp = float(self.lp(a / 127.5 - 1, b / 127.5 - 1)[0])
            lps = lpips_shifted(self.lp, a / 127.5 - 1, b / 127.5 - 1)
            ms = float(self.ms_ssim(a, b, data_range=255.0))
        return {"psnr": psnr(ref, rec), "ms_ssim": ms, "lpips_alex": lp, "lpips_alex_shifted": lps,
                "chroma_err": chroma_error(ref, rec),
                **periodic_record(ref, rec)}


def chroma_error(ref: np.ndarray, rec: np.ndarray, block: int = 16) -> float:
    """Colour error: mean absolute difference of the Cb and Cr means of 16x16 blocks (BT.601, 8-bit
    levels), whole blocks only. Hue and saturation of areas, blind to texture."""
    h, w = (ref.shape[0] // block) * block, (ref.shape[1] // block) * block
    m = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])

    def means(a):
        c = a[:h, :w].astype(np.float64) @ m.T
        return c.reshape(h // block, block, w // block, block, 2).mean((1, 3))
    return float(np.abs(means(ref) - means(rec)).mean())


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return p.stdout


COLOUR_PREFIX = re.compile(r"^colour(-auto)?(?:-(\d+)-(\d+))?:")


def uigc_point(uigc: str, bundle: str, img: str, point: str, regen: str, tmp: str):
    # colour[-auto][-BLOCK-STEP]:POINT - with the colour thumbnail (--colour on / auto); points
    # without the prefix are sent without it (--colour off), so older records keep their meaning.
    enc, dec = [], []
    if point.startswith("full-decoder:"):  # full-decoder:POINT - the float decoder (--decoder full)
        dec = ["--decoder", "full"]
        point = point[len("full-decoder:"):]
    if point.startswith("fast:"):  # fast:POINT - the bundle's fast encoder (--encoder fast)
        enc = ["--encoder", "fast"]
        point = point[len("fast:"):]
    args = ["--colour", "off"] + enc
    m = COLOUR_PREFIX.match(point)
    if m:
        mode = "auto" if m.group(1) else "on"
        args = ["--colour", mode + (f":{m.group(2)}:{m.group(3)}" if m.group(2) else "")] + enc
        point = point[m.end():]
    if point.startswith("dense:"):  # dense:POLICY - the 2x grid (--density dense)
        args += ["--density", "dense"]
        point = point.split(":", 1)[1]
    if point.startswith("max-bytes:"):
        args += ["--max-bytes", point.split(":", 1)[1]]
    elif point.startswith("extra:"):  # extra:POLICY:N
        _, keep, n = point.split(":")
        args += ["--keep", keep, "--extra", n]
    else:
        args += ["--keep", point]
    pkt, png = os.path.join(tmp, "p.uigc"), os.path.join(tmp, "r.png")
    t = time.time()
    run([uigc, "encode", img, "-o", pkt, "--model", bundle, *args])
    run([uigc, "decode", pkt, "-o", png, "--model", bundle, "--regen", regen, *dec])
    return os.path.getsize(pkt), load_rgb(png), time.time() - t


def write_y4m(path: str, rgb: np.ndarray):
    """8-bit 4:2:0 Y'CbCr (BT.601 full range) Y4M of an RGB image (even sizes)."""
    f = rgb.astype(np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    cb = 128 + (-0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2])
    cr = 128 + (0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2])
    sub = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))
    planes = [y, sub(cb), sub(cr)]
    h, w = y.shape
    with open(path, "wb") as o:
        o.write(f"YUV4MPEG2 W{w} H{h} F1:1 Ip A1:1 C420jpeg XCOLORRANGE=FULL\n".encode())
        o.write(b"FRAME\n")
        for p in planes:
            o.write(np.clip(np.round(p), 0, 255).astype(np.uint8).tobytes())


def read_yuv420(path: str, w: int, h: int) -> np.ndarray:
    d = np.fromfile(path, np.uint8)
    y = d[: w * h].reshape(h, w).astype(np.float64)
    cb = d[w * h: w * h + w * h // 4].reshape(h // 2, w // 2).astype(np.float64)
    cr = d[w * h + w * h // 4: w * h * 3 // 2].reshape(h // 2, w // 2).astype(np.float64)
    up = lambda c: np.repeat(np.repeat(c, 2, 0), 2, 1) - 128
    cb, cr = up(cb), up(cr)
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def av1_encode(rgb: np.ndarray, cq: int, tmp: str):
    h, w = rgb.shape[:2]
    y4m, obu, yuv = (os.path.join(tmp, n) for n in ("i.y4m", "o.obu", "d.yuv"))
    write_y4m(y4m, rgb)
    run(["aomenc", "--allintra", "--end-usage=q", f"--cq-level={cq}", "--cpu-used=0", "--obu",
         "--limit=1", "-o", obu, y4m, "--quiet"])
    run(["aomdec", "--rawvideo", "-o", yuv, obu])
    return os.path.getsize(obu), read_yuv420(yuv, w, h)


def av1_matched(rgb: np.ndarray, target: int, tmp: str):
    """The cq-level (0..63) whose OBU size is closest to `target` bytes (size falls with cq)."""
    lo, hi, best = 0, 63, None
    while lo <= hi:
        mid = (lo + hi) // 2
        size, rec = av1_encode(rgb, mid, tmp)
        if best is None or abs(size - target) < abs(best[1] - target):
            best = (mid, size, rec)
        if size > target:
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def report(records: list, out: str) -> None:
    """summary.json (means per codec/setting), a printed table and ladder.png from records."""
    summary = {}
    for r in records:
        key = f"{r['codec']} {r['setting']}"
        summary.setdefault(key, []).append(r)
    table = {k: {m: float(np.mean([r[m] for r in v]))
                 for m in ("bpp", "bytes", "psnr", "ms_ssim", "lpips_alex", "lpips_alex_shifted", "chroma_err",
                           "periodic_max") if all(m in r for r in v)}
             | ({"periodic_max_worst": float(max(r["periodic_max"] for r in v))}
                if all("periodic_max" in r for r in v) else {})
             | {"images": len(v)} for k, v in summary.items()}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(table, f, indent=1)
    for k, v in sorted(table.items(), key=lambda kv: kv[1]["bpp"]):
        print(f"{k:<48} bpp {v['bpp']:.4f}  PSNR {v['psnr']:.2f}  MS-SSIM {v['ms_ssim']:.4f}  "
              f"LPIPS-alex {v['lpips_alex']:.4f}  "
              + (f"(shifted {v['lpips_alex_shifted']:.4f})  " if "lpips_alex_shifted" in v else "")
              + (f"chroma err {v['chroma_err']:.2f}  " if "chroma_err" in v else "")
              + (f"periodic max {v['periodic_max']:.2f} (worst {v['periodic_max_worst']:.1f})  "
                 if "periodic_max" in v else "") + f"({v['images']} images)")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for codec in sorted({k.split(" ")[0] + " " + k.split("/")[-1] if k.startswith("uigc") else k for k in table}):
            pts = sorted((v["bpp"], v["lpips_alex"], v["psnr"]) for k, v in table.items()
                         if (k.startswith("uigc") and k.endswith("/" + codec.split(" ")[-1]) and codec.startswith("uigc"))
                         or k == codec)
            ax[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=codec)
            ax[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=codec)
        ax[0].set(xlabel="bpp (real bytes)", ylabel="LPIPS-alex (lower is better)", title="Kodak, 24 images")
        ax[1].set(xlabel="bpp (real bytes)", ylabel="PSNR dB", title="Kodak, 24 images")
        ax[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "ladder.png"), dpi=110)
    except Exception as e:  # the numbers are the product; the plot is a convenience
        print(f"plot skipped: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uigc", default=os.path.join(os.path.dirname(__file__), "../../target/release/uigc"))
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--points", nargs="*", default=["all", "half", "quarter", "eighth", "sixteenth"])
    ap.add_argument("--regen", nargs="+", default=["argmax"])
    ap.add_argument("--av1", action="store_true")
    ap.add_argument("--av1-match", nargs="+", default=["all"],
                    help="uigc points whose bytes AV1 matches (one AV1 record each); 'min' = AV1's "
                         "smallest packet (cq-level 63)")
    ap.add_argument("--av1-targets", default=None,
                    help="records.json of an earlier run: match the bytes of its uigc records "
                         "(setting '<point>/<regen>' starting with the --av1-match point) instead of "
                         "running those points again")
    ap.add_argument("--images", nargs="*", default=None, help="default: the 24 Kodak images")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="only combine the records.json of earlier runs into --out (summary, plot)")
    args = ap.parse_args(argv)
    if args.merge:
        os.makedirs(args.out, exist_ok=True)
        records = [r for f in args.merge for r in json.load(open(f))]
        with open(os.path.join(args.out, "records.json"), "w") as f:
            json.dump(records, f, indent=1)
        report(records, args.out)
        return 0
    set_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    images = args.images or list_kodak(args.data_root)
    metrics = Metrics()
    records = []
    earlier = json.load(open(args.av1_targets)) if args.av1_targets else []
    from tqdm import tqdm
    with tempfile.TemporaryDirectory() as tmp:
        for img in tqdm(images, desc="images"):
            ref = load_rgb(img)
            h, w = ref.shape[:2]
            name = os.path.basename(img)
            matched = {}
            for r in earlier:
                for m in args.av1_match:
                    if r["codec"] == "uigc" and r["image"] == name and r["setting"].startswith(m + "/"):
                        matched.setdefault(m, r["bytes"])
            for point in args.points:
                done = None
                for regen in args.regen:
                    # nothing is regenerated when every token is sent: one decode serves every mode
                    if done is None or point.split(":")[-1] != "all":
                        size, rec, secs = uigc_point(args.uigc, args.bundle, img, point, regen, tmp)
                        rec_m = metrics(ref, rec)
                        done = True
                    records.append({"codec": "uigc", "setting": f"{point}/{regen}", "image": name,
                                    "width": w, "height": h, "bytes": size,
                                    "bpp": size * 8 / (w * h), **rec_m, "seconds": secs})
                    if point in args.av1_match:
                        matched.setdefault(point, size)
            for m in args.av1_match if args.av1 else []:
                t = time.time()
                if m == "min":
                    cq = 63
                    size, rec = av1_encode(ref, cq, tmp)
                elif m in matched:
                    cq, size, rec = av1_matched(ref, matched[m], tmp)
                else:
                    continue
                records.append({"codec": "av1", "setting": f"aomenc-allintra-cpu0-matched:{m}",
                                "image": name, "width": w, "height": h, "bytes": size,
                                "bpp": size * 8 / (w * h), "cq_level": cq, **metrics(ref, rec),
                                "seconds": time.time() - t})
            with open(os.path.join(args.out, "records.json"), "w") as f:
                json.dump(records, f, indent=1)
    report(records, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
