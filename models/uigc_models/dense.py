"""Dense graphs: an f=8 tokenizer over the bundle's own codebook, for dense packets.

    python -m uigc_models.dense install BUNDLE CKPT [--version V] [--threads 1]
    python -m uigc_models.dense check CKPT [--bundle uigc-small] [--images six]

A dense packet carries one token per 8x8 pixels of the frame (docs/bitstream.md "Dense packets").
Without dense graphs the codec makes it with the 16x16 tokenizer on the frame upsampled 2x and
halves the decoded picture. `install` adds a tokenizer trained at f=8
(`train.py --factor 8 --freeze-codebook --init-from <the bundle's import>`) as
`tokenizer_encoder_dense.onnx` / `tokenizer_decoder_dense.onnx` and their manifest tables
([tokenizer_encoder_dense], [tokenizer_decoder_dense]; part of the model id, docs/bundle.md "Dense
graphs"), after checking that its codebook is the bundle's (the prior codes its tokens) and that
onnxruntime gives torch's indices. `check` compares, in PyTorch, a checkpoint's dense pictures with
the bundle's 2x-resampled path on Kodak images (LPIPS-alex and PSNR with the colour correction, for
choosing checkpoints; the measure is bench_codecs on real packets).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import read_manifest, set_optional_file
from .common import DATA_ROOT, REPO_ROOT, set_threads

ENCODER_FILE = "tokenizer_encoder_dense.onnx"
DECODER_FILE = "tokenizer_decoder_dense.onnx"


def resolve_bundle(spec: str) -> str:
    return spec if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "manifest.toml")) \
        else os.path.join(REPO_ROOT, "models", spec)


def load_f8(ckpt: str):
    from .export import load_tokenizer, resolve_ckpt
    tok, ck = load_tokenizer(resolve_ckpt(ckpt))
    if tok.factor != 8:
        raise ValueError(f"{ckpt}: a factor-{tok.factor} tokenizer; dense graphs need one trained with --factor 8")
    return tok, ck


def check_codebook(tok, bundle_dir: str) -> float:
    """Largest difference between the checkpoint's codebook and the bundle's (ValueError above 1e-6)."""
    import onnx
    from .onnx_import import _initializers
    m = read_manifest(bundle_dir)
    dec = _initializers(onnx.load(os.path.join(bundle_dir, m["tokenizer_decoder"]["path"])))
    cb = torch.from_numpy(np.array(dec["codebook"], np.float32))
    if tuple(cb.shape) != tuple(tok.quant.embed.shape):
        raise ValueError(f"codebook shape {tuple(tok.quant.embed.shape)} != the bundle's {tuple(cb.shape)}")
    diff = float((cb - tok.quant.embed).abs().max())
    if diff > 1e-6:
        raise ValueError(f"the checkpoint's codebook differs from the bundle's by up to {diff:.3g}: train it with "
                         "--freeze-codebook from the bundle's import (onnx_import)")
    return diff


def verify(tok, enc_path: str, dec_path: str, threads: int = 1) -> dict:
    """onnxruntime against torch (export.verify at f=8: random inputs and two training photos, never
    Kodak); `all_ok` when every index and shape agrees."""
    import logging

    import onnxruntime as ort
    from .export import verify as export_verify
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    enc = ort.InferenceSession(enc_path, so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(dec_path, so, providers=["CPUExecutionProvider"])
    rep = export_verify(tok, enc, dec, DATA_ROOT, logging.getLogger(__name__), n_images=2,
                        sizes=((40, 56),), factor=8)
    rep["all_ok"] = rep["all_indices_identical"] and rep["all_shapes_ok"]
    return rep


def write_dense_golden(bundle_dir: str, rgb_u8: np.ndarray | None = None) -> dict:
    """golden_dense/: the dense graphs on the golden input (export.golden_input, the kodim23 crop of
    docs/sample, unless given), for the Rust tests."""
    from .bundle import write_golden
    from .export import GOLDEN_SOURCE, golden_input
    extra = {"source": GOLDEN_SOURCE} if rgb_u8 is None else None
    return write_golden(bundle_dir, golden_input() if rgb_u8 is None else rgb_u8, extra=extra,
                        files=(ENCODER_FILE, DECODER_FILE), factor=8, subdir="golden_dense")


def install(bundle_dir: str, ckpt: str, version: str | None = None, threads: int = 1, log=print) -> dict:
    from .export import OnnxDecoder, OnnxEncoder, export_decoder_graph, export_encoder_graph
    tok, ck = load_f8(ckpt)
    diff = check_codebook(tok, bundle_dir)
    enc_p = export_encoder_graph(OnnxEncoder(tok), os.path.join(bundle_dir, ENCODER_FILE))
    dec_p = export_decoder_graph(OnnxDecoder(tok), os.path.join(bundle_dir, DECODER_FILE))
    rep = verify(tok, enc_p, dec_p, threads)
    rep.update({"ckpt": ckpt, "step": ck.get("step"), "train_minutes": ck.get("train_seconds", 0) / 60,
                "codebook_max_diff": diff})
    if not rep["all_ok"]:
        raise ValueError(f"onnxruntime disagrees with torch: {rep['checks']}")
    set_optional_file(bundle_dir, "tokenizer_encoder_dense", ENCODER_FILE, version)
    set_optional_file(bundle_dir, "tokenizer_decoder_dense", DECODER_FILE)
    rep["golden"] = write_dense_golden(bundle_dir)
    with open(os.path.join(bundle_dir, "dense_report.json"), "w") as f:
        json.dump(rep, f, indent=1)
        f.write("\n")
    log(f"{bundle_dir}: {ENCODER_FILE}, {DECODER_FILE} from {ckpt} (step {rep['step']}, "
        f"{rep['train_minutes']:.1f} min); onnxruntime = torch on {len(rep['checks'])} inputs")
    if "prior_dense" in read_manifest(bundle_dir):
        log(f"note: {bundle_dir} keeps its [prior_dense], trained on the previous dense graphs' tokens "
            "(still exact, but no longer fitted to them): retrain it on the new graphs' grids "
            "(models/README.md \"Dense prior\")")
    return rep


@torch.no_grad()
def check(ckpt: str, bundle_dir: str, images: str = "six", block_step=(32, 4)) -> dict:
    """Mean LPIPS-alex / PSNR (colour-corrected, 8-bit) of the checkpoint's dense pictures and of the
    bundle's 2x-resampled dense path (its f=16 tokenizer in PyTorch on the bicubic 2x frame, halved)."""
    from . import colour
    from .data import load_rgb, to_tensor_m11
    from .evaluate import psnr_u8
    from .lpips import LPIPS
    from .onnx_import import import_bundle
    from .spot_check import select_images, to_u8
    tok8, _ = load_f8(ckpt)
    tok16, _ = import_bundle(bundle_dir)
    lp = LPIPS("alex")
    res: dict[str, list] = {"dense_graphs": [], "resampled": []}
    for f in select_images(images):
        x = load_rgb(f)
        t = to_tensor_m11(x[None])
        up = F.interpolate(t, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
        outs = {"dense_graphs": tok8.decode_indices(tok8.encode_indices(t)),
                "resampled": F.avg_pool2d(tok16.decode_indices(tok16.encode_indices(up)), 2)}
        for key, y in outs.items():
            rec = to_u8(colour.correct(y.clamp(-1, 1), t, *block_step).clamp(-1, 1))
            res[key].append((float(lp(to_tensor_m11(rec[None]), t)), psnr_u8(x, rec)))
    return {k: {"lpips_alex": float(np.mean([a for a, _ in v])), "psnr": float(np.mean([b for _, b in v])),
                "images": len(v)} for k, v in res.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("install", help="add the dense graphs of an f=8 checkpoint to a bundle")
    a.add_argument("bundle")
    a.add_argument("ckpt")
    a.add_argument("--version", default=None, help="new bundle version string")
    a.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("check", help="a checkpoint's dense pictures against the bundle's resampled path")
    c.add_argument("ckpt")
    c.add_argument("--bundle", default="uigc-small")
    c.add_argument("--images", default="six")
    c.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    try:
        if args.cmd == "install":
            install(resolve_bundle(args.bundle), args.ckpt, args.version, args.threads)
        else:
            r = check(args.ckpt, resolve_bundle(args.bundle), args.images)
            for k, v in r.items():
                print(f"{k}: LPIPS-alex {v['lpips_alex']:.4f}, PSNR {v['psnr']:.2f} dB ({v['images']} images)")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
