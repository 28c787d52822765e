"""Evaluate an exported bundle on the 24 Kodak images at full size, through onnxruntime.

    python -m uigc_models.evaluate --bundle ../models/uigc-small

Per image: PSNR (8-bit RGB), MS-SSIM (pytorch_msssim, data_range 255), LPIPS-alex (v0.1, offline
port), the periodic-artefact figure (artefacts.py: decoded/original luma power at periods 4/8/16 px,
both axes; `periodic_max` and `periodic`), tokens used, and the unigram code length in bpp: sum over tokens of -log2 p(token) with p
from prior.bin, divided by the pixel count (the fixed-length rate log2(K)/256 is reported too).
Writes <out>/per_image.json, <out>/summary.json, eval.log, config.json (default out:
~/.cache/uigc/runs/eval-<bundle name>/); --save-recon also writes the decoded PNGs there.
Kodak is evaluation data only.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from .artefacts import lpips_shifted, periodic_record, summarise as periodic_summary
from .bundle import read_prior_bin, save_json_compat, verify_bundle_hashes
from .common import DATA_ROOT, RUNS_ROOT, run_dir, set_threads, setup_logging, write_config
from .data import list_kodak, load_rgb
from .export import ort_sessions, pad16


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (smoke)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-recon", action="store_true")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    bdir = os.path.abspath(args.bundle)
    man = verify_bundle_hashes(bdir)
    out = args.out or run_dir("eval-" + man["name"], RUNS_ROOT)
    os.makedirs(out, exist_ok=True)
    log = setup_logging(out, "eval.log")
    write_config(out, args, extra={"bundle_manifest": man})
    mean = np.array(man["pixels"]["mean"], np.float32)
    std = np.array(man["pixels"]["std"], np.float32)
    k = man["codebook_size"]
    if man["prior"].get("kind", "unigram") == "unigram":
        w = read_prior_bin(os.path.join(bdir, man["prior"]["path"])).astype(np.float64)
        code_len = -np.log2(w / w.sum())
    else:   # an integer transformer prior (prior.bin "UGIP"): the real rates come from the Rust CLI (bench_codecs)
        log.info(f"prior kind {man['prior'].get('kind')!r}: no unigram code length (bpp_unigram = nan)")
        code_len = np.full(k, np.nan)
    enc, dec = ort_sessions(bdir, args.threads)

    from pytorch_msssim import ms_ssim
    from tqdm import tqdm
    from .lpips import LPIPS
    lp = LPIPS("alex")

    files = list_kodak(args.data_root)
    if args.limit:
        files = files[:args.limit]
    rows, all_counts = [], np.zeros(k, np.int64)
    t0 = time.time()
    for p in tqdm(files, desc="kodak", file=sys.stderr, mininterval=10):
        a = load_rgb(p)
        h, wd = a.shape[:2]
        x = (pad16(a).astype(np.float32) / 255.0 - mean) / std
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        t = time.time()
        idx = enc.run(["indices"], {"image": x})[0]
        te = time.time() - t
        t = time.time()
        y = dec.run(["image"], {"indices": idx})[0]
        td = time.time() - t
        rec = np.clip(np.rint((y[0].transpose(1, 2, 0) * std + mean) * 255.0), 0, 255).astype(np.uint8)[:h, :wd]
        cnt = np.bincount(idx.ravel(), minlength=k)
        all_counts += cnt
        ta = torch.from_numpy(a).permute(2, 0, 1)[None].float()
        tb = torch.from_numpy(rec).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            ms = float(ms_ssim(ta, tb, data_range=255.0, size_average=True))
            lpv = float(lp(ta / 127.5 - 1, tb / 127.5 - 1).item())
            lps = lpips_shifted(lp, ta / 127.5 - 1, tb / 127.5 - 1)
        bits = float(code_len[idx.ravel()].sum())
        # colour fidelity: per-channel mean shift (8-bit units) and PSNR of 8x8 block means
        shift = float(np.abs(a.reshape(-1, 3).mean(0) - rec.reshape(-1, 3).mean(0)).mean())
        hb, wb = h // 8 * 8, wd // 8 * 8
        blk = lambda im: im[:hb, :wb].astype(np.float64).reshape(hb // 8, 8, wb // 8, 8, 3).mean((1, 3))
        lp_mse = float(np.mean((blk(a) - blk(rec)) ** 2))
        r = {"image": os.path.basename(p), "height": h, "width": wd, "tokens": int(idx.size),
             "psnr": psnr_u8(a, rec), "ms_ssim": ms, "lpips_alex": lpv, "lpips_alex_shifted": lps,
             "color_mean_shift": shift, "psnr_8x8_means": 10 * math.log10(255.0 ** 2 / max(lp_mse, 1e-12)),
             "unique_tokens": int((cnt > 0).sum()), "unigram_bits": bits, "bpp_unigram": bits / (h * wd),
             "bpp_fixed": idx.size * math.log2(k) / (h * wd), "enc_s": te, "dec_s": td,
             **periodic_record(a, rec)}
        rows.append(r)
        log.info(f"{r['image']}: PSNR {r['psnr']:.2f} dB, MS-SSIM {ms:.4f}, LPIPS-alex {lpv:.4f} (shifted {lps:.4f}), "
                 f"bpp(unigram) {r['bpp_unigram']:.4f}, unique tokens {r['unique_tokens']}, "
                 f"periodic max {r['periodic_max']:.2f}")
        if args.save_recon:
            from PIL import Image
            Image.fromarray(rec).save(os.path.join(out, r["image"]))
    pu = all_counts / all_counts.sum()
    summary = {
        "bundle": bdir, "name": man["name"], "version": man["version"], "codebook_size": k, "images": len(rows),
        "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
        "mean_ms_ssim": float(np.mean([r["ms_ssim"] for r in rows])),
        "mean_lpips_alex": float(np.mean([r["lpips_alex"] for r in rows])),
        "mean_lpips_alex_shifted": float(np.mean([r["lpips_alex_shifted"] for r in rows])),
        "mean_bpp_unigram": float(np.mean([r["bpp_unigram"] for r in rows])),
        "mean_color_mean_shift": float(np.mean([r["color_mean_shift"] for r in rows])),
        "mean_psnr_8x8_means": float(np.mean([r["psnr_8x8_means"] for r in rows])),
        "bpp_fixed_length": math.log2(k) / 256,
        "codebook_usage_kodak": int((all_counts > 0).sum()),
        "codebook_usage_frac": float((all_counts > 0).mean()),
        "token_entropy_kodak_bits": float(-(pu[pu > 0] * np.log2(pu[pu > 0])).sum()),
        "mean_unique_tokens_per_image": float(np.mean([r["unique_tokens"] for r in rows])),
        "mean_encoder_s": float(np.mean([r["enc_s"] for r in rows])),
        "mean_decoder_s": float(np.mean([r["dec_s"] for r in rows])),
        **periodic_summary(rows),
        "threads": args.threads, "wall_s": time.time() - t0,
        "manifest_sha256": {s: man[s]["sha256"] for s in ("tokenizer_encoder", "tokenizer_decoder", "prior")},
    }
    save_json_compat(os.path.join(out, "per_image.json"), rows)
    save_json_compat(os.path.join(out, "summary.json"), summary)
    log.info("summary: " + ", ".join(f"{k2}={v:.4f}" if isinstance(v, float) else f"{k2}={v}"
                                      for k2, v in summary.items() if k2 not in ("manifest_sha256",)))
    log.info(f"wrote {out}/per_image.json and summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
