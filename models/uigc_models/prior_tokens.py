"""Token grids for training / evaluating the prior, cached as .npz.

    python -m uigc_models.prior_tokens --bundle ../models/uigc-small

Runs the bundle's tokenizer_encoder.onnx (onnxruntime, CPU) on ../shared/data/train ONLY (full
images, horizontal flips, 0.75x Lanczos downscales and their flips) -> train.npz, and on the 24
Kodak images (evaluation only, never for training) -> kodak.npz, in
~/.cache/uigc/tokens/<bundle-id>/ where bundle-id = <bundle dir name>-<encoder sha256[:12]>.

Dev mode: --onnx path/to/tokenizer_encoder.onnx --id name (e.g. a smoke export of a checkpoint).
Each .npz holds arrays g00000, g00001, ... (int16 [rows, cols]) and `names`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

from .bundle import MEAN, STD, sha256_file
from .common import CACHE_ROOT, DATA_ROOT
from .data import list_kodak, list_train_images, load_rgb

TOKENS_ROOT = os.path.join(CACHE_ROOT, "tokens")


def pad16(a):
    h, w = a.shape[:2]
    return np.pad(a, ((0, (-h) % 16), (0, (-w) % 16), (0, 0)), mode="edge")


def to_net(a_u8):
    x = (a_u8.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def session(onnx_path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def encode(sess, a_u8):
    return sess.run(["indices"], {"image": to_net(pad16(a_u8))})[0][0].astype(np.int16)


def bundle_id(bundle_dir):
    enc = os.path.join(bundle_dir, "tokenizer_encoder.onnx")
    return f"{os.path.basename(os.path.abspath(bundle_dir).rstrip('/'))}-{sha256_file(enc)[:12]}"


def save_grids(path, grids, names):
    d = {f"g{i:05d}": g for i, g in enumerate(grids)}
    d["names"] = np.array(names)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **d)
    os.replace(tmp, path)


def load_grids(path):
    z = np.load(path)
    keys = sorted(k for k in z.files if k.startswith("g"))
    return [z[k].astype(np.int64) for k in keys], list(z["names"])


def variants(a, scales):
    yield "", a
    yield "@flip", a[:, ::-1]
    for s in scales:
        im = Image.fromarray(a).resize((max(16, round(a.shape[1] * s)), max(16, round(a.shape[0] * s))),
                                       Image.LANCZOS)
        b = np.asarray(im)
        yield f"@{s}", b
        yield f"@{s}flip", b[:, ::-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle dir with tokenizer_encoder.onnx")
    ap.add_argument("--onnx", help="encoder onnx (dev mode; needs --id)")
    ap.add_argument("--id", help="cache id (default: from the bundle)")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scales", default="0.75")
    ap.add_argument("--limit", type=int, default=0, help="only the first N train images (smoke)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-kodak", action="store_true")
    args = ap.parse_args(argv)
    if args.bundle:
        onnx_path = os.path.join(args.bundle, "tokenizer_encoder.onnx")
        bid = args.id or bundle_id(args.bundle)
    else:
        onnx_path, bid = args.onnx, args.id
        assert onnx_path and bid, "--bundle or --onnx + --id"
    out = os.path.join(TOKENS_ROOT, bid)
    os.makedirs(out, exist_ok=True)
    sess = session(onnx_path, args.threads)
    scales = [float(s) for s in args.scales.split(",") if s]
    t0 = time.time()
    if not args.skip_kodak:
        grids, names = [], []
        for p in list_kodak(args.data_root):
            grids.append(encode(sess, load_rgb(p)))
            names.append(os.path.basename(p))
        save_grids(os.path.join(out, "kodak.npz"), grids, names)
        print(f"kodak: {len(grids)} grids, {sum(g.size for g in grids)} tokens, {time.time() - t0:.0f}s",
              flush=True)
    if not args.skip_train:
        files = list_train_images(args.data_root)
        if args.limit:
            files = files[:args.limit]
        grids, names = [], []
        for i, p in enumerate(files):
            a = load_rgb(p)
            rel = os.path.relpath(p, args.data_root)
            for suf, b in variants(a, scales):
                grids.append(encode(sess, np.ascontiguousarray(b)))
                names.append(rel + suf)
            if i % 50 == 0:
                print(f"train {i}/{len(files)} {time.time() - t0:.0f}s", flush=True)
        save_grids(os.path.join(out, "train.npz"), grids, names)
        print(f"train: {len(grids)} grids, {sum(g.size for g in grids)} tokens, {time.time() - t0:.0f}s",
              flush=True)
    with open(os.path.join(out, "SOURCE.txt"), "w") as f:
        f.write(f"encoder {os.path.abspath(onnx_path)} sha256 {sha256_file(onnx_path)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
