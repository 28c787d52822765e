"""Write MODEL_CARD.md for an exported bundle from its export_report.json and Kodak summary.json.

    python -m uigc_models.model_card --bundle uigc-small --eval ~/.cache/uigc/runs/eval-uigc-small \
        [--also uigc-small-k64=~/.cache/uigc/runs/eval-uigc-small-k64] --notes notes.md

Only measured numbers are written; free text (hardware, caveats) comes from --notes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .bundle import read_manifest


def _load(p):
    with open(p) as f:
        return json.load(f)


def row(name, s, rep):
    return (f"| {name} | {s['codebook_size']} | {s['mean_psnr']:.2f} | {s['mean_ms_ssim']:.4f} | "
            f"{s['mean_lpips_alex']:.4f} | {s['mean_bpp_unigram']:.4f} | {s['bpp_fixed_length']:.4f} | "
            f"{s['codebook_usage_kodak']}/{s['codebook_size']} | {rep['prior_entropy_bits']:.2f} | "
            f"{s.get('mean_color_mean_shift', float('nan')):.2f} | {s.get('mean_psnr_8x8_means', float('nan')):.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--eval", required=True, help="evaluate.py output dir of this bundle")
    ap.add_argument("--also", action="append", default=[], help="BUNDLE=EVALDIR of sibling bundles")
    ap.add_argument("--notes", default=None, help="markdown file appended verbatim")
    args = ap.parse_args(argv)
    man = read_manifest(args.bundle)
    rep = _load(os.path.join(args.bundle, "export_report.json"))
    s = _load(os.path.join(args.eval, "summary.json"))
    lines = [f"# {man['name']} {man['version']}", "",
             "Tokenizer bundle of uigc (docs/bundle.md): VQ tokenizer, f=16, "
             f"K={man['codebook_size']}, unigram prior (token frequencies on the training set, +1).", "",
             f"## Kodak ({s['images']} images, full size, through the exported ONNX files with onnxruntime)", "",
             "| bundle | K | PSNR dB | MS-SSIM | LPIPS-alex | bpp (unigram) | bpp (fixed log2 K) | codes used | prior entropy bits/token | colour mean shift (8-bit) | PSNR of 8x8 means dB |",
             "|---|---|---|---|---|---|---|---|---|---|---|", row(man["name"], s, rep)]
    for a in args.also:
        b, e = a.split("=", 1)
        lines.append(row(read_manifest(b)["name"], _load(os.path.join(e, "summary.json")),
                         _load(os.path.join(b, "export_report.json"))))
    lines += ["", f"Means over the {s['images']} images; PSNR on 8-bit RGB; MS-SSIM from pytorch_msssim (data_range 255); "
              "LPIPS-alex v0.1 (offline PyTorch port, models/uigc_models/lpips.py); bpp = sum of -log2 p(token) "
              "under prior.bin / pixels. All tokens kept (no token dropping / generative completion).", "",
              "## Model", "",
              f"* encoder {rep['params_encoder']:,} parameters, decoder {rep['params_decoder']:,} parameters, "
              f"code dimension {rep['hparams']['code_dim']} (l2-normalised), K={rep['k']}",
              f"* architecture hparams: `{json.dumps(rep['hparams'])}`",
              f"* checkpoint: `{rep['ckpt']}` (step {rep['step']}, {rep['train_minutes']:.1f} training minutes)",
              f"* prior: {rep['prior_tokens']:,} tokens from {rep['prior_train_images']} training images, "
              f"{rep['prior_codes_used']}/{rep['k']} codes seen",
              f"* files: " + ", ".join(f"`{f}` {v['bytes'] / 1e6:.2f} MB" for f, v in rep["files"].items()),
              f"* ONNX check: indices identical to torch on all checks: {rep['all_indices_identical']}; "
              f"max decoder difference {rep['max_decoder_diff']:.1e}",
              f"* onnxruntime CPU time per Kodak image ({s['threads']} threads): encoder {s['mean_encoder_s']:.2f} s, "
              f"decoder {s['mean_decoder_s']:.2f} s", ""]
    if args.notes:
        lines += [open(args.notes).read().rstrip(), ""]
    out = os.path.join(args.bundle, "MODEL_CARD.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
