"""Rebuild a train.py checkpoint from an exported bundle's ONNX graphs (when the PyTorch checkpoint is lost).

    python -m uigc_models.onnx_import --bundle uigc-small --out ~/.cache/uigc/runs/uigc-small-0.3.0.pt

The exporter (export.py) writes the Tokenizer's encoder and decoder weights as ONNX initializers named
after the state_dict (`encoder.net.0.weight`, ...), the GroupNorm affine parameters as anonymous
`onnx::Mul_*` / `onnx::Add_*` initializers after an InstanceNormalization (found here by the
node's scope, `/decoder/net/net.1/n1/Mul` -> `decoder.net.1.n1.weight`), and the codebook as
`codebook` (decoder) and `codebook_t` / `codebook_sqnorm` (encoder). The architecture (k, code_dim,
enc_ch/enc_res, dec_ch/dec_res, up_mode) is read off the graphs. The result is the dict train.py saves
(model, args, hparams, step, train_seconds, ...; no optimiser state): use it with
`train.py --init-from`, `spot_check`, `export`, `average`. EMA statistics of the codebook are not in
the bundle (embed_avg = embed, cluster_size = 1), which only matters for joint training.

Verification (default on): PyTorch against onnxruntime on Kodak crops (indices identical, decoder
max |diff| <= 1e-4), written into the checkpoint's `imported` entry.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch

from .common import DATA_ROOT, set_threads
from .model import Tokenizer


def _scope_to_module(scope: str) -> str:
    """'/decoder/net/net.1/n1' -> 'decoder.net.1.n1' (torch.onnx scopes repeat the Sequential's name)."""
    comps = [c for c in scope.strip("/").split("/") if c]
    out = []
    for i, c in enumerate(comps):
        if i + 1 < len(comps) and re.fullmatch(r"net\.\d+", comps[i + 1]) and c == "net":
            continue
        out.append(c)
    return ".".join(out)


def _initializers(model) -> dict[str, np.ndarray]:
    """Initializers, plus Constant node outputs and Identity aliases of either (torch.onnx deduplicates
    equal tensors, e.g. the all-ones GroupNorm weights of an untrained model, through Identity nodes)."""
    from onnx import numpy_helper
    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.op_type == "Identity" and n.input[0] in vals and n.output[0] not in vals:
                vals[n.output[0]] = vals[n.input[0]]
                changed = True
    return vals


def _groupnorm_params(model, inits: dict) -> dict[str, np.ndarray]:
    """GroupNorm affine parameters: InstanceNormalization -> Reshape -> Mul(gamma) -> Add(beta)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {}
    for n in model.graph.node:
        if n.op_type != "InstanceNormalization":
            continue
        (resh,) = [c for c in consumers[n.output[0]] if c.op_type == "Reshape"]
        (mul,) = [c for c in consumers[resh.output[0]] if c.op_type == "Mul"]
        (add,) = [c for c in consumers[mul.output[0]] if c.op_type == "Add"]
        gamma = [inits[i] for i in mul.input if i in inits]
        beta = [inits[i] for i in add.input if i in inits]
        assert len(gamma) == 1 and len(beta) == 1, f"unexpected GroupNorm pattern at {n.name}"
        mod = _scope_to_module(n.name.rsplit("/", 1)[0])
        out[mod + ".weight"] = gamma[0].reshape(-1)
        out[mod + ".bias"] = beta[0].reshape(-1)
    return out


def _up_mode(dec_model) -> str:
    modes = set()
    for n in dec_model.graph.node:
        if n.op_type == "Resize":
            a = {x.name: x for x in n.attribute}
            m = a["mode"].s.decode() if "mode" in a else "nearest"
            modes.add({"nearest": "nearest", "linear": "bilinear"}[m])
    if len(modes) != 1:
        raise ValueError(f"decoder Resize modes {modes}: expected one")
    return modes.pop()


def _arch(sd: dict[str, np.ndarray], prefix: str, n_stages: int) -> tuple[list[int], list[int]]:
    """Channels and residual-block counts per stage from the Sequential's keys.
    Encoder: conv(4x4) res* conv(2x2) res* conv(2x2) res* gn silu conv(1x1).
    Decoder: conv res* [Up res*]* gn silu conv."""
    idx = sorted({int(k.split(".")[2]) for k in sd if k.startswith(prefix + ".net.")})
    ch, res = [], []
    for i in idx:
        p = f"{prefix}.net.{i}"
        if p + ".c1.weight" in sd:
            res[-1] += 1
        elif p + ".conv.weight" in sd:             # decoder Up
            ch.append(int(sd[p + ".conv.weight"].shape[0]))
            res.append(0)
        elif p + ".weight" in sd and sd[p + ".weight"].ndim == 4:
            kh = sd[p + ".weight"].shape[2]
            if len(ch) < n_stages and (prefix == "decoder" and not ch or prefix == "encoder" and kh in (4, 2)):
                ch.append(int(sd[p + ".weight"].shape[0]))
                res.append(0)
    return ch, res


def import_bundle(bundle: str) -> tuple[Tokenizer, dict]:
    import onnx
    enc = onnx.load(os.path.join(bundle, "tokenizer_encoder.onnx"))
    dec = onnx.load(os.path.join(bundle, "tokenizer_decoder.onnx"))
    ei, di = _initializers(enc), _initializers(dec)
    sd = {k: v for k, v in list(ei.items()) + list(di.items()) if k.startswith(("encoder.", "decoder."))}
    sd.update(_groupnorm_params(enc, ei))
    sd.update(_groupnorm_params(dec, di))
    codebook = di["codebook"]
    if not np.array_equal(ei["codebook_t"].T, codebook):
        raise ValueError("encoder and decoder codebooks differ")
    k, code_dim = codebook.shape
    enc_ch, enc_res = _arch(sd, "encoder", 3)
    dec_ch, dec_res = _arch(sd, "decoder", 5)
    up_mode = _up_mode(dec)
    hp = dict(k=int(k), code_dim=int(code_dim), enc_ch=enc_ch, enc_res=enc_res, dec_ch=dec_ch, dec_res=dec_res,
              ema_decay=0.99, up_mode=up_mode)
    tok = Tokenizer(**hp)
    full = tok.state_dict()
    missing = [key for key in full if not key.startswith("quant.") and key not in sd]
    extra = [key for key in sd if key not in full]
    if missing or extra:
        raise ValueError(f"ONNX -> state_dict mapping incomplete: missing {missing[:8]}, unexpected {extra[:8]}")
    new = {key: torch.from_numpy(np.array(sd[key], copy=True)).to(full[key].dtype).reshape(full[key].shape)
           for key in full if not key.startswith("quant.")}
    cb = torch.from_numpy(np.array(codebook, np.float32))
    new.update({"quant.embed": cb.clone(), "quant.embed_avg": cb.clone(), "quant.cluster_size": torch.ones(k),
                "quant.initted": torch.tensor(1, dtype=torch.uint8)})
    tok.load_state_dict(new)
    tok.eval()
    return tok, hp


def checkpoint_dict(tok: Tokenizer, hp: dict, bundle: str, verify_report: dict | None) -> dict:
    """The dict train.py saves (no optimiser): enough for --init-from, spot_check, export, average."""
    from .train import build_parser
    args = vars(build_parser().parse_args(["--run", "imported"]))
    args.update({key: hp[key] for key in ("k", "code_dim", "enc_ch", "enc_res", "dec_ch", "dec_res", "ema_decay",
                                          "up_mode")})
    step, train_seconds = 0, 0.0
    rep_p = os.path.join(bundle, "export_report.json")
    if os.path.exists(rep_p):   # the exported checkpoint's own counters, when the bundle kept them
        rep = json.load(open(rep_p))
        step = int(rep.get("step") or 0)
        train_seconds = float(rep.get("train_minutes") or 0.0) * 60
    man = {}
    try:
        from .bundle import read_manifest
        man = read_manifest(bundle)
    except Exception:  # noqa: BLE001 - provenance only
        pass
    return {"model": tok.state_dict(), "step": step, "train_seconds": train_seconds, "args": args,
            "hparams": dict(hp), "last_used": torch.zeros(hp["k"], dtype=torch.long), "rng": torch.get_rng_state(),
            "disc": None, "d_opt": None,
            "imported": {"bundle": os.path.abspath(bundle), "name": man.get("name"), "version": man.get("version"),
                         "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "verify": verify_report}}


def kodak_crops(data_root: str = DATA_ROOT, n: int = 3, size=(128, 192), seed: int = 0) -> list[np.ndarray]:
    from .data import list_kodak, load_rgb
    rng = np.random.default_rng(seed)
    files = list_kodak(data_root)
    out = []
    for i in rng.choice(len(files), n, replace=False):
        a = load_rgb(files[i])
        y = int(rng.integers(0, (a.shape[0] - size[0]) // 16 + 1)) * 16
        x = int(rng.integers(0, (a.shape[1] - size[1]) // 16 + 1)) * 16
        out.append(np.ascontiguousarray(a[y:y + size[0], x:x + size[1]]))
    return out


@torch.no_grad()
def verify(tok: Tokenizer, bundle: str, crops: list[np.ndarray], threads: int = 1) -> dict:
    """onnxruntime (the bundle) against the rebuilt PyTorch model on 8-bit RGB crops (sides multiples of 16)."""
    from .export import ort_sessions, to_net
    enc, dec = ort_sessions(bundle, threads)
    rows = []
    for a in crops:
        x = to_net(a)
        ia = enc.run(["indices"], {"image": x})[0]
        ib = tok.encode_indices(torch.from_numpy(x)).numpy()
        ya = dec.run(["image"], {"indices": ia})[0]
        yb = tok.decode_indices(torch.from_numpy(ia)).numpy()
        rows.append({"shape": list(a.shape[:2]), "indices_equal_frac": float((ia == ib).mean()),
                     "decoder_max_abs_diff": float(np.abs(ya - yb).max())})
    return {"crops": rows, "all_indices_identical": all(r["indices_equal_frac"] == 1.0 for r in rows),
            "max_decoder_diff": max(r["decoder_max_abs_diff"] for r in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", required=True, help="checkpoint file to write")
    ap.add_argument("--data-root", default=DATA_ROOT)
    ap.add_argument("--crops", type=int, default=4, help="Kodak crops for the check (0: no check)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    tok, hp = import_bundle(args.bundle)
    print(f"rebuilt {args.bundle}: {json.dumps(hp)}")
    rep = None
    if args.crops:
        crops = kodak_crops(args.data_root, args.crops) + [kodak_crops(args.data_root, 1, (512, 768), seed=1)[0]]
        rep = verify(tok, args.bundle, crops, args.threads)
        for r in rep["crops"]:
            print(f"  {r['shape'][0]}x{r['shape'][1]}: indices identical {r['indices_equal_frac'] * 100:.2f}%, "
                  f"decoder max|diff| {r['decoder_max_abs_diff']:.2e}")
    ck = checkpoint_dict(tok, hp, args.bundle, rep)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(ck, args.out)
    print(f"wrote {args.out} (step {ck['step']}, {ck['train_seconds'] / 60:.1f} train min)")
    if rep is not None and not (rep["all_indices_identical"] and rep["max_decoder_diff"] <= args.tol):
        print("error: the rebuilt model disagrees with the bundle", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
