"""Train the multi-stage prior (float, then fake-quant QAT), export prior.bin, evaluate, attach.

    # train (wall-clock limited, resumable: rerun the same command to continue)
    python -m uigc_models.prior_train train --run prior-k256-a --tokens ~/.cache/uigc/tokens/<id> \
        --until 00:40 --threads 2
    # export the integer prior and evaluate float vs integer bits/token on Kodak
    python -m uigc_models.prior_train export --run prior-k256-a --out ~/.cache/uigc/runs/prior-k256-a/prior.bin
    python -m uigc_models.prior_train eval --run prior-k256-a --tokens ... --prior .../prior.bin
    # attach to a bundle (sets [prior] kind/path/sha256 in manifest.toml)
    python -m uigc_models.prior_train attach --bundle ../models/uigc-small --prior .../prior.bin
    # fine-tune a shipped prior whose float checkpoint is gone (e.g. on the dense graphs' grids),
    # then attach it as the bundle's dense prior
    python -m uigc_models.prior_train import --prior ../models/uigc-small/prior.bin --out shipped.pt
    python -m uigc_models.prior_train train --run prior-dense --tokens ... --init shipped.pt ...
    python -m uigc_models.prior_train attach --dense --bundle ../models/uigc-small --prior .../prior.bin

Training: random token crops (16 or 24 per side) of the TRAIN grids only; one forward pass trains
every stage (n known + n query copies, block-causal windowed masks); CE on the query outputs.
The last --qat-frac of the time runs with fake quantisation (scales calibrated on train grids).
Kodak grids are used for evaluation only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from . import intprior_ref as ref
from . import prior_model as pm
from .common import RUNS_ROOT, atomic_torch_save, run_dir, save_json, setup_logging, write_config
from .prior_tokens import load_grids

CROPS = [(16, 16), (16, 24), (24, 16), (24, 24)]


def seconds_until(hhmm: str) -> float:
    now = dt.datetime.now(dt.timezone.utc)
    h, m = (int(x) for x in hhmm.split(":"))
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    if t < now - dt.timedelta(hours=12):
        t += dt.timedelta(days=1)
    return (t - now).total_seconds()


def sample_batch(grids, bsz, rng, crops=CROPS):
    ch, cw = crops[rng.integers(len(crops))]
    ok = [g for g in grids if g.shape[0] >= ch and g.shape[1] >= cw]
    if not ok:
        ch, cw = min(g.shape[0] for g in grids), min(g.shape[1] for g in grids)
        ok = grids
    # one (r0 % 8, c0 % 8) phase per batch: the stage pattern of the crop is that of the full grid
    out = []
    pr, pc = int(rng.integers(8)), int(rng.integers(8))
    for _ in range(bsz):
        g = ok[rng.integers(len(ok))]
        hr, wr = g.shape[0] - ch, g.shape[1] - cw
        r0 = int(rng.choice(np.arange(pr, hr + 1, 8))) if pr <= hr else int(rng.integers(hr + 1))
        c0 = int(rng.choice(np.arange(pc, wr + 1, 8))) if pc <= wr else int(rng.integers(wr + 1))
        out.append((g[r0:r0 + ch, c0:c0 + cw], r0, c0))
    # group by phase (usually one group)
    groups = {}
    for a, r0, c0 in out:
        groups.setdefault((r0 % 8, c0 % 8), []).append(a)
    return [(torch.as_tensor(np.stack(v), dtype=torch.long), k[0], k[1]) for k, v in groups.items()]


def sample_reveals(x, r0, c0, levels, prob, rng):
    """Same-stage reveals for training iterative regeneration: with probability ``prob`` a sample
    gets a stage ``cut`` (1..stages-1) whose positions are each revealed with a rate drawn from
    U(0, 0.9). Returns (cut [B], reveal [B, n] bool, loss weights [B, n]): the loss keeps stages
    ``< cut`` and the unrevealed positions of ``cut`` (later stages see a partial stage there)."""
    B, rows, cols = x.shape
    st = pm.stage_grid(rows, cols, levels, r0 % (1 << levels), c0 % (1 << levels)).reshape(-1)
    n_stages = 1 + 3 * levels
    cut = torch.full((B,), -1, dtype=torch.long)
    reveal = torch.zeros(B, rows * cols, dtype=torch.bool)
    w = torch.ones(B, rows * cols)
    for b in range(B):
        if rng.random() >= prob:
            continue
        c = int(rng.integers(1, n_stages))
        cut[b] = c
        rate = float(rng.uniform(0.0, 0.9))
        reveal[b] = (st == c) & torch.from_numpy(rng.random(rows * cols) < rate)
        w[b] = ((st < c) | ((st == c) & ~reveal[b])).float()
    return cut, reveal, w


@torch.no_grad()
def eval_float(model, grids, max_grids=0):
    model.eval()
    bits = np.zeros(model.stages)
    cnt = np.zeros(model.stages)
    for g in grids[:max_grids or len(grids)]:
        b, c = pm.float_grid_bits(model, g)
        bits += b
        cnt += c
    model.train()
    return bits, cnt


@torch.no_grad()
def eval_reveal(model, grids, rate, seed=0):
    """What iterative regeneration relies on: bits/token of the unrevealed positions of each stage
    s >= 1 when a random ``rate`` of stage s is revealed (known), float model, full grids."""
    model.eval()
    rng = np.random.default_rng(seed)
    S = model.stages
    bits, cnt = np.zeros(S), np.zeros(S)
    for g in grids:
        x = torch.as_tensor(np.asarray(g), dtype=torch.long)[None]
        st = pm.stage_grid(x.shape[1], x.shape[2], model.levels).reshape(-1)
        for s in range(1, S):
            rev = ((st == s) & torch.from_numpy(rng.random(st.numel()) < rate))[None]
            _, ce = model.loss_bits(x, 0, 0, torch.tensor([s]), rev)
            sel = (st == s) & ~rev[0]
            bits[s] += float(ce[0][sel].sum())
            cnt[s] += int(sel.sum())
    model.train()
    return {"rate": rate, "total_stages_1_plus": bits.sum() / max(cnt.sum(), 1),
            "per_stage": (bits / np.maximum(cnt, 1)).tolist()}


def fmt_stages(bits, cnt):
    return " ".join(f"s{s}={bits[s] / max(cnt[s], 1):.3f}" for s in range(len(bits)))


def build(cfg):
    return pm.PriorNet(K=cfg["K"], d=cfg["d"], heads=cfg["heads"], layers=cfg["layers"], ffn=cfg["ffn"],
                       radius=cfg["radius"], levels=cfg["levels"])


def cmd_train(args):
    torch.set_num_threads(args.threads)
    rd = run_dir(args.run)
    log = setup_logging(rd, "train.log")
    train, _ = load_grids(os.path.join(args.tokens, "train.npz"))
    kodak, _ = load_grids(os.path.join(args.tokens, "kodak.npz"))
    K = args.k or int(max(g.max() for g in train) + 1)
    ck_path = os.path.join(rd, "last.pt")
    state = None
    if os.path.exists(ck_path) and not args.no_resume:
        state = torch.load(ck_path, map_location="cpu", weights_only=False)
        cfg = state["cfg"]
        log.info(f"resuming {ck_path} at step {state['step']}")
    else:
        cfg = dict(K=K, d=args.d, heads=args.heads, layers=args.layers, ffn=args.ffn, radius=args.radius,
                   levels=args.levels)
    write_config(rd, args, extra={"model_cfg": cfg, "tokens": args.tokens})
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd, betas=(0.9, 0.98))
    step, elapsed, qat_on = 0, 0.0, False
    if state is not None:
        model.load_state_dict(state["model"])
        if not args.reset_opt:
            opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        qat_on = state.get("qat", False)
        if args.reset_schedule:
            elapsed = 0.0
    elif args.init:
        st = torch.load(args.init, map_location="cpu", weights_only=False)
        assert st["cfg"] == cfg, f"--init config {st['cfg']} != {cfg}"
        model.load_state_dict(st["model"])
        log.info(f"initialised from {args.init} (step {st['step']})")
    model.qat = qat_on
    budget = args.minutes * 60 if args.minutes else seconds_until(args.until)
    # the schedule is over this invocation's budget (plus what a resumed run already spent)
    total = elapsed + budget
    log.info(f"cfg {cfg} params {sum(p.numel() for p in model.parameters())} train grids {len(train)} "
             f"({sum(g.size for g in train)} tokens) kodak {len(kodak)}; budget {budget / 60:.1f} min, "
             f"total schedule {total / 60:.1f} min, qat last {args.qat_frac:.0%}")
    rng = np.random.default_rng(args.seed + step)
    t_start = time.time()
    last_ck = last_eval = time.time()
    ema = None
    model.train()
    log2k = math.log2(cfg["K"])
    while True:
        now_el = elapsed + (time.time() - t_start)
        prog = now_el / total
        if prog >= 1.0:
            break
        if not qat_on and prog >= 1.0 - args.qat_frac:
            model.qat = False
            model.calibrate([train[i][:32, :32] for i in rng.permutation(len(train))[:48]])
            model.qat = qat_on = True
            log.info(f"QAT on at step {step}: act scales {model.act_scale.tolist()} nf {float(model.nf_scale):.2f}")
        warm = min(1.0, (step + 1) / args.warmup)
        lr = args.lr * warm * (args.lr_min + (1 - args.lr_min) * 0.5 * (1 + math.cos(math.pi * prog)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        opt.zero_grad(set_to_none=True)
        tot_tok = 0
        loss_sum = 0.0
        for x, r0, c0 in sample_batch(train, args.batch, rng):
            if args.reveal_prob > 0:
                cut, reveal, w = sample_reveals(x, r0, c0, cfg["levels"], args.reveal_prob, rng)
                _, ce = model.loss_bits(x, r0, c0, cut, reveal)
                loss = (ce * w).sum() / w.sum()
                n = int(w.sum())
            else:
                loss, _ = model.loss_bits(x, r0, c0)
                n = x.numel()
            (loss * n / (args.batch * x.shape[1] * x.shape[2])).backward()
            loss_sum += float(loss.detach()) * n
            tot_tok += n
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        lb = loss_sum / tot_tok
        ema = lb if ema is None else 0.98 * ema + 0.02 * lb
        if step % args.log_every == 0:
            log.info(f"step {step} bits/token {ema:.4f} (log2K {log2k:.0f}) lr {lr:.2e} prog {prog:.3f} "
                     f"qat {int(qat_on)} {now_el / 60:.1f} min")
        if time.time() - last_ck > args.ckpt_every_min * 60:
            save(ck_path, model, opt, cfg, step, elapsed + time.time() - t_start, qat_on)
            last_ck = time.time()
        if args.eval_every_min and time.time() - last_eval > args.eval_every_min * 60:
            b, c = eval_float(model, kodak, args.eval_grids)
            log.info(f"kodak[{args.eval_grids or len(kodak)}] {'qat' if qat_on else 'float'} bits/token "
                     f"{b.sum() / c.sum():.4f} | {fmt_stages(b, c)}")
            last_eval = time.time()
    elapsed += time.time() - t_start
    save(ck_path, model, opt, cfg, step, elapsed, qat_on)
    log.info(f"saved {ck_path}: step {step}, {elapsed / 60:.1f} min")
    if args.no_final_eval:
        return 0
    b, c = eval_float(model, kodak)
    res = {"step": step, "train_minutes": elapsed / 60, "cfg": cfg, "qat": qat_on,
           "kodak_bits_per_token": b.sum() / c.sum(), "kodak_bits_per_stage": (b / np.maximum(c, 1)).tolist(),
           "kodak_tokens_per_stage": c.tolist()}
    save_json(os.path.join(rd, "final_float_eval.json"), res)
    log.info(f"done: step {step}, {elapsed / 60:.1f} min; kodak {'qat' if qat_on else 'float'} bits/token "
             f"{b.sum() / c.sum():.4f} | {fmt_stages(b, c)}")
    return 0


def save(path, model, opt, cfg, step, elapsed, qat):
    atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "cfg": cfg, "step": step,
                       "elapsed": elapsed, "qat": qat}, path)


def load_model(run_or_path):
    p = run_or_path if os.path.isfile(run_or_path) else os.path.join(RUNS_ROOT, run_or_path, "last.pt")
    st = torch.load(p, map_location="cpu", weights_only=False)
    m = build(st["cfg"])
    m.load_state_dict(st["model"])
    m.qat = st.get("qat", False)
    m.eval()
    return m, st


def cmd_export(args):
    torch.set_num_threads(args.threads)
    m, st = load_model(args.run)
    if not st.get("qat"):
        assert args.tokens, "a float-only checkpoint needs --tokens to calibrate activation scales"
        train, _ = load_grids(os.path.join(args.tokens, "train.npz"))
        m.calibrate([g[:32, :32] for g in train[::max(1, len(train) // 48)]])
    p = pm.export_int(m, T_att=args.t_att, T_out=args.t_out)
    data = ref.save_prior(p, args.out)
    print(f"wrote {args.out}: {len(data)} bytes, header "
          f"{ {k: p.header[k] for k in ref.HEADER_INTS} }, len(att_exp) {p.t['att_exp'].size}, "
          f"len(out_exp) {p.t['out_exp'].size}")
    return 0


def cmd_eval(args):
    torch.set_num_threads(args.threads)
    m, st = load_model(args.run)
    kodak, names = load_grids(os.path.join(args.tokens, "kodak.npz"))
    n = args.grids or len(kodak)
    res = {"cfg": st["cfg"], "step": st["step"], "grids": n}
    S = m.stages
    qat = m.qat
    m.qat = False
    fb, fc = eval_float(m, kodak, n)
    m.qat = True
    qb, _ = eval_float(m, kodak, n)
    m.qat = qat
    res["float"] = {"total": fb.sum() / fc.sum(), "per_stage": (fb / np.maximum(fc, 1)).tolist()}
    res["qat_float"] = {"total": qb.sum() / fc.sum(), "per_stage": (qb / np.maximum(fc, 1)).tolist()}
    res["tokens_per_stage"] = fc.tolist()
    if args.prior:
        p = ref.load_prior(args.prior)
        ib = np.zeros(S)
        t0 = time.time()
        for g in kodak[:n]:
            b, _ = pm.int_grid_bits(p, g)
            ib += b
        res["int"] = {"total": ib.sum() / fc.sum(), "per_stage": (ib / np.maximum(fc, 1)).tolist(),
                      "ref_seconds_per_grid": (time.time() - t0) / n}
        res["int_vs_float_rel_gap"] = ib.sum() / fb.sum() - 1
        res["int_vs_qat_rel_gap"] = ib.sum() / qb.sum() - 1
    if args.reveal:
        res["reveal"] = eval_reveal(m, kodak[:n], args.reveal, args.seed)
    res["log2K"] = math.log2(st["cfg"]["K"])
    print(json.dumps(res, indent=1))
    if args.json:
        save_json(args.json, res)
    return 0


def cmd_import(args):
    """prior.bin -> a float checkpoint for `train --init` (prior_model.import_int)."""
    p = ref.load_prior(args.prior)
    m = pm.import_int(p)
    opt = torch.optim.AdamW(m.parameters())
    save(args.out, m, opt, m.cfg, 0, 0.0, False)
    print(f"imported {args.prior} ({m.cfg}) -> {args.out}")
    return 0


def cmd_attach(args):
    table = "prior_dense" if args.dense else "prior"
    attach_prior(args.bundle, args.prior, args.name or f"{table}.bin", table)
    return 0


def attach_prior(bundle_dir, prior_path, name="prior.bin", table="prior"):
    """Copies the prior into the bundle; sets the [prior] (or, `table="prior_dense"`, the
    [prior_dense]: the dense graphs' prior, appended when absent) kind/path/sha256 in
    manifest.toml, nothing else."""
    import re
    import shutil
    from .bundle import sha256_file
    assert table in ("prior", "prior_dense"), table
    p = ref.load_prior(prior_path)  # validates
    man_path = os.path.join(bundle_dir, "manifest.toml")
    text = open(man_path).read()
    m = re.search(r"^codebook_size\s*=\s*(\d+)", text, re.M)
    assert m and int(m.group(1)) == p.K, f"bundle K {m and m.group(1)} != prior K {p.K}"
    m = re.search(r"^levels\s*=\s*(\d+)", text, re.M)
    assert m and 1 + 3 * int(m.group(1)) == p.stages, "bundle schedule levels != prior stages"
    if table == "prior_dense":
        assert re.search(r"(?m)^\[tokenizer_encoder_dense\]", text), \
            "a dense prior needs the dense graphs: install them first (python -m uigc_models.dense install)"
    dst = os.path.join(bundle_dir, name)
    if os.path.abspath(dst) != os.path.abspath(prior_path):
        shutil.copyfile(prior_path, dst)
    sha = sha256_file(dst)
    values = {"kind": '"int-transformer-v1"', "path": f'"{name}"', "sha256": f'"{sha}"'}
    field = re.compile(r"^\s*(kind|path|sha256)\s*=.*$")
    # rewrite only that table (appending [prior_dense] when the bundle has none yet)
    parts = re.split(r"(?m)^(?=\[)", text)
    out = []
    found = False
    for part in parts:
        if part.startswith(f"[{table}]"):
            found = True
            part = "\n".join(field.sub(lambda m: f"{m[1]} = {values[m[1]]}", ln) for ln in part.split("\n"))
        out.append(part)
    if not found:
        assert table == "prior_dense", "manifest has no [prior] table"
        out.append(("" if out[-1].endswith("\n\n") else "\n" if out[-1].endswith("\n") else "\n\n")
                   + f"[{table}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    new_text = "".join(out)
    tmp = man_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new_text)
    os.replace(tmp, man_path)
    print(f"attached {dst} (sha256 {sha}) to {bundle_dir} as [{table}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--run", required=True)
    t.add_argument("--tokens", required=True, help="dir with train.npz / kodak.npz")
    t.add_argument("--k", type=int, default=0)
    t.add_argument("--d", type=int, default=96)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--layers", type=int, default=3)
    t.add_argument("--ffn", type=int, default=192)
    t.add_argument("--radius", type=int, default=6)
    t.add_argument("--levels", type=int, default=3)
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--lr-min", type=float, default=0.05)
    t.add_argument("--wd", type=float, default=0.01)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--minutes", type=float, default=0, help="training budget (else --until)")
    t.add_argument("--until", default="00:40", help="UTC hh:mm wall-clock end")
    t.add_argument("--qat-frac", type=float, default=0.15)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", default="", help="checkpoint to start from (same cfg)")
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--reset-opt", action="store_true")
    t.add_argument("--reset-schedule", action="store_true")
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--ckpt-every-min", type=float, default=2.0)
    t.add_argument("--eval-every-min", type=float, default=5.0)
    t.add_argument("--eval-grids", type=int, default=8)
    t.add_argument("--no-final-eval", action="store_true")
    t.add_argument("--reveal-prob", type=float, default=0.0,
                   help="fraction of samples trained with same-stage reveals (iterative regeneration)")
    e = sub.add_parser("export")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--tokens", default="")
    e.add_argument("--t-att", type=float, default=32.0)
    e.add_argument("--t-out", type=float, default=64.0)
    e.add_argument("--threads", type=int, default=1)
    v = sub.add_parser("eval")
    v.add_argument("--run", required=True)
    v.add_argument("--tokens", required=True)
    v.add_argument("--prior", default="")
    v.add_argument("--grids", type=int, default=0)
    v.add_argument("--json", default="")
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--reveal", type=float, default=0.0,
                   help="also measure bits of each stage with this fraction of it revealed (iterative)")
    v.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("import", help="a prior.bin as a float checkpoint (for train --init)")
    i.add_argument("--prior", required=True)
    i.add_argument("--out", required=True)
    a = sub.add_parser("attach")
    a.add_argument("--bundle", required=True)
    a.add_argument("--prior", required=True)
    a.add_argument("--name", default="", help="file name in the bundle (default prior.bin, with --dense prior_dense.bin)")
    a.add_argument("--dense", action="store_true",
                   help="attach as [prior_dense]: the prior of the dense graphs' packets (docs/bundle.md \"Dense prior\")")
    args = ap.parse_args(argv)
    return {"train": cmd_train, "export": cmd_export, "eval": cmd_eval, "attach": cmd_attach,
            "import": cmd_import}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
