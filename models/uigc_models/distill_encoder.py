"""Distil a cheaper tokenizer encoder that picks the same tokens as a trained one.

    python -m uigc_models.distill_encoder export CKPT OUT.onnx            # the encoder graph alone
    python -m uigc_models.distill_encoder install CKPT BUNDLE_DIR [VERSION] # into a bundle's manifest
    python -m uigc_models.distill_encoder --run enc-distil-s --teacher ~/.cache/uigc/runs/imported/uigc-small-0.3.0.pt \
        --enc-ch 32,64,128 --enc-res 1,1,2 --total-minutes 240 --threads 1

Why: the sender runs the tokenizer encoder on every frame, and at 640x480 the shipped one
(channels 64/128/192, about 4.7 GMAC per frame) is two thirds of the encoder's time on a 2-core CPU
(docs/edge.md). Only the encoder changes here: the student is trained to land on the teacher's
codeword at every position, so the codebook, the decoder and the integer prior stay as they are and
packets made with the student decode with the unchanged bundle. Disagreeing tokens are not errors in
themselves (they are usually the runner-up codeword); what matters is measured afterwards on Kodak
and vtest (bits, LPIPS, frames/s).

Loss per position: ||z_s - z_t||^2 of the l2-normalised latents, plus `--w-ce` times the cross
entropy of softmax(-||z_s - e_k||^2 / tau) against the teacher's index. The student's checkpoint
has train.py's layout (the teacher's decoder and codebook, the student's encoder and `enc_ch`), so
`export`, `spot_check` and `evaluate` take it as they take any tokenizer checkpoint. Resumable
(last.pt), SIGTERM checkpoints, checkpoints and logs under ~/.cache/uigc/runs/<run>/.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import torch
import torch.nn.functional as F

from .bundle import set_optional_file
from .common import RUNS_ROOT, Deadline, atomic_torch_save, run_dir, save_json, seed_all, set_threads, setup_logging, \
    stop_on_signals, write_config
from .data import CACHE_FILE, CropSampler, load_cache, to_tensor_m11
from .model import Encoder, Tokenizer, count_params


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-root", default=RUNS_ROOT)
    ap.add_argument("--teacher", required=True, help="tokenizer checkpoint (train.py / onnx_import layout)")
    ap.add_argument("--enc-ch", type=_ints, default=[32, 64, 128])
    ap.add_argument("--enc-res", type=_ints, default=[1, 1, 2])
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tau", type=float, default=0.05, help="temperature of the codeword cross entropy")
    ap.add_argument("--w-ce", type=float, default=0.05)
    ap.add_argument("--total-minutes", type=float, default=240.0, help="schedule length (cosine lr)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="this invocation's wall limit (0: none)")
    ap.add_argument("--ckpt-every-min", type=float, default=10.0)
    ap.add_argument("--keep-ckpts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-cache", default=CACHE_FILE)
    return ap


def tokenizer_from_args(a: dict, state: dict) -> Tokenizer:
    """The Tokenizer a checkpoint's args describe, with its weights."""
    tok = Tokenizer(a["k"], a["code_dim"], a["enc_ch"], a["enc_res"], a["dec_ch"], a["dec_res"],
                    up_mode=a.get("up_mode") or "nearest")
    tok.load_state_dict(state)
    return tok


def codeword_logits(z: torch.Tensor, embed: torch.Tensor, tau: float) -> torch.Tensor:
    """z [N, D, h, w] (normalised), embed [K, D] -> logits [N, K, h, w] = -||z - e_k||^2 / tau."""
    d = (embed ** 2).sum(1)[None, :, None, None] - 2.0 * torch.einsum("ndhw,kd->nkhw", z, embed)
    return -(d + (z ** 2).sum(1, keepdim=True)) / tau


def export_encoder(ckpt_path: str, out_path: str) -> str:
    """Write a checkpoint's encoder as the bundle's tokenizer_encoder.onnx (image -> indices, the codebook
    search inside the graph), with the same exporter settings as export.py."""
    from .export import OnnxEncoder, export_encoder_graph
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    return export_encoder_graph(OnnxEncoder(tokenizer_from_args(ck["args"], ck["model"])), out_path)


FAST_FILE = "tokenizer_encoder_fast.onnx"


def install(ckpt_path: str, bundle_dir: str, version: str | None = None) -> str:
    """Export a checkpoint's encoder into a bundle as tokenizer_encoder_fast.onnx and write (or
    replace) the manifest's [tokenizer_encoder_fast] table; `version` replaces the bundle's
    version string. The model id does not change (docs/bundle.md "Fast encoder")."""
    out = export_encoder(ckpt_path, os.path.join(bundle_dir, FAST_FILE))
    set_optional_file(bundle_dir, "tokenizer_encoder_fast", FAST_FILE, version)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        if len(argv) != 3:
            print("usage: python -m uigc_models.distill_encoder export CKPT OUT.onnx", file=sys.stderr)
            return 2
        print(export_encoder(argv[1], argv[2]))
        return 0
    if argv and argv[0] == "install":
        if len(argv) not in (3, 4):
            print("usage: python -m uigc_models.distill_encoder install CKPT BUNDLE_DIR [VERSION]", file=sys.stderr)
            return 2
        print(install(argv[1], argv[2], argv[3] if len(argv) == 4 else None))
        return 0
    args = build_parser().parse_args(argv)
    rdir = run_dir(args.run, args.runs_root)
    log = setup_logging(rdir, "distill.log")
    set_threads(args.threads)
    seed_all(args.seed)

    teacher_ck = torch.load(args.teacher, map_location="cpu", weights_only=False)
    targs = dict(teacher_ck["args"])
    teacher = tokenizer_from_args(targs, teacher_ck["model"])
    teacher.eval().requires_grad_(False)
    embed = teacher.quant.embed.detach()

    last = os.path.join(rdir, "last.pt")
    ck = torch.load(last, map_location="cpu", weights_only=False) if os.path.exists(last) else None
    if ck is not None:
        args.enc_ch, args.enc_res = ck["args"]["enc_ch"], ck["args"]["enc_res"]
    student = Encoder(args.enc_ch, targs["code_dim"], args.enc_res)
    opt = torch.optim.Adam(student.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step, train_seconds = 0, 0.0
    if ck is not None:
        student.load_state_dict({k[len("encoder."):]: v for k, v in ck["model"].items() if k.startswith("encoder.")})
        opt.load_state_dict(ck["opt"])
        step, train_seconds = ck["step"], ck["train_seconds"]
        log.info(f"resumed from {last}: step {step}, {train_seconds / 60:.1f} training minutes")
    write_config(rdir, args, extra={"torch": torch.__version__, "resumed_from": last if ck else None})
    log.info(f"teacher encoder {count_params(teacher.encoder)} params {targs['enc_ch']}/{targs['enc_res']}, "
             f"student {count_params(student)} params {args.enc_ch}/{args.enc_res}; threads {torch.get_num_threads()}")

    data = load_cache(args.data_cache)
    sampler = CropSampler(data["images"], args.crop, seed=args.seed + step)
    val_u8 = CropSampler(data["images"], args.crop, seed=777).batch(16)
    val = to_tensor_m11(val_u8)
    with torch.no_grad():
        val_idx = teacher.encode_indices(val)

    stop = stop_on_signals(log)

    def save():
        hp = dict(targs, enc_ch=list(args.enc_ch), enc_res=list(args.enc_res))
        tok_sd = {k: v for k, v in teacher.state_dict().items() if not k.startswith("encoder.")}
        tok_sd.update({"encoder." + k: v for k, v in student.state_dict().items()})
        with torch.no_grad():
            student.eval()
            zs = F.normalize(student(val), dim=1, eps=1e-6)
            student.train()
            n, d, h, w = zs.shape
            sidx = teacher.quant.nearest(zs.permute(0, 2, 3, 1).reshape(-1, d)).view(n, h, w)
        agree = (sidx == val_idx).float().mean().item()
        state = {"model": tok_sd, "opt": opt.state_dict(), "step": step, "train_seconds": train_seconds,
                 "args": hp, "hparams": hp, "distilled_from": args.teacher, "val_agreement": agree}
        atomic_torch_save(state, last)
        atomic_torch_save({k: v for k, v in state.items() if k != "opt"}, os.path.join(rdir, f"ckpt_{step:07d}.pt"))
        for p in sorted(glob.glob(os.path.join(rdir, "ckpt_*.pt")))[:-args.keep_ckpts]:
            os.remove(p)
        save_json(os.path.join(rdir, "status.json"), {"step": step, "train_minutes": train_seconds / 60,
                                                      "progress": train_seconds / total_s, "val_agreement": agree,
                                                      "time_utc": time.strftime("%H:%M:%S", time.gmtime())})
        log.info(f"checkpoint step {step} ({train_seconds / 60:.1f} min): tokens agreeing with the teacher on "
                 f"16 fixed train crops {100 * agree:.2f} % -> {last}")

    deadline = Deadline(args.max_minutes)
    total_s = args.total_minutes * 60.0
    last_ckpt = time.time()
    acc = {"mse": 0.0, "ce": 0.0, "agree": 0.0, "n": 0}
    metrics_f = open(os.path.join(rdir, "metrics.jsonl"), "a")
    try:
        from tqdm import tqdm
        pbar = tqdm(total=int(total_s), initial=int(train_seconds), unit="s", desc=args.run, mininterval=30,
                    file=sys.stderr, ncols=100)
    except ImportError:  # pragma: no cover
        pbar = None
    student.train()
    while train_seconds < total_s and not deadline.expired() and not stop["flag"]:
        t0 = time.time()
        progress = train_seconds / total_s
        lr = args.lr * 0.5 * (1.0 + torch.cos(torch.tensor(progress * 3.141592653589793)).item())
        for g in opt.param_groups:
            g["lr"] = lr
        x = to_tensor_m11(sampler.batch(args.batch))
        with torch.no_grad():
            zt = teacher.encode_z(x)
            n, d, h, w = zt.shape
            tidx = teacher.quant.nearest(zt.permute(0, 2, 3, 1).reshape(-1, d)).view(n, h, w)
        zs = F.normalize(student(x), dim=1, eps=1e-6)
        mse = ((zs - zt) ** 2).sum(1).mean()
        logits = codeword_logits(zs, embed, args.tau)
        ce = F.cross_entropy(logits, tidx)
        loss = mse + args.w_ce * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        dt = time.time() - t0
        train_seconds += dt
        if pbar is not None:
            pbar.update(int(train_seconds) - pbar.n)
        acc["mse"] += mse.item()
        acc["ce"] += ce.item()
        acc["agree"] += (logits.argmax(1) == tidx).float().mean().item()
        acc["n"] += 1
        if step % 50 == 0:
            m = {k: acc[k] / acc["n"] for k in ("mse", "ce", "agree")}
            m.update(step=step, lr=lr, progress=round(train_seconds / total_s, 4), crops_per_s=args.batch / dt)
            metrics_f.write(f"{m}\n".replace("'", '"'))
            metrics_f.flush()
            log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))
            acc = {"mse": 0.0, "ce": 0.0, "agree": 0.0, "n": 0}
        if time.time() - last_ckpt >= args.ckpt_every_min * 60:
            save()
            last_ckpt = time.time()
    save()
    if pbar is not None:
        pbar.close()
    log.info("done" if train_seconds >= total_s else "stopped (resume with the same command)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
