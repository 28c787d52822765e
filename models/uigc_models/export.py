"""Export a trained tokenizer checkpoint to a uigc bundle (docs/bundle.md) and verify it.

    python -m uigc_models.export --ckpt tok-k256-a --out ../models/uigc-small --name uigc-small

--ckpt is a checkpoint file or a run name (-> ~/.cache/uigc/runs/<run>/last.pt). Writes
tokenizer_encoder.onnx / tokenizer_decoder.onnx (opset 17, dynamic H, W), the optional tile graph
tokenizer_decoder_tile.onnx (tiled rendering, uigc_models/tiled.py), prior.bin (unigram
token frequencies counted on the TRAIN set, +1 smoothing), manifest.toml (sha256 of every file),
golden/ vectors, and export_report.json; then checks onnxruntime against torch (identical indices
on training photos and on random images of 32x48 and 512x768).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .bundle import MEAN, STD, read_prior_bin, save_json_compat, sha256_file, write_golden, write_manifest, \
    write_prior_bin
from .common import DATA_ROOT, REPO_ROOT, RUNS_ROOT, set_threads, setup_logging, write_config
from .data import list_train_images, load_rgb
from .model import Tokenizer

OPSET = 17


class OnnxEncoder(nn.Module):
    """image [1,3,H,W] (normalised) -> indices int64 [1,H/16,W/16] (argmin inside the graph)."""

    def __init__(self, tok: Tokenizer):
        super().__init__()
        self.encoder = tok.encoder
        self.register_buffer("codebook_t", tok.quant.embed.detach().t().contiguous().clone())
        self.register_buffer("codebook_sqnorm", (tok.quant.embed.detach() ** 2).sum(1).clone())

    def forward(self, image):
        z = F.normalize(self.encoder(image), dim=1, eps=1e-6)
        zt = z.permute(0, 2, 3, 1)
        d = self.codebook_sqnorm - 2.0 * torch.matmul(zt, self.codebook_t)
        return torch.argmin(d, dim=3)


class OnnxDecoder(nn.Module):
    """indices int64 [1,h,w] -> image [1,3,16h,16w] (normalised space, not clamped)."""

    def __init__(self, tok: Tokenizer):
        super().__init__()
        self.decoder = tok.decoder
        self.register_buffer("codebook", tok.quant.embed.detach().clone())

    def forward(self, indices):
        q = F.embedding(indices, self.codebook).permute(0, 3, 1, 2)
        return self.decoder(q)


def resolve_ckpt(spec: str) -> str:
    if os.path.isfile(spec):
        return spec
    p = os.path.join(RUNS_ROOT, spec, "last.pt")
    if os.path.isfile(p):
        return p
    raise FileNotFoundError(f"no checkpoint file or run named {spec!r} ({p})")


def load_tokenizer(ckpt_path: str) -> tuple[Tokenizer, dict]:
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    tok = Tokenizer(**ck["hparams"])
    tok.load_state_dict(ck["model"])
    tok.eval()
    return tok, ck


def pad16(a: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Edge-replicate an HxWx3 image to multiples of 16 (what the Rust core does; `multiple` 8 for the
    dense graphs)."""
    h, w = a.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return a


def to_net(a_u8: np.ndarray) -> np.ndarray:
    x = (a_u8.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def finalize_onnx(path: str) -> str:
    """Check an exported graph and strip the producer's version, so the file does not change with
    the torch build."""
    import onnx
    m = onnx.load(path)
    onnx.checker.check_model(m)
    m.producer_version = ""
    m.doc_string = ""
    onnx.save(m, path)
    return path


def export_encoder_graph(encoder: nn.Module, path: str) -> str:
    """An encoder module (image [1,3,H,W] -> indices int64 [1,H/16,W/16]) as the bundle's encoder graph."""
    with torch.no_grad():
        torch.onnx.export(encoder.eval(), (torch.zeros(1, 3, 64, 96),), path, dynamo=False,
                          opset_version=OPSET, input_names=["image"], output_names=["indices"],
                          dynamic_axes={"image": {2: "H", 3: "W"}, "indices": {1: "h", 2: "w"}},
                          do_constant_folding=True)
    return finalize_onnx(path)


def export_decoder_graph(decoder: nn.Module, path: str) -> str:
    """A decoder module (indices int64 [1,h,w] -> image [1,3,16h,16w]) as a bundle decoder graph."""
    with torch.no_grad():
        torch.onnx.export(decoder.eval(), (torch.zeros(1, 4, 6, dtype=torch.long),), path, dynamo=False,
                          opset_version=OPSET, input_names=["indices"], output_names=["image"],
                          dynamic_axes={"indices": {1: "h", 2: "w"}, "image": {2: "H", 3: "W"}},
                          do_constant_folding=True)
    return finalize_onnx(path)


def export_graphs(encoder: nn.Module, decoder: nn.Module, out_dir: str) -> tuple[str, str]:
    """Write tokenizer_encoder.onnx / tokenizer_decoder.onnx from two torch modules with the bundle's I/O
    (encoder: image [1,3,H,W] -> indices int64 [1,H/16,W/16]; decoder: the reverse), opset 17, dynamic H, W."""
    enc_p = export_encoder_graph(encoder, os.path.join(out_dir, "tokenizer_encoder.onnx"))
    return enc_p, export_decoder_graph(decoder, os.path.join(out_dir, "tokenizer_decoder.onnx"))


def export_onnx(tok: Tokenizer, out_dir: str) -> tuple[str, str]:
    return export_graphs(OnnxEncoder(tok), OnnxDecoder(tok), out_dir)


def ort_sessions(bundle_dir: str, threads: int = 2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    mk = lambda f: ort.InferenceSession(os.path.join(bundle_dir, f), so, providers=["CPUExecutionProvider"])
    return mk("tokenizer_encoder.onnx"), mk("tokenizer_decoder.onnx")


def count_train_tokens(enc_sess, k: int, data_root: str, log, limit: int = 0) -> tuple[np.ndarray, int]:
    from tqdm import tqdm
    files = list_train_images(data_root)
    if limit:
        files = files[:limit]
    counts = np.zeros(k, np.int64)
    for p in tqdm(files, desc="count train tokens", mininterval=10, file=sys.stderr):
        idx = enc_sess.run(["indices"], {"image": to_net(pad16(load_rgb(p)))})[0]
        counts += np.bincount(idx.ravel(), minlength=k)
    log.info(f"train-set token counts: {counts.sum()} tokens from {len(files)} images, "
             f"{int((counts > 0).sum())}/{k} codes used")
    return counts, len(files)


def verify(tok, enc_sess, dec_sess, data_root: str, log, n_images: int = 3,
           sizes=((32, 48), (512, 768)), factor: int = 16) -> dict:
    """onnxruntime against torch: `tok` is any model with encode_indices(x) / decode_indices(idx) at
    `factor` pixels per token."""
    rng = np.random.default_rng(0)
    rep = {"checks": []}
    inputs = []
    for hw in sizes:
        hw = tuple(hw)
        inputs.append((f"random {hw[0]}x{hw[1]}", np.clip(rng.normal(0, 0.6, (1, 3) + hw), -1, 1).astype(np.float32)))
    files = list_train_images(data_root) if n_images else []
    for i in (rng.choice(len(files), n_images, replace=False) if n_images else []):
        inputs.append((os.path.relpath(files[i], data_root), to_net(pad16(load_rgb(files[i]), factor))))
    for name, x in inputs:
        a = enc_sess.run(["indices"], {"image": x})[0]
        with torch.no_grad():
            b = tok.encode_indices(torch.from_numpy(x)).numpy()
            yt = tok.decode_indices(torch.from_numpy(a)).numpy()
        y = dec_sess.run(["image"], {"indices": a})[0]
        h, w = x.shape[2:]
        ok_shape = a.shape == (1, h // factor, w // factor) and a.dtype == np.int64 and y.shape == (1, 3, h, w) \
            and y.dtype == np.float32
        same = float((a == b).mean())
        dmax = float(np.abs(y - yt).max())
        rep["checks"].append({"input": name, "shape": [int(h), int(w)], "indices_equal_frac": same,
                              "decoder_max_abs_diff": dmax, "shapes_ok": bool(ok_shape)})
        log.info(f"verify {name}: {h}x{w} indices identical {same * 100:.2f}%, decoder max|diff| {dmax:.2e}, "
                 f"shapes {'ok' if ok_shape else 'WRONG'}")
    rep["all_indices_identical"] = all(c["indices_equal_frac"] == 1.0 for c in rep["checks"])
    rep["all_shapes_ok"] = all(c["shapes_ok"] for c in rep["checks"])
    rep["max_decoder_diff"] = max(c["decoder_max_abs_diff"] for c in rep["checks"])
    return rep


SAMPLE_IMAGE = os.path.join(REPO_ROOT, "docs", "sample", "kodim23.png")  # = ../shared/data/kodak/kodim23.png
GOLDEN_SOURCE = "kodim23.png crop rows 192:320, cols 288:480"


def golden_input() -> np.ndarray:
    """A 128x192 crop of kodim23 (docs/sample/, the repository's one allowed Kodak sample image)."""
    return np.ascontiguousarray(load_rgb(SAMPLE_IMAGE)[192:320, 288:480])


def write_unigram_prior(out_dir: str, counts: np.ndarray) -> dict:
    """prior.bin from token counts (+1 smoothing, so every code stays codable); returns its statistics."""
    counts = np.asarray(counts, np.int64)
    weights = counts + 1
    if weights.max() >= 2 ** 32:
        raise ValueError("token counts overflow u32")
    path = os.path.join(out_dir, "prior.bin")
    write_prior_bin(path, weights)
    assert (read_prior_bin(path) == weights).all()
    p = weights / weights.sum()
    return {"prior_tokens": int(counts.sum()), "prior_codes_used": int((counts > 0).sum()),
            "prior_entropy_bits": float(-(p * np.log2(p)).sum())}


def bundle_files_report(out_dir: str) -> dict:
    return {f: {"bytes": os.path.getsize(os.path.join(out_dir, f)), "sha256": sha256_file(os.path.join(out_dir, f))}
            for f in ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "tokenizer_decoder_tile.onnx", "prior.bin",
                      "manifest.toml") if os.path.exists(os.path.join(out_dir, f))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint file or run name")
    ap.add_argument("--out", required=True, help="bundle directory to write")
    ap.add_argument("--name", default=None, help="bundle name (default: basename of --out)")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--prior-limit", type=int, default=0, help="count only the first N train images (smoke)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-golden", action="store_true")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    name = args.name or os.path.basename(out.rstrip("/"))
    log = setup_logging(out, "export.log")
    ckpt = resolve_ckpt(args.ckpt)
    tok, ck = load_tokenizer(ckpt)
    write_config(out, args, "export_config.json", extra={"ckpt_resolved": ckpt, "up_mode": tok.hparams["up_mode"]},
                 keep_previous=False)
    k = tok.quant.k
    log.info(f"exporting {ckpt} (step {ck.get('step')}, {ck.get('train_seconds', 0) / 60:.1f} train min, K={k}) "
             f"-> {out}")
    t0 = time.time()
    export_onnx(tok, out)
    from .tiled import TILE_FILE, check_tile_graph, export_tile_graph
    export_tile_graph(tok, out)
    enc_sess, dec_sess = ort_sessions(out, args.threads)
    rep = verify(tok, enc_sess, dec_sess, args.data_root, log)
    rep["tile_graph"] = check_tile_graph(out, k=k)
    log.info(f"tile graph {TILE_FILE}: {rep['tile_graph']}")
    if not (rep["all_indices_identical"] and rep["all_shapes_ok"]):
        log.error("onnxruntime disagrees with torch (see export_report.json)")
    counts, n_imgs = count_train_tokens(enc_sess, k, args.data_root, log, args.prior_limit)
    rep.update(write_unigram_prior(out, counts))
    write_manifest(out, name=name, version=args.version, k=k, levels=args.levels, tile=TILE_FILE)
    rep.update({
        "ckpt": ckpt, "step": ck.get("step"), "train_minutes": ck.get("train_seconds", 0) / 60,
        "hparams": ck["hparams"], "k": k,
        "params_encoder": sum(q.numel() for q in tok.encoder.parameters()),
        "params_decoder": sum(q.numel() for q in tok.decoder.parameters()),
        "prior_train_images": n_imgs,
        "files": bundle_files_report(out),
        "export_seconds": time.time() - t0,
    })
    if not args.no_golden:
        rep["golden"] = write_golden(out, golden_input(), extra={"source": GOLDEN_SOURCE})
    save_json_compat(os.path.join(out, "export_report.json"), rep)
    total = sum(v["bytes"] for v in rep["files"].values())
    log.info(f"bundle {out}: {total / 1e6:.2f} MB, prior entropy {rep['prior_entropy_bits']:.3f} bits/token, "
             f"indices identical: {rep['all_indices_identical']}")
    return 0 if rep["all_indices_identical"] and rep["all_shapes_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
