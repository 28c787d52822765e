"""Rate-quality benchmark on Kodak: uigc (real packets from the Rust CLI) and the peers a user would
pick instead, one JSON schema for every codec, per image.

    python -m uigc_models.bench_codecs --uigc ../target/release/uigc --bundle uigc-small \
        --points all half quarter eighth sixteenth max-bytes:600 --regen argmax iterative:4 \
        --av1 --out ~/.cache/uigc/runs/bench-kodak
    # the comparison of issue 12: the ladder against five peers at the bytes of two points
    python -m uigc_models.bench_codecs --uigc ../target/release/uigc --bundle uigc-small \
        --points colour-auto:all max-bytes:600 max-bytes:300 --av1-match max-bytes:600 max-bytes:300 \
        --peers av1 x265 j2k av1-down2 av1-down4 --threads 1 --out ~/.cache/uigc/runs/bench-peers

Every record: {"codec", "setting", "image", "width", "height", "bytes", "bpp", "psnr", "ms_ssim",
"lpips_alex", "lpips_alex_shifted", "chroma_err", "periodic_max", "periodic", "seconds"}
(lpips_alex_shifted: at odd offsets, artefacts.lpips_shifted; periodic: artefacts.py, the
decoded/original luma power at periods 4/8/16 px per axis, periodic_max its largest); bytes are the real file sizes (the uigc packet, the raw AV1 OBU
stream, the HEVC Annex B stream, the JPEG 2000 codestream). `--peers` (`--av1` = `--peers av1`)
encodes each image with each peer at the quality parameter whose size is closest to the uigc
packet of every point named by --av1-match (binary search; `quality_param` in the record):
`av1` aomenc --allintra --end-usage=q --cpu-used=0 (cq-level), `x265` HEVC all-intra through
ffmpeg's libx265 with `info=0` (the --no-info of issue 12; qp), `j2k` JPEG 2000 by OpenJPEG through
Pillow (compression-ratio step), `av1-down2` / `av1-down4` downscale by 2 or 4 (bicubic), AV1,
upscale back. Writes records.json, summary.json (means per codec/setting), ladder.png (bpp on a log
axis vs LPIPS-alex and PSNR) and sbs_<image>.png (centre crops of every record's picture side by
side, for the --side-by-side images). Kodak is evaluation data only.
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
    if point.startswith("wl"):  # wlN:POINT - both ends at work limit N tokens (--work-limit: no padding below it)
        n, point = point[2:].split(":", 1)
        enc = dec = ["--work-limit", str(int(n))]
    for tag in ("full", "smooth"):  # full-decoder:POINT / smooth-decoder:POINT - --decoder full / smooth
        if point.startswith(f"{tag}-decoder:"):
            dec = dec + ["--decoder", tag]
            point = point[len(f"{tag}-decoder:"):]
    if point.startswith("fast:"):  # fast:POINT - the bundle's fast encoder (--encoder fast)
        enc = enc + ["--encoder", "fast"]
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


def matched(encode, target: int, lo: int, hi: int):
    """The quality parameter q in lo..hi whose encode(q) -> (bytes, picture) is closest to `target`
    bytes, by binary search (bytes fall as q rises). Returns (q, bytes, picture)."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        size, rec = encode(mid)
        if best is None or abs(size - target) < abs(best[1] - target):
            best = (mid, size, rec)
        if size > target:
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def av1_matched(rgb: np.ndarray, target: int, tmp: str):
    """The cq-level (0..63) whose OBU size is closest to `target` bytes (size falls with cq)."""
    return matched(lambda cq: av1_encode(rgb, cq, tmp), target, 0, 63)


def x265_encode(rgb: np.ndarray, qp: int, tmp: str):
    """HEVC all-intra (x265 through ffmpeg, `info=0`: no SEI with the encoder's settings), one frame at
    `qp`; bytes of the raw Annex B stream."""
    h, w = rgb.shape[:2]
    y4m, bit, yuv = (os.path.join(tmp, n) for n in ("i.y4m", "o.hevc", "d.yuv"))
    write_y4m(y4m, rgb)
    run(["ffmpeg", "-loglevel", "error", "-y", "-i", y4m, "-c:v", "libx265", "-preset", "slow",
         "-x265-params", f"qp={qp}:keyint=1:info=0:log-level=error", "-frames:v", "1", "-f", "hevc", bit])
    run(["ffmpeg", "-loglevel", "error", "-y", "-i", bit, "-f", "rawvideo", yuv])
    return os.path.getsize(bit), read_yuv420(yuv, w, h)


def j2k_encode(rgb: np.ndarray, target: int, tmp: str):
    """JPEG 2000 (OpenJPEG through Pillow) at the compression ratio that aims at `target` bytes,
    searched on a ratio grid (Pillow's rate is a target, the codestream lands near it)."""
    from PIL import Image
    h, w = rgb.shape[:2]
    path = os.path.join(tmp, "o.j2k")

    def enc(step: int):
        ratio = 8.0 * 1.06 ** step
        Image.fromarray(rgb).save(path, "JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True)
        return os.path.getsize(path), np.asarray(Image.open(path).convert("RGB"))
    return matched(enc, target, 0, 120)


def resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


def down_av1_matched(rgb: np.ndarray, factor: int, target: int, tmp: str):
    """What a practical engineer does: downscale by `factor` (bicubic), AV1 all-intra at the cq-level
    closest to `target` bytes, upscale back (bicubic)."""
    h, w = rgb.shape[:2]
    small = resize(rgb, w // factor // 2 * 2, h // factor // 2 * 2)
    cq, size, rec = av1_matched(small, target, tmp)
    return cq, size, resize(rec, w, h)


# --peers: the codecs a user would pick instead, each matched to the uigc packet's bytes
PEERS = {
    "av1": ("aomenc-allintra-cpu0", lambda rgb, t, tmp: av1_matched(rgb, t, tmp)),
    "x265": ("x265-allintra-slow-noinfo", lambda rgb, t, tmp: matched(lambda q: x265_encode(rgb, q, tmp), t, 0, 51)),
    "j2k": ("openjpeg-rates", j2k_encode),
    "av1-down2": ("down2-aomenc-allintra-cpu0-up", lambda rgb, t, tmp: down_av1_matched(rgb, 2, t, tmp)),
    "av1-down4": ("down4-aomenc-allintra-cpu0-up", lambda rgb, t, tmp: down_av1_matched(rgb, 4, t, tmp)),
}


def side_by_side(ref: np.ndarray, pictures: list[tuple[str, np.ndarray]], path: str, crop: int = 256,
                 columns: int = 5) -> None:
    """A grid of centre crops (the original, then each codec's picture, `columns` a row) with labels, as a PNG."""
    from PIL import Image, ImageDraw
    h, w = ref.shape[:2]
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    tiles = [("original", ref)] + pictures
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    cell_w, cell_h = crop + 4, crop + 32
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, pic) in enumerate(tiles):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        sheet.paste(Image.fromarray(np.ascontiguousarray(pic[y0:y0 + crop, x0:x0 + crop])), (x, y + 28))
        draw.text((x + 2, y + 2), label[:42], fill="black")
        if len(label) > 42:
            draw.text((x + 2, y + 14), label[42:84], fill="black")
    sheet.save(path)


def report(records: list, out: str) -> None:
    """summary.json (means per codec/setting), a printed table and ladder.png from records."""
    summary, names = {}, {}
    for r in records:
        key = f"{r['codec']} {r['setting']}"
        summary.setdefault(key, []).append(r)
        names[key] = (r["codec"], r["setting"])   # codec names may have spaces (relabelled merges)
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
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.6))
        curves = {}  # one line per codec (uigc: per regeneration mode), its points sorted by bpp
        for k, v in table.items():
            codec, setting = names[k]
            name = f"{codec} ({setting.split('/')[-1]})" if codec.startswith("uigc") else codec
            curves.setdefault(name, set()).add((v["bpp"], v["lpips_alex"], v["psnr"]))
        for name, pts in sorted(curves.items()):
            pts = sorted(pts)
            style = dict(marker="o", linewidth=2.5 if name.startswith("uigc") else 1.2, label=name)
            ax[0].plot([p[0] for p in pts], [p[1] for p in pts], **style)
            ax[1].plot([p[0] for p in pts], [p[2] for p in pts], **style)
        ax[0].set(xlabel="bpp (real bytes, log scale)", ylabel="LPIPS-alex (lower is better)", title="Kodak",
                  xscale="log")
        ax[1].set(xlabel="bpp (real bytes, log scale)", ylabel="PSNR dB", title="Kodak", xscale="log")
        for a in ax:
            a.grid(True, which="both", alpha=0.3)
        ax[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        fig.savefig(os.path.join(out, "ladder.png"), dpi=110, bbox_inches="tight")
    except Exception as e:  # the numbers are the product; the plot is a convenience
        print(f"plot skipped: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uigc", default=os.path.join(os.path.dirname(__file__), "../../target/release/uigc"))
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--points", nargs="*", default=["all", "half", "quarter", "eighth", "sixteenth"])
    ap.add_argument("--regen", nargs="+", default=["argmax"])
    ap.add_argument("--av1", action="store_true", help="the same as --peers av1")
    ap.add_argument("--peers", nargs="*", default=[], choices=sorted(PEERS),
                    help="peer codecs, each matched to the bytes of the --av1-match points: av1 (aomenc "
                         "all-intra), x265 (HEVC all-intra, --no-info), j2k (JPEG 2000, OpenJPEG), av1-down2 / "
                         "av1-down4 (downscale, AV1, upscale)")
    ap.add_argument("--side-by-side", nargs="*", default=["kodim23.png"],
                    help="images of which a row of centre crops (original, then every record's picture) is "
                         "written as sbs_<image>.png")
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
    peers = list(dict.fromkeys((["av1"] if args.av1 else []) + args.peers))
    from tqdm import tqdm
    with tempfile.TemporaryDirectory() as tmp:
        for img in tqdm(images, desc="images"):
            ref = load_rgb(img)
            h, w = ref.shape[:2]
            name = os.path.basename(img)
            targets, pictures = {}, []
            for r in earlier:
                for m in args.av1_match:
                    if r["codec"] == "uigc" and r["image"] == name and r["setting"].startswith(m + "/"):
                        targets.setdefault(m, r["bytes"])
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
                        targets.setdefault(point, size)
                    pictures.append((f"uigc {point}/{regen}: {size} B", rec))
            for peer in peers:
                label, encode = PEERS[peer]
                for m in args.av1_match:
                    t = time.time()
                    if m == "min" and peer == "av1":
                        q = 63
                        size, rec = av1_encode(ref, q, tmp)
                    elif m in targets:
                        q, size, rec = encode(ref, targets[m], tmp)
                    else:
                        continue
                    records.append({"codec": peer, "setting": f"{label}-matched:{m}",
                                    "image": name, "width": w, "height": h, "bytes": size,
                                    "bpp": size * 8 / (w * h), "quality_param": q, **metrics(ref, rec),
                                    "seconds": time.time() - t})
                    pictures.append((f"{peer} {m}: {size} B", rec))
            if name in args.side_by_side and pictures:
                side_by_side(ref, pictures, os.path.join(args.out, f"sbs_{name[:-4]}.png"))
            with open(os.path.join(args.out, "records.json"), "w") as f:
                json.dump(records, f, indent=1)
    report(records, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
