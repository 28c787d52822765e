"""What a candidate decoder would cost a receiver, before it is shipped.

    python -m uigc_models.decoder_cost CKPT [--bundle uigc-small] [--threads 1] [--tokens 32x64]

Exports the checkpoint's decoder as the bundle's decoder graph would be (float), quantises it the way
`fast_decoder` does (static int8, calibrated on training photos), and times both next to the bundle's
shipped `tokenizer_decoder.onnx` and `tokenizer_decoder_fast.onnx` on one random token grid (default
32x64 tokens = 1024x512 px, the largest frame of the default work limit: issue 15's worst valid
packet). Prints CPU and wall seconds per decode (median of 3 after a warm-up) and the PSNR of each
int8 graph against its float one on the same tokens. The checkpoint's decoder may use any `Up` mode;
the sub-pixel rewrite of `fast_decoder` applies to nearest upsampling only and is used when it does.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from .common import REPO_ROOT


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="checkpoint file or run name")
    ap.add_argument("--bundle", default="uigc-small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", default="32x64", help="token grid ROWSxCOLS")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from .bundle import read_manifest
    from .export import OnnxDecoder, export_decoder_graph, load_tokenizer, resolve_ckpt
    from .fast_decoder import calibration_tokens, psnr_levels, quantise, subpixel

    bundle = args.bundle if os.path.isdir(args.bundle) else os.path.join(REPO_ROOT, "models", args.bundle)
    manifest = read_manifest(bundle)
    shipped = lambda section: os.path.join(bundle, manifest[section]["path"]) if section in manifest else None
    tok, _ = load_tokenizer(resolve_ckpt(args.ckpt))
    modes = sorted({m.mode for m in tok.decoder.modules() if hasattr(m, "mode")})
    n_sub = subpixel(tok.decoder)
    print(f"{args.ckpt}: decoder upsampling {modes}, {n_sub} blocks in sub-pixel form")
    rows, cols = (int(v) for v in args.tokens.split("x"))
    tokens = np.random.default_rng(1).integers(0, tok.quant.embed.shape[0], (1, rows, cols)).astype(np.int64)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    pictures = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = export_decoder_graph(OnnxDecoder(tok), os.path.join(tmp, "f32.onnx"))
        calib = calibration_tokens(shipped("tokenizer_encoder"))
        i8 = quantise(f32, os.path.join(tmp, "int8.onnx"), [{"indices": t} for t in calib])
        graphs = [("shipped full", shipped("tokenizer_decoder")), ("shipped fast", shipped("tokenizer_decoder_fast")),
                  ("candidate float", f32), ("candidate int8", i8)]
        for name, path in graphs:
            if path is None:
                print(f"{name:16s} (not in the bundle)")
                continue
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            s.run(None, {"indices": tokens})
            runs = []
            for _ in range(3):
                c0, w0 = time.process_time(), time.time()
                y = s.run(None, {"indices": tokens})[0]
                runs.append((time.process_time() - c0, time.time() - w0))
            pictures[name] = y
            print(f"{name:16s} CPU {np.median([c for c, _ in runs]):.3f} s  wall {np.median([w for _, w in runs]):.3f} s"
                  f"  ({rows}x{cols} tokens, {args.threads} thread(s))")
    for a, b in (("shipped full", "shipped fast"), ("candidate float", "candidate int8")):
        if a in pictures and b in pictures:
            print(f"{b} against {a}: PSNR {psnr_levels(pictures[a], pictures[b]):.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
