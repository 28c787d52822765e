"""Shrink a trained codebook to K' codes by k-means, then fine-tune only the codebook.

    python -m uigc_models.reduce_codebook --ckpt tok-k256-a --k 64 --run tok-k256-a-k64 --minutes 8

As in the UIGC paper (K=16..256 from the K=1024 codebook): the old codewords are clustered with
usage-weighted spherical k-means (usage counted on training crops), then the encoder and decoder
stay frozen and only the new codewords are trained (reconstruction losses through the frozen
decoder + the VQ codebook term). The encoder/decoder weights are copied unchanged, so bundles
exported from the result share them with the parent. Output: ~/.cache/uigc/runs/<run>/last.pt
(same format as train.py checkpoints), reduce.log, config.json; resumable (--max-minutes).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F

from .common import RUNS_ROOT, Deadline, atomic_torch_save, pick_device, run_dir, save_json, seed_all, \
    set_threads, setup_logging, write_config
from .data import CACHE_FILE, CropSampler, load_cache, to_tensor_m11
from .export import load_tokenizer, resolve_ckpt
from .lpips import LPIPS
from .model import Tokenizer, spherical_kmeans


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="parent checkpoint file or run name")
    ap.add_argument("--k", type=int, required=True, help="new codebook size")
    ap.add_argument("--run", required=True, help="output run name")
    ap.add_argument("--runs-root", default=RUNS_ROOT)
    ap.add_argument("--data-cache", default=CACHE_FILE)
    ap.add_argument("--usage-crops", type=int, default=256, help="crops (256 px) used to weight k-means")
    ap.add_argument("--kmeans-iters", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=8.0, help="codebook fine-tuning time (0: k-means only)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock limit of this invocation")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--w-l1", type=float, default=1.0)
    ap.add_argument("--w-mse", type=float, default=1.0)
    ap.add_argument("--w-lpips", type=float, default=0.8)
    ap.add_argument("--w-lowpass", type=float, default=1.0)
    ap.add_argument("--w-codebook", type=float, default=1.0, help="weight of |sg(z) - c|^2")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every-min", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rdir = run_dir(args.run, args.runs_root)
    log = setup_logging(rdir, "reduce.log")
    set_threads(args.threads)
    seed_all(args.seed)
    device = pick_device(args.device)
    parent = resolve_ckpt(args.ckpt)
    write_config(rdir, args, extra={"parent_ckpt": parent})
    tok, ck = load_tokenizer(parent)
    data = load_cache(args.data_cache)

    last = os.path.join(rdir, "last.pt")
    hp = dict(ck["hparams"])
    hp["k"] = args.k
    new = Tokenizer(**hp)
    sd = {k: v for k, v in tok.state_dict().items() if not k.startswith("quant.")}
    new.load_state_dict(sd, strict=False)
    new.to(device).eval()
    for p in new.parameters():
        p.requires_grad_(False)

    codebook = torch.nn.Parameter(torch.zeros(args.k, hp["code_dim"], device=device))
    opt = torch.optim.Adam([codebook], lr=args.lr)
    step, ft_seconds = 0, 0.0
    if os.path.exists(last):
        r = torch.load(last, map_location="cpu", weights_only=False)
        codebook.data.copy_(r["model"]["quant.embed"])
        if r.get("opt") is not None:
            opt.load_state_dict(r["opt"])
        step, ft_seconds = r["step_finetune"], r["finetune_seconds"]
        log.info(f"resumed {last}: finetune step {step}, {ft_seconds / 60:.1f} min")
    else:
        # usage of the parent codes on training crops
        s = CropSampler(data["images"], 256, seed=args.seed + 99)
        counts = torch.zeros(tok.quant.k)
        with torch.no_grad():
            for i in range(0, args.usage_crops, 8):
                idx = tok.encode_indices(to_tensor_m11(s.batch(8)))
                counts += torch.bincount(idx.flatten(), minlength=tok.quant.k).float()
        used = counts > 0
        log.info(f"parent K={tok.quant.k}: {int(used.sum())} codes used on {args.usage_crops} train crops")
        src, w = tok.quant.embed[used], counts[used]
        t0 = time.time()
        c = spherical_kmeans(src, args.k, iters=args.kmeans_iters, seed=args.seed, weights=w)
        codebook.data.copy_(c.to(device))
        log.info(f"weighted spherical k-means {int(used.sum())} -> {args.k} codes in {time.time() - t0:.1f}s")

    def save():
        new.quant.embed.copy_(F.normalize(codebook.detach(), dim=1))
        new.quant.embed_avg.copy_(new.quant.embed)
        new.quant.initted.fill_(1)
        state = {"model": new.state_dict(), "opt": opt.state_dict(), "hparams": new.hparams, "args": {
            **ck.get("args", {}), "k": args.k}, "step": ck.get("step"), "train_seconds": ck.get("train_seconds", 0.0),
            "step_finetune": step, "finetune_seconds": ft_seconds, "parent": parent}
        atomic_torch_save(state, last)
        save_json(os.path.join(rdir, "status.json"), {"finetune_step": step, "finetune_minutes": ft_seconds / 60,
                                                      "k": args.k, "parent": parent})
        log.info(f"saved {last} (finetune step {step}, {ft_seconds / 60:.1f} min)")

    save()
    if args.minutes > 0:
        lp = LPIPS("alex").to(device)
        sampler = CropSampler(data["images"], args.crop, seed=args.seed + 7 + step)
        deadline = Deadline(args.max_minutes)
        stop = {"flag": False}
        signal.signal(signal.SIGTERM, lambda *a: stop.update(flag=True))
        total = args.minutes * 60
        last_ck = time.time()
        acc, n = {}, 0
        while ft_seconds < total and not stop["flag"] and not deadline.expired():
            t = time.time()
            for g in opt.param_groups:
                g["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * ft_seconds / total)))
            x = to_tensor_m11(sampler.batch(args.batch)).to(device)
            with torch.no_grad():
                z = new.encode_z(x)
            cb = F.normalize(codebook, dim=1)
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            with torch.no_grad():
                idx = ((cb * cb).sum(1)[None] - 2 * flat @ cb.t()).argmin(1)
            q = cb[idx]
            y = new.decoder(q.view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2))
            l1 = (y - x).abs().mean()
            mse = F.mse_loss(y, x)
            lpv = lp(y, x).mean()
            lowp = (F.avg_pool2d(y, 8) - F.avg_pool2d(x, 8)).abs().mean()
            cbl = F.mse_loss(q, flat)
            loss = args.w_l1 * l1 + args.w_mse * mse + args.w_lpips * lpv + args.w_lowpass * lowp + args.w_codebook * cbl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            ft_seconds += time.time() - t
            for key, v in (("loss", loss), ("l1", l1), ("lpips", lpv), ("codebook", cbl)):
                acc[key] = acc.get(key, 0.0) + float(v.detach())
            acc["psnr"] = acc.get("psnr", 0.0) + 10 * math.log10(4.0 / max(float(mse.detach()), 1e-10))
            n += 1
            if step % args.log_every == 0:
                used = int(torch.unique(idx).numel())
                log.info(f"finetune step {step} ({ft_seconds / 60:.1f}/{args.minutes} min) " + " ".join(
                    f"{k}={v / n:.4g}" for k, v in acc.items()) + f" codes_in_batch={used}")
                acc, n = {}, 0
            if time.time() - last_ck > args.ckpt_every_min * 60:
                save()
                last_ck = time.time()
        save()
    log.info("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
