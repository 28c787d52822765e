"""Average the decoder weights of several decoder fine-tuning checkpoints (a weight average).

    python -m uigc_models.average --run tok-avg  CKPT_OR_RUN [CKPT_OR_RUN ...]

Use it on checkpoints that share one encoder and codebook (runs started from one checkpoint with
`train.py --freeze-encoder`): the average of their decoders is usually better on unseen images
than any single one of them (stochastic weight averaging, Izmailov et al. 2018; "model soups",
Wortsman et al. 2022), because each checkpoint sits at a different noisy point of the same basin.
The encoder and codebook are copied unchanged, so tokens, prior and packet sizes stay exactly as
they were; checkpoints that differ anywhere outside the decoder are refused (averaging encoders
or codebooks would change the tokens that the shipped prior was trained on).

Output: <runs>/<run>/last.pt (the train.py checkpoint format, without optimiser state, with
`averaged_from` naming the inputs and their steps) and average.json; export it like any run.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from .common import RUNS_ROOT, atomic_torch_save, run_dir, save_json
from .export import resolve_ckpt

DECODER_PREFIX = "decoder."


class AverageError(ValueError):
    """The checkpoints cannot be averaged (different architecture, or different encoder/codebook)."""


def average_states(states: list[dict]) -> dict:
    """Average the floating-point decoder tensors of `states` (state dicts of one architecture whose
    other tensors are identical); everything else is taken from the first state dict."""
    if not states:
        raise AverageError("no checkpoints to average")
    first = states[0]
    for i, sd in enumerate(states[1:], 1):
        if sd.keys() != first.keys():
            raise AverageError(f"checkpoint {i} has other parameter names than checkpoint 0")
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise AverageError(f"checkpoint {i}: {k} has shape {tuple(v.shape)}, "
                                   f"checkpoint 0 {tuple(first[k].shape)}")
            if not k.startswith(DECODER_PREFIX) and not torch.equal(v, first[k]):
                raise AverageError(f"checkpoint {i} differs from checkpoint 0 outside the decoder ({k}): "
                                   "averaging would change the tokens; average only runs fine-tuned "
                                   "from one checkpoint with --freeze-encoder")
    out = {}
    for k, v in first.items():
        if k.startswith(DECODER_PREFIX) and v.is_floating_point():
            acc = torch.zeros_like(v, dtype=torch.float64)
            for sd in states:
                acc += sd[k].to(torch.float64)
            out[k] = (acc / len(states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpts", nargs="+", help="checkpoint files or run names (run name = <run>/last.pt)")
    ap.add_argument("--run", required=True, help="output run name (directory under --runs-root)")
    ap.add_argument("--runs-root", default=RUNS_ROOT)
    args = ap.parse_args(argv)

    paths = [resolve_ckpt(c) for c in args.ckpts]
    cks = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    for p, ck in zip(paths[1:], cks[1:]):
        if ck["hparams"] != cks[0]["hparams"]:
            print(f"error: {p} has hparams {ck['hparams']}, {paths[0]} {cks[0]['hparams']}", file=sys.stderr)
            return 2
    try:
        model = average_states([ck["model"] for ck in cks])
    except AverageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sources = [{"ckpt": p, "step": ck.get("step"), "train_seconds": ck.get("train_seconds")}
               for p, ck in zip(paths, cks)]
    base = cks[0]
    out = {"model": model, "opt": None, "disc": None, "d_opt": None, "args": base["args"],
           "hparams": base["hparams"], "step": max(int(ck.get("step", 0)) for ck in cks),
           # training time of the longest input; the inputs' own histories are in averaged_from
           "train_seconds": max(float(ck.get("train_seconds", 0.0)) for ck in cks),
           "last_used": base.get("last_used"), "rng": base.get("rng"), "averaged_from": sources}
    d = run_dir(args.run, args.runs_root)
    atomic_torch_save(out, os.path.join(d, "last.pt"))
    save_json(os.path.join(d, "average.json"), {"averaged_from": sources, "n": len(cks)})
    print(f"averaged {len(cks)} decoders -> {os.path.join(d, 'last.pt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
