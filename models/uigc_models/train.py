"""Train the VQ tokenizer (autoencoder warm-up -> k-means codebook init -> VQ training [-> PatchGAN]).

    python -m uigc_models.train --run tok-k256 --total-minutes 90 --max-minutes 90

The schedule (phases, learning-rate decay) is keyed on accumulated *training time*
(``--total-minutes``), so a run can be stopped (``--max-minutes``, SIGTERM/SIGINT) and resumed
(default: from <run>/last.pt) without changing it. Everything lives in ~/.cache/uigc/runs/<run>/:
config.json (+ config.N.json of earlier invocations), train.log, metrics.jsonl, last.pt,
ckpt_<step>.pt, status.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from .common import (CACHE_ROOT, RUNS_ROOT, Deadline, atomic_torch_save, pick_device, run_dir, save_json,
                     seed_all, set_threads, setup_logging, write_config, stop_on_signals)
from . import colour
from .data import CACHE_FILE, CropSampler, load_cache, to_tensor_m11
from .lpips import LPIPS
from .model import PatchDiscriminator, Tokenizer, count_params, f8_state


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name (directory under --runs-root)")
    ap.add_argument("--runs-root", default=RUNS_ROOT)
    ap.add_argument("--data-cache", default=CACHE_FILE)
    ap.add_argument("--no-resume", action="store_true", help="start fresh even if <run>/last.pt exists")
    ap.add_argument("--resume-from", default=None, help="checkpoint to resume from (default <run>/last.pt)")
    ap.add_argument("--init-from", default=None,
                    help="start a new run from the weights of this checkpoint (architecture included; step, clock "
                         "and optimiser start fresh)")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="train the decoder only: encoder and codebook frozen (EMA and restarts off), so the token "
                         "streams, and any prior trained on them, stay valid")
    ap.add_argument("--freeze-decoder", action="store_true",
                    help="train the encoder only: decoder and codebook frozen (EMA and restarts off), so every "
                         "decoder that reads these tokens stays valid; the encoder learns to pick the tokens that "
                         "decode best (a prior trained on the old tokens needs a refit)")
    # model
    ap.add_argument("--k", type=int, default=1024, help="codebook size")
    ap.add_argument("--code-dim", type=int, default=32)
    ap.add_argument("--enc-ch", type=int, nargs=3, default=[64, 128, 192])
    ap.add_argument("--enc-res", type=int, nargs=3, default=[1, 1, 2])
    ap.add_argument("--dec-ch", type=int, nargs=5, default=[192, 128, 96, 48, 24])
    ap.add_argument("--dec-res", type=int, nargs=5, default=[2, 1, 1, 1, 0])
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--up-mode", choices=("nearest", "bilinear"), default=None,
                    help="decoder upsampling (default nearest). Has no parameters, so with --init-from it may "
                         "differ from the initialising checkpoint's; a resumed run keeps its own")
    # optimisation
    ap.add_argument("--factor", type=int, choices=(16, 8), default=None,
                    help="pixels per token side (default: the checkpoint's, else 16); 8 with --init-from an f=16 "
                         "checkpoint maps its weights onto the f=8 layout (model.f8_state): the dense tokenizer")
    ap.add_argument("--freeze-codebook", action="store_true",
                    help="no EMA updates or restarts of the codebook (tokens keep their meaning for a trained prior)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--lr-min-frac", type=float, default=0.1)
    ap.add_argument("--lr-warmup-steps", type=int, default=100)
    ap.add_argument("--total-minutes", type=float, default=90.0, help="schedule horizon (training time)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock limit of this invocation")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this global step (0: no limit)")
    ap.add_argument("--warmup-frac", type=float, default=0.2,
                    help="fraction of the schedule trained as a plain autoencoder (no quantiser)")
    ap.add_argument("--kmeans-iters", type=int, default=25)
    ap.add_argument("--kmeans-crop", type=int, default=256)
    # losses
    ap.add_argument("--w-l1", type=float, default=1.0)
    ap.add_argument("--w-mse", type=float, default=1.0)
    ap.add_argument("--w-lpips", type=float, default=0.7)
    ap.add_argument("--w-lowpass", type=float, default=1.0, help="L1 on 8x average-pooled images (colour)")
    ap.add_argument("--w-chroma", type=float, default=0.0,
                    help="L1 on 4x average-pooled chroma (Cb, Cr) - against hue shifts in saturated regions")
    ap.add_argument("--lpips-shift", type=int, default=0, metavar="N",
                    help="score LPIPS on both images cropped by N px at a random offset (0..N-1 per axis, new each "
                         "step). LPIPS-alex's stride-4/8/16 sampling lattice is otherwise fixed to the crop origin, "
                         "i.e. to the token grid, and its gradient writes a phase-locked 8-px pattern into the decoder "
                         "(issue 12's grid); 16 randomises all three phases. 0: off (the runs up to 0.3.0)")
    ap.add_argument("--w-grid", type=float, default=0.0,
                    help="penalty on the error's pattern locked to the 16-px token grid: the mean over the batch and "
                         "all 16x16 blocks of (decoded - original), its mean removed, squared (per pixel the same "
                         "scale as the MSE term, acting on that component only). Periods 16, 8, 4, 2 px")
    ap.add_argument("--grid-scope", choices=("batch", "crop"), default="batch",
                    help="--w-grid's block pattern: averaged over the whole batch (a pattern common to all images) "
                         "or per crop (also one that depends on the image: what the Kodak figure still shows)")
    ap.add_argument("--colour-loop", default=None, metavar="BLOCK:STEP",
                    help="train with the decoder's colour-thumbnail correction in the loop (colour.py) "
                         "on a share of each batch (--colour-loop-frac), e.g. 32:4")
    ap.add_argument("--colour-loop-frac", type=float, default=0.5,
                    help="share of each batch whose losses see the corrected output (the rest: raw "
                         "output, so packets without a thumbnail keep their colours)")
    ap.add_argument("--regen-prior", default=None, metavar="PRIOR.bin",
                    help="train on regenerated tokens too: on --regen-frac of each batch the tokens of the stages a "
                         "packet of --regen-keep stages leaves out are replaced by this integer prior's argmax "
                         "regeneration (as a float model, prior_model.import_int), stage by stage given every "
                         "earlier token, as a receiver regenerates them (docs/bitstream.md); the losses still compare "
                         "with the original crop. Use the prior that codes these tokens (a dense prior for --factor 8)")
    ap.add_argument("--regen-frac", type=float, default=0.5, help="share of each batch with regenerated tokens")
    ap.add_argument("--regen-keep", type=int, nargs="+", default=[8, 9],
                    help="stages sent, drawn per crop from these (the rest regenerated)")
    ap.add_argument("--beta", type=float, default=0.25, help="commitment weight")
    ap.add_argument("--gan", action="store_true", help="enable the PatchGAN in the late part of training")
    ap.add_argument("--gan-start", type=float, default=0.75, help="schedule fraction where the GAN starts")
    ap.add_argument("--w-gan", type=float, default=0.05)
    ap.add_argument("--d-lr", type=float, default=2e-4)
    # codebook upkeep
    ap.add_argument("--restart-after", type=int, default=100, help="restart codes unused for this many steps")
    ap.add_argument("--restart-every", type=int, default=25)
    # bookkeeping
    ap.add_argument("--ckpt-every-min", type=float, default=5.0)
    ap.add_argument("--keep-ckpts", type=int, default=3)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true",
                    help="decoder and losses under bf16 autocast (GPU); encoder and quantiser stay fp32, so the "
                         "tokens do not change")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def lr_at(args, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / max(1, args.lr_warmup_steps))
    cos = args.lr_min_frac + (1 - args.lr_min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * warm * cos


class UsageTracker:
    def __init__(self, k: int):
        self.k = k
        self.last_used = torch.zeros(k, dtype=torch.long)
        self.window = torch.zeros(k)

    def update(self, idx: torch.Tensor, step: int):
        c = torch.bincount(idx.flatten().cpu(), minlength=self.k).float()
        self.window += c
        self.last_used[c > 0] = step

    def pop_window(self):
        w = self.window
        self.window = torch.zeros(self.k)
        p = w / w.sum().clamp_min(1)
        ent = -(p[p > 0] * p[p > 0].log2()).sum().item()
        return int((w > 0).sum()), 2 ** ent, ent


def kmeans_init(model: Tokenizer, sampler: CropSampler, args, device, log) -> None:
    kc = args.kmeans_crop
    per = (kc // 16) ** 2
    n_crops = max(16, math.ceil(40 * model.quant.k / per))
    s = CropSampler(sampler.images, kc, seed=args.seed + 12345)
    zs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, n_crops, 8):
            x = to_tensor_m11(s.batch(min(8, n_crops - i))).to(device)
            z = model.encode_z(x)
            zs.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).cpu())
    model.train()
    flat = torch.cat(zs)
    t0 = time.time()
    model.quant.init_codebook(flat.to(device) if device.type == "cuda" else flat, iters=args.kmeans_iters,
                              seed=args.seed)
    model.quant.to(device)
    with torch.no_grad():
        a = model.quant.nearest(flat.to(device))
        used = int(torch.unique(a).numel())
    log.info(f"k-means codebook init: {flat.shape[0]} vectors from {n_crops} crops of {kc}px, K={model.quant.k}, "
             f"{used} codes used after init, {time.time() - t0:.1f}s")


def fixed_val_batch(images, n=8, crop=256, seed=777):
    s = CropSampler(images, crop, seed=seed)
    return to_tensor_m11(s.batch(n))


def rgb_to_cbcr(x: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] RGB (any affine range) -> [N,2,H,W] BT.601 Cb, Cr (same scale, no offset)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b], 1)


@torch.no_grad()
def regenerate(prior, idx: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """idx [B,h,w] with the tokens of stages >= keep[b] replaced, stage by stage, by the argmax of the
    float prior given every earlier token (the crop's origin is the grid's: its stage map starts at 0,0)."""
    from .prior_model import stage_grid
    b, h, w = idx.shape
    st = stage_grid(h, w, prior.levels).to(idx.device)
    out = idx.clone()
    for s in range(int(keep.min()), 1 + 3 * prior.levels):
        sel = (st[None] == s) & (keep[:, None, None] <= s)
        if sel.any():
            out = torch.where(sel, prior(out).argmax(-1).view(b, h, w), out)
    return out


def forward(model: Tokenizer, x, quantize: bool, bf16: bool, regen=None):
    """model(x) with the decoder under bf16 autocast when asked (encoder + nearest code in fp32).
    regen: (prior, n, keep [n]) - the last n crops decode their regenerated tokens (see --regen-prior)."""
    if not bf16 and (regen is None or not quantize):
        return model(x, quantize=quantize)
    z = model.encode_z(x)
    if quantize:
        q, idx, commit = model.quant(z)
    else:
        q, idx, commit = z, None, z.new_zeros(())
    if regen is not None and quantize:
        prior, n, keep = regen
        if n > 0:
            r = regenerate(prior, idx[-n:], keep)
            qr = model.quant.embed[r].permute(0, 3, 1, 2)
            q = torch.cat([q[:-n], torch.where((r != idx[-n:])[:, None], qr, q[-n:])], 0)
    if not bf16:
        return model.decoder(q), z, idx, commit
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        y = model.decoder(q)
    return y.float(), z, idx, commit


def grid_template(err: torch.Tensor, block: int = 16, per_crop: bool = False) -> torch.Tensor:
    """[N,C,H,W] -> [C,block,block]: mean over the batch and all whole blocks, the template's mean removed
    (per_crop: [N,C,block,block], the mean over each crop's blocks = its error at the grid's harmonics)."""
    n, c, h, w = err.shape
    hb, wb = h // block * block, w // block * block
    t = err[..., :hb, :wb].reshape(n, c, hb // block, block, wb // block, block).mean((2, 4))
    if not per_crop:
        t = t.mean(0)
    return t - t.mean((-2, -1), keepdim=True)


def psnr_m11(y, x) -> float:
    mse = F.mse_loss(((y.clamp(-1, 1) + 1) * 127.5).round(), (x + 1) * 127.5).item()
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rdir = run_dir(args.run, args.runs_root)
    log = setup_logging(rdir, "train.log")
    set_threads(args.threads)
    device = pick_device(args.device)
    seed_all(args.seed)

    ckpt_path = args.resume_from or os.path.join(rdir, "last.pt")
    ckpt = None
    if not args.no_resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = ckpt["args"]
        # the architecture comes from the checkpoint; schedule/loss flags may be overridden
        for key in ("k", "code_dim", "enc_ch", "enc_res", "dec_ch", "dec_res"):
            setattr(args, key, saved[key])
        args.up_mode = saved.get("up_mode") or "nearest"   # older checkpoints: nearest
        args.factor = saved.get("factor") or 16
    init = None
    if ckpt is None and args.init_from:
        init = torch.load(args.init_from, map_location="cpu", weights_only=False)
        for key in ("k", "code_dim", "enc_ch", "enc_res", "dec_ch", "dec_res"):
            setattr(args, key, init["args"][key])
        if args.up_mode is None:
            args.up_mode = init["args"].get("up_mode") or "nearest"
    if args.up_mode is None:
        args.up_mode = "nearest"
    init_factor = (init["hparams"].get("factor", 16) if init is not None else None)
    if args.factor is None:
        args.factor = init_factor or 16
    write_config(rdir, args, extra={"device": str(device), "torch": torch.__version__,
                                    "resumed_from": ckpt_path if ckpt else None,
                                    "initialised_from": args.init_from if init else None})

    model = Tokenizer(args.k, args.code_dim, args.enc_ch, args.enc_res, args.dec_ch, args.dec_res,
                      args.ema_decay, up_mode=args.up_mode, factor=args.factor).to(device)
    if init is not None:
        if init_factor == 16 and args.factor == 8:
            f16 = Tokenizer(**init["hparams"])
            f16.load_state_dict(init["model"])
            model.load_state_dict(f8_state(f16))
        elif init_factor != args.factor:
            log.error(f"--factor {args.factor} cannot start from a factor-{init_factor} checkpoint")
            return 2
        else:
            model.load_state_dict(init["model"])
        log.info(f"initialised from {args.init_from} (its step {init['step']}, "
                 f"{init['train_seconds'] / 60:.1f} training minutes)")
    trainable = model.parameters()
    if args.freeze_encoder:
        if not (init is not None or ckpt is not None):
            log.error("--freeze-encoder needs --init-from or a checkpoint to resume (a trained encoder)")
            return 2
        model.encoder.requires_grad_(False)
        trainable = model.decoder.parameters()
    if args.freeze_decoder:
        if args.freeze_encoder:
            log.error("--freeze-decoder and --freeze-encoder leave nothing to train")
            return 2
        if not (init is not None or ckpt is not None):
            log.error("--freeze-decoder needs --init-from or a checkpoint to resume (a trained decoder)")
            return 2
        model.decoder.requires_grad_(False)
        trainable = model.encoder.parameters()
    # any frozen part keeps the codebook as it is: no EMA updates, no restarts
    codebook_frozen = args.freeze_encoder or args.freeze_codebook or args.freeze_decoder
    model.quant.ema_enabled = not codebook_frozen
    opt = torch.optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.99))
    disc = d_opt = None
    if args.gan:
        disc = PatchDiscriminator().to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.9))
    lp = LPIPS("alex").to(device)
    regen_prior = None
    if args.regen_prior:
        from . import intprior_ref, prior_model
        ip = intprior_ref.load_prior(args.regen_prior)
        if ip.K != model.quant.k:
            log.error(f"--regen-prior {args.regen_prior}: K={ip.K}, the tokenizer's codebook has {model.quant.k}")
            return 2
        regen_prior = prior_model.import_int(ip).to(device).eval().requires_grad_(False)
        log.info(f"regeneration in the loop: {args.regen_frac:.0%} of each batch, stages sent {args.regen_keep}, "
                 f"prior {args.regen_prior}")
    colour_loop = colour.parse(args.colour_loop) if args.colour_loop else None
    if colour_loop is not None and args.crop % colour_loop[0]:
        log.warning(f"--crop {args.crop} is not a multiple of the colour block {colour_loop[0]}")

    step, train_seconds = 0, 0.0
    tracker = UsageTracker(args.k)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        model.quant.ema_enabled = not codebook_frozen
        opt.load_state_dict(ckpt["opt"])
        step, train_seconds = ckpt["step"], ckpt["train_seconds"]
        tracker.last_used = ckpt.get("last_used", tracker.last_used)
        if disc is not None and ckpt.get("disc") is not None:
            disc.load_state_dict(ckpt["disc"])
            d_opt.load_state_dict(ckpt["d_opt"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        log.info(f"resumed from {ckpt_path}: step {step}, {train_seconds / 60:.1f} training minutes")
    log.info(f"run dir {rdir}; device {device}; threads {torch.get_num_threads()}; "
             f"encoder {count_params(model.encoder)} params, decoder {count_params(model.decoder)} params, "
             f"K={args.k} D={args.code_dim}, f={args.factor}, decoder upsampling {args.up_mode}"
             f"{', codebook frozen' if args.freeze_codebook else ''}{', decoder frozen' if args.freeze_decoder else ''}")

    data = load_cache(args.data_cache)
    sampler = CropSampler(data["images"], args.crop, seed=args.seed + step)
    val = fixed_val_batch(data["images"]).to(device)
    log.info(f"training images: {data['n_files']} files ({len(data['images'])} arrays incl. rescaled)")

    stop = stop_on_signals(log)

    deadline = Deadline(args.max_minutes)
    total_s = args.total_minutes * 60.0
    last_ckpt = time.time()
    metrics_f = open(os.path.join(rdir, "metrics.jsonl"), "a")
    acc, acc_n, t_win = {}, 0, time.time()

    def save(tag: str | None = None):
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                 "train_seconds": train_seconds, "args": vars(args), "hparams": model.hparams,
                 "last_used": tracker.last_used, "rng": torch.get_rng_state(),
                 "disc": disc.state_dict() if disc is not None else None,
                 "d_opt": d_opt.state_dict() if d_opt is not None else None}
        atomic_torch_save(state, os.path.join(rdir, "last.pt"))
        name = tag or f"ckpt_{step:07d}.pt"
        atomic_torch_save({k: v for k, v in state.items() if k not in ("opt", "d_opt")}, os.path.join(rdir, name))
        if tag is None:
            old = sorted(glob.glob(os.path.join(rdir, "ckpt_*.pt")))
            for p in old[:-args.keep_ckpts]:
                os.remove(p)
        with torch.no_grad():
            model.eval()
            quant = bool(model.quant.initted.item())
            y = model(val, quantize=quant)[0]
            model.train()
        vp = psnr_m11(y, val)
        st = {"step": step, "train_minutes": train_seconds / 60, "progress": train_seconds / total_s,
              "quantized": quant, "val_psnr_train_crops": vp, "time_utc": time.strftime("%H:%M:%S", time.gmtime())}
        save_json(os.path.join(rdir, "status.json"), st)
        log.info(f"checkpoint step {step} ({train_seconds / 60:.1f} min): val PSNR (8 fixed train crops, "
                 f"{'VQ' if quant else 'AE'}) {vp:.2f} dB -> {rdir}/last.pt")

    try:
        from tqdm import tqdm
        pbar = tqdm(total=int(total_s), initial=int(train_seconds), unit="s", desc=args.run, mininterval=30,
                    file=sys.stderr, dynamic_ncols=False, ncols=100)
    except ImportError:  # pragma: no cover
        pbar = None

    model.train()
    while True:
        progress = train_seconds / total_s
        if progress >= 1.0 or stop["flag"] or deadline.expired() or (args.max_steps and step >= args.max_steps):
            break
        t_step = time.time()
        quantize = progress >= args.warmup_frac
        if quantize and not model.quant.initted.item():
            save("ae_warmup.pt")
            kmeans_init(model, sampler, args, device, log)
            tracker.last_used.fill_(step)
        gan_on = disc is not None and progress >= args.gan_start
        if gan_on and not os.path.exists(os.path.join(rdir, "pre_gan.pt")):
            save("pre_gan.pt")
        lr = lr_at(args, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr

        x = to_tensor_m11(sampler.batch(args.batch)).to(device)
        regen = None
        if regen_prior is not None:
            n_r = int(round(args.regen_frac * x.shape[0]))
            keep = torch.tensor(args.regen_keep)[torch.randint(0, len(args.regen_keep), (n_r,))]
            regen = (regen_prior, n_r, keep)
        y, z, idx, commit = forward(model, x, quantize, args.bf16, regen)
        if colour_loop is not None:
            # The receiver's view: a share of the batch corrected with the thumbnail.
            n_c = int(round(args.colour_loop_frac * y.shape[0]))
            y = torch.cat([colour.correct(y[:n_c], x[:n_c], *colour_loop), y[n_c:]], 0)
        l1 = (y - x).abs().mean()
        mse = F.mse_loss(y, x)
        ly, lx = y, x
        if args.lpips_shift:
            n_s = args.lpips_shift
            dy, dx = (int(v) for v in torch.randint(0, n_s, (2,)))
            hh, ww = y.shape[-2] - n_s, y.shape[-1] - n_s
            ly, lx = y[..., dy:dy + hh, dx:dx + ww], x[..., dy:dy + hh, dx:dx + ww]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            lpips_v = lp(ly, lx).mean().float()
        lowp = (F.avg_pool2d(y, 8) - F.avg_pool2d(x, 8)).abs().mean()
        chroma = (F.avg_pool2d(rgb_to_cbcr(y), 4) - F.avg_pool2d(rgb_to_cbcr(x), 4)).abs().mean()
        grid = grid_template(y - x, per_crop=args.grid_scope == "crop").pow(2).mean()   # logged always
        loss = args.w_l1 * l1 + args.w_mse * mse + args.w_lpips * lpips_v + args.w_lowpass * lowp \
            + args.w_chroma * chroma + args.beta * commit + args.w_grid * grid
        g_loss = torch.zeros(())
        if gan_on:
            for p in disc.parameters():
                p.requires_grad_(False)
            g_loss = -disc(y).mean()
            loss = loss + args.w_gan * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d_loss = torch.zeros(())
        if gan_on:
            for p in disc.parameters():
                p.requires_grad_(True)
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(y.detach())).mean()
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()

        step += 1
        if quantize:
            tracker.update(idx, step)
            if step % args.restart_every == 0 and not codebook_frozen:
                dead = (step - tracker.last_used) > args.restart_after
                if dead.any():
                    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                    # prefer badly-quantised vectors as new codes
                    err = (flat - model.quant.embed[idx.flatten()]).pow(2).sum(1)
                    cand = flat[err >= err.median()]
                    ids = dead.nonzero().flatten().to(device)
                    pick = cand[torch.randint(0, cand.shape[0], (ids.numel(),), device=device)]
                    with torch.no_grad():
                        newv = F.normalize(pick + 0.02 * torch.randn_like(pick), dim=1)
                        mean_cs = model.quant.cluster_size.mean()
                        model.quant.embed[ids] = newv
                        model.quant.embed_avg[ids] = newv * mean_cs
                        model.quant.cluster_size[ids] = mean_cs
                    tracker.last_used[dead] = step
                    acc["restarted"] = acc.get("restarted", 0) + int(ids.numel())
        dt = time.time() - t_step
        train_seconds += dt
        if pbar is not None:
            pbar.update(int(train_seconds) - pbar.n)
        for key, v in (("loss", loss), ("l1", l1), ("mse", mse), ("lpips", lpips_v), ("lowpass", lowp),
                       ("chroma", chroma), ("grid", grid),
                       ("commit", commit), ("g", g_loss), ("d", d_loss)):
            acc[key] = acc.get(key, 0.0) + float(v.detach())
        acc["psnr"] = acc.get("psnr", 0.0) + psnr_m11(y.detach(), x)
        acc_n += 1
        if step % args.log_every == 0:
            rec = {k: (v / acc_n if k != "restarted" else v) for k, v in acc.items()}
            used, perp, _ = tracker.pop_window() if quantize else (0, 0.0, 0.0)
            rec.update(step=step, progress=round(train_seconds / total_s, 4), lr=lr, phase=(
                "gan" if gan_on else "vq" if quantize else "ae"), codes_used_window=used, perplexity=round(perp, 1),
                crops_per_s=round(args.batch * acc_n / (time.time() - t_win), 2))
            metrics_f.write(json.dumps(rec) + "\n")
            metrics_f.flush()
            log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
            acc, acc_n, t_win = {}, 0, time.time()
        if time.time() - last_ckpt >= args.ckpt_every_min * 60:
            save()
            last_ckpt = time.time()

    save()
    if pbar is not None:
        pbar.close()
    done = train_seconds >= total_s
    log.info(f"{'finished' if done else 'stopped'} at step {step}, {train_seconds / 60:.1f} training minutes "
             f"(this invocation {deadline.elapsed() / 60:.1f} min wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
