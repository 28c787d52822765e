"""Smooth decoder: a tokenizer decoder without the 8-pixel grid, for receivers that choose it.

    python -m uigc_models.smooth_decoder install BUNDLE CKPT [--version V] [--threads 1]

The bundle's decoder upsamples by nearest neighbour and draws a periodic 8-pixel cross-hatch
(models/README.md "The 8-pixel grid"). A decoder with bilinear upsampling, trained with the grid
loss from the bundle's own import with the encoder and codebook frozen (`train.py --up-mode
bilinear --w-grid 1000 --grid-scope crop --freeze-encoder ...`, run `tok-k256-bil-gridc3`), has
none. `install` exports it as `tokenizer_decoder_smooth.onnx` (and, when the bundle has a tile
graph, its tile graph as `tokenizer_decoder_tile_smooth.onnx`) with the manifest tables
[tokenizer_decoder_smooth] / [tokenizer_decoder_tile_smooth] (docs/bundle.md "Smooth decoder").
They are not part of the model id: tokens, prior and packets are the bundle's, only the receiver
chooses them (`uigc decode --decoder smooth`, `uigcdec decoder=smooth`).

Before writing the manifest it checks that the checkpoint's codebook is the bundle's and that the
bundle's encoder (onnxruntime) picks the checkpoint's tokens on random and training inputs (so its
decoder was trained on the tokens the bundle's senders send), that onnxruntime renders what torch
renders, and the tile graph's contract (tiled.check_tile_graph). Writes smooth_report.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .bundle import read_manifest, set_optional_file
from .common import DATA_ROOT, set_threads

DECODER_FILE = "tokenizer_decoder_smooth.onnx"
TILE_FILE = "tokenizer_decoder_tile_smooth.onnx"
REPORT_FILE = "smooth_report.json"


def install(bundle_dir: str, ckpt: str, version: str | None = None, threads: int = 1, log=print) -> dict:
    import onnxruntime as ort

    from .dense import check_codebook
    from .export import OnnxDecoder, export_decoder_graph, load_tokenizer, resolve_ckpt, verify
    from .tiled import check_tile_graph, export_tile_graph

    tok, ck = load_tokenizer(resolve_ckpt(ckpt))
    if tok.factor != 16:
        raise ValueError(f"{ckpt}: a factor-{tok.factor} tokenizer; the smooth decoder renders the f=16 grid")
    diff = check_codebook(tok, bundle_dir)
    m = read_manifest(bundle_dir)
    dec_p = export_decoder_graph(OnnxDecoder(tok), os.path.join(bundle_dir, DECODER_FILE))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = lambda p: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])  # noqa: E731
    enc = sess(os.path.join(bundle_dir, m["tokenizer_encoder"]["path"]))
    rep = verify(tok, enc, sess(dec_p), DATA_ROOT, logging.getLogger(__name__), n_images=2,
                 sizes=((32, 48), (128, 192)))
    rep.update({"ckpt": ckpt, "step": ck.get("step"), "train_minutes": ck.get("train_seconds", 0) / 60,
                "up_mode": tok.hparams.get("up_mode", "nearest"), "codebook_max_diff": diff})
    if not rep["all_indices_identical"]:
        os.remove(dec_p)
        raise ValueError(f"{ckpt}: its encoder picks other tokens than the bundle's encoder: a smooth decoder must "
                         "be trained with --freeze-encoder from the bundle's import (onnx_import)")
    if not rep["all_shapes_ok"] or rep["max_decoder_diff"] > 1e-3:
        os.remove(dec_p)
        raise ValueError(f"onnxruntime disagrees with torch: {rep['checks']}")
    if "tokenizer_decoder_tile" in m:
        export_tile_graph(tok, bundle_dir, name=TILE_FILE)
        rep["tile"] = check_tile_graph(bundle_dir, decoder_file=DECODER_FILE, tile_file=TILE_FILE)
        if rep["tile"]["own_stats_vs_decoder_max_abs"] > 1e-3 or rep["tile"]["given_stats_vs_decoder_max_abs"] > 1e-3:
            raise ValueError(f"the smooth tile graph does not render what the smooth decoder renders: {rep['tile']}")
    set_optional_file(bundle_dir, "tokenizer_decoder_smooth", DECODER_FILE, version)
    if "tokenizer_decoder_tile" in m:
        set_optional_file(bundle_dir, "tokenizer_decoder_tile_smooth", TILE_FILE)
    with open(os.path.join(bundle_dir, REPORT_FILE), "w") as f:
        json.dump(rep, f, indent=1)
        f.write("\n")
    log(f"{bundle_dir}: {DECODER_FILE}{' + ' + TILE_FILE if 'tile' in rep else ''} from {ckpt} (step {rep['step']}, "
        f"{rep['train_minutes']:.1f} min, {rep['up_mode']} upsampling); onnxruntime = torch on "
        f"{len(rep['checks'])} inputs (max |diff| {rep['max_decoder_diff']:.1e})")
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="export CKPT's decoder into BUNDLE as its smooth decoder")
    p.add_argument("bundle", help="bundle directory or name under models/")
    p.add_argument("ckpt", help="checkpoint file or run name")
    p.add_argument("--version", help="new bundle version string")
    p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from .dense import resolve_bundle
    set_threads(args.threads)
    install(resolve_bundle(args.bundle), args.ckpt, args.version, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
