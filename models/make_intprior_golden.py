"""Golden vectors of the integer prior for the Rust test (tests/data/intprior/).

A small random float PriorNet (K=16, d=32, heads=2, layers=2, ffn=64, radius=3, stages=10) with
deliberately large weights / position biases is exported through the real exporter, so every
integer constant is exercised (negative values, saturating clamp8, keys outside the window, keys
of a later stage inside the window, queries with no key, t >= len(ATT_EXP) and t >= len(OUT_EXP)).
For each grid the JSON holds the tokens and, for every stage, the flattened uint32 tables of that
stage's positions in raster order (intprior_ref.stage_tables).

    /root/.cache/uigc/venv/bin/python models/make_intprior_golden.py
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uigc_models import intprior_ref as ref  # noqa: E402
from uigc_models import prior_model as pm  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "intprior")
GRIDS = [(1, 1), (3, 5), (9, 7), (16, 16), (20, 13), (8, 8), (2, 17)]
CFG = dict(K=16, d=32, heads=2, layers=2, ffn=64, radius=3, levels=3)


def smooth_grid(rng, rows, cols, K):
    """Tokens with some spatial structure (blocks + noise), like real token grids."""
    base = rng.integers(0, K, (rows // 3 + 2, cols // 3 + 2))
    g = np.kron(base, np.ones((3, 3), np.int64))[:rows, :cols]
    noise = rng.random((rows, cols)) < 0.35
    return np.where(noise, rng.integers(0, K, (rows, cols)), g).astype(np.int64)


def build_prior(seed=1234):
    torch.manual_seed(seed)
    m = pm.PriorNet(**CFG, init_scale=1.0)
    with torch.no_grad():
        for lay in m.layers:
            lay.wq.weight.mul_(3.0)
            lay.wk.weight.mul_(3.0)
            lay.wv.weight.mul_(2.0)
            lay.wo.weight.mul_(2.0)
            lay.w1.weight.mul_(2.0)
            lay.w2.weight.mul_(2.0)
            for lin in (lay.wq, lay.wk, lay.wv, lay.wo, lay.w1, lay.w2):
                lin.bias.normal_(0, 0.3)
            lay.bias.normal_(0, 3.0)
            lay.g1.uniform_(0.5, 1.5)
            lay.g2.uniform_(0.5, 1.5)
        m.gf.uniform_(0.5, 1.5)
        m.wout.weight.mul_(6.0)
        m.wout.bias.normal_(0, 1.0)
    rng = np.random.default_rng(seed)
    calib = [smooth_grid(rng, 16, 16, CFG["K"]) for _ in range(4)]
    m.calibrate(calib)
    # 1.3x scales -> some activations saturate in clamp8 (exercised on purpose)
    m.act_scale.mul_(1.3)
    m.nf_scale.mul_(1.3)
    # short exponential tables so t >= len(table) occurs
    return pm.export_int(m, T_att=6.0, T_out=10.0, att_bits=16, out_bits=20)


def main():
    os.makedirs(OUT, exist_ok=True)
    prior = build_prior()
    data = ref.save_prior(prior, os.path.join(OUT, "prior.bin"))
    sha = hashlib.sha256(data).hexdigest()
    rng = np.random.default_rng(99)
    ref.STATS = {}
    index = []
    for rows, cols in GRIDS:
        g = smooth_grid(rng, rows, cols, prior.K)
        cache = ref.known_pass(prior, g.reshape(-1), rows, cols)
        stages = []
        for s in range(prior.stages):
            t = ref.stage_tables(prior, g.reshape(-1), rows, cols, s, cache=cache)
            stages.append([int(v) for v in t.reshape(-1)])
        name = f"grid_{rows}x{cols}.json"
        with open(os.path.join(OUT, name), "w") as f:
            json.dump({"prior": "prior.bin", "prior_sha256": sha, "rows": rows, "cols": cols,
                       "tokens": [int(v) for v in g.reshape(-1)], "stages": stages}, f,
                      separators=(",", ":"))
            f.write("\n")
        index.append(name)
    stats = dict(ref.STATS)
    ref.STATS = None
    print("prior.bin", len(data), "bytes sha256", sha)
    print("header", {k: prior.header[k] for k in ref.HEADER_INTS})
    print("len(att_exp)", prior.t["att_exp"].size, "len(out_exp)", prior.t["out_exp"].size)
    print("coverage", stats)
    for k in ("att_t_beyond_table", "att_empty_queries", "att_inwindow_disallowed",
              "out_t_beyond_table", "clamp8_saturated"):
        assert stats.get(k, 0) > 0, f"golden vectors do not exercise {k}"
    with open(os.path.join(OUT, "coverage.json"), "w") as f:
        json.dump({"prior_sha256": sha, "grids": index, "coverage": stats}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
