"""Tiled rendering of the tokenizer decoder: re-run the decoder only around changed tokens.

The decoder normalises with GroupNorm statistics over the whole picture, so a tile decoded on its
own differs from the full decode (7-13 levels). The *tile graph* (`tokenizer_decoder_tile.onnx`,
docs/bundle.md) is the same decoder, same weights, whose GroupNorms can normalise with statistics
given as an input instead of their own:

    inputs   indices       int64 [1, h, w]
             stats_in      float32 [S]   (S = 2 x the groups of every GroupNorm, see below)
             stats_weight  float32 [1]   0: own statistics (= tokenizer_decoder.onnx), 1: stats_in
    outputs  image         float32 [1, 3, 16h, 16w]
             stats         float32 [S]   the statistics it normalised with

`stats` / `stats_in` hold, for every GroupNorm in network order, the mean of each group then its
(biased) variance. A receiver decodes a full frame with `stats_weight = 0`, keeps `stats`, and
decodes tiles (changed tokens + a margin + a halo) with `stats_weight = 1` and those statistics.

    python -m uigc_models.tiled export --ckpt X.pt --bundle ../models/uigc-small
    python -m uigc_models.tiled measure --ckpt X.pt --frames /tmp/vtest --out report.json
    python -m uigc_models.tiled compare --full DIR_FULL --tiled DIR_TILES --ref /tmp/vtest --lpips-every 10 --out c.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .export import OPSET, load_tokenizer
from .model import Tokenizer

TILE_FILE = "tokenizer_decoder_tile.onnx"


class StatGroupNorm(nn.Module):
    """A GroupNorm that records its statistics or normalises with given ones (`ctx` decides)."""

    def __init__(self, gn: nn.GroupNorm, ctx: dict):
        super().__init__()
        self.groups, self.eps = gn.num_groups, gn.eps
        self.weight, self.bias = gn.weight, gn.bias
        self.ctx = ctx

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups
        xg = x.reshape(n, g, -1)
        mean = xg.mean(-1)
        var = ((xg - mean[..., None]) ** 2).mean(-1)
        given, wt = self.ctx.get("given"), self.ctx.get("weight")
        if given is not None:
            o = self.ctx["offset"]
            gm, gv = given[o:o + g][None], given[o + g:o + 2 * g][None]
            self.ctx["offset"] = o + 2 * g
            mean = wt * gm + (1.0 - wt) * mean
            var = wt * gv + (1.0 - wt) * var
        self.ctx["stats"].append(torch.cat([mean[0], var[0]]))
        y = (xg - mean[..., None]) / torch.sqrt(var[..., None] + self.eps)
        return y.reshape(n, c, h, w) * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def _swap_groupnorms(module: nn.Module, ctx: dict) -> int:
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, StatGroupNorm(child, ctx))
            n += 1
        else:
            n += _swap_groupnorms(child, ctx)
    return n


class TileDecoder(nn.Module):
    """indices [1,h,w], stats_in [S], stats_weight [1] -> image [1,3,16h,16w], stats [S]."""

    def __init__(self, tok: Tokenizer):
        super().__init__()
        import copy
        self.ctx: dict = {}
        self.decoder = copy.deepcopy(tok.decoder)
        self.n_norms = _swap_groupnorms(self.decoder, self.ctx)
        self.register_buffer("codebook", tok.quant.embed.detach().clone())
        self.stats_len = sum(2 * m.groups for m in self.decoder.modules() if isinstance(m, StatGroupNorm))

    def forward(self, indices, stats_in, stats_weight):
        self.ctx.clear()
        self.ctx.update(given=stats_in, weight=stats_weight, offset=0, stats=[])
        q = F.embedding(indices, self.codebook).permute(0, 3, 1, 2)
        img = self.decoder(q)
        stats = torch.cat(self.ctx["stats"])
        self.ctx.clear()
        return img, stats

    @torch.no_grad()
    def full(self, indices):
        """(image, stats) of a full decode (own statistics)."""
        return self(indices, torch.zeros(self.stats_len), torch.zeros(1))

    @torch.no_grad()
    def tile(self, indices, stats):
        return self(indices, stats, torch.ones(1))[0]


def export_tile_graph(tok: Tokenizer, out_dir: str, name: str = TILE_FILE) -> str:
    """Write the tile graph `name` (tokenizer_decoder_tile.onnx; opset 17, dynamic h, w) into out_dir."""
    from .export import finalize_onnx
    m = TileDecoder(tok).eval()
    p = os.path.join(out_dir, name)
    with torch.no_grad():
        torch.onnx.export(m, (torch.zeros(1, 4, 6, dtype=torch.long), torch.zeros(m.stats_len), torch.zeros(1)),
                          p, dynamo=False, opset_version=OPSET,
                          input_names=["indices", "stats_in", "stats_weight"], output_names=["image", "stats"],
                          dynamic_axes={"indices": {1: "h", 2: "w"}, "image": {2: "H", 3: "W"}},
                          do_constant_folding=True)
    return finalize_onnx(p)


# ---------------------------------------------------------------------------------------------
# measurements


def to_u8(y: np.ndarray) -> np.ndarray:
    """Network output [1,3,H,W] (mean 0.5, std 0.5) -> uint8 HxWx3 (the Rust core's rounding)."""
    x = (y[0].transpose(1, 2, 0) * 0.5 + 0.5) * 255.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), int(d.max())


def encode_frames(frames_dir: str, idxs, enc_path: str) -> list[np.ndarray]:
    import onnxruntime as ort
    from .data import load_rgb
    from .export import pad16, to_net
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(enc_path, so, providers=["CPUExecutionProvider"])
    return [s.run(["indices"], {"image": to_net(pad16(load_rgb(os.path.join(frames_dir, f"f_{i:05d}.png"))))})[0]
            for i in idxs]


def measure(tok: Tokenizer, frames_dir: str, enc_path: str, log=print) -> dict:
    td = TileDecoder(tok).eval()
    rep: dict = {}
    # 1. equality of the full graph with the plain decoder (float precision)
    idxs = [0, 100, 200, 300, 400, 500, 600, 700]
    grids = encode_frames(frames_dir, idxs, enc_path)
    g0 = torch.from_numpy(grids[0])
    with torch.no_grad():
        plain = tok.decode_indices(g0).numpy()
    full0, st0 = td.full(g0)
    rep["full_vs_plain_max_abs"] = float(np.abs(full0.numpy() - plain).max())
    log(f"full (own stats) vs plain decoder: max |diff| {rep['full_vs_plain_max_abs']:.2e}")
    # 2. halo: a tile of 4x4 tokens decoded with the frame's stats, cropped, against the full decode
    rows, cols = grids[0].shape[1:]
    halo_rows = []
    spots = [(8, 10), (20, 30), (14, 40), (28, 6)]
    fulls = [(td.full(torch.from_numpy(g))) for g in grids[:3]]
    for halo in range(0, 9):
        ms, mx = [], []
        for (g, (fi, st)) in zip(grids[:3], fulls):
            fu8 = to_u8(fi.numpy())
            for (r, c) in spots:
                r0, r1, c0, c1 = r, r + 4, c, c + 4
                R0, R1, C0, C1 = max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)
                t = td.tile(torch.from_numpy(np.ascontiguousarray(g[:, R0:R1, C0:C1])), st).numpy()
                tu8 = to_u8(t)[(r0 - R0) * 16:(r1 - R0) * 16, (c0 - C0) * 16:(c1 - C0) * 16]
                m, x = _diff(tu8, fu8[r0 * 16:r1 * 16, c0 * 16:c1 * 16])
                ms.append(m)
                mx.append(x)
        halo_rows.append({"halo": halo, "mean_abs": float(np.mean(ms)), "max_abs": int(np.max(mx))})
        log(f"halo {halo}: mean |diff| {np.mean(ms):.4f}, max {np.max(mx)} (tile 4x4 tokens, 3 frames x 4 spots)")
    rep["halo"] = halo_rows
    # 2b. own-stats tile (no stats given) for comparison, halo 4
    fi, st = fulls[0]
    fu8 = to_u8(fi.numpy())
    r, c = spots[0]
    t, _ = td.full(torch.from_numpy(np.ascontiguousarray(grids[0][:, r - 4:r + 8, c - 4:c + 8])))
    rep["own_stats_tile_halo4"] = _diff(to_u8(t.numpy())[64:128, 64:128], fu8[r * 16:r * 16 + 64, c * 16:c * 16 + 64])
    log(f"tile with its own statistics (halo 4): mean/max |diff| {rep['own_stats_tile_halo4']}")
    # 3. reach of a token change: change one token, diff of the full decodes at Chebyshev distance d
    reach = {}
    g = grids[0].copy()
    base = fu8
    for (r, c) in spots[:3]:
        g2 = g.copy()
        g2[0, r, c] = (g2[0, r, c] + 97) % tok.quant.k
        # same stats as base: isolates the receptive field from the stats change
        y2 = to_u8(td.tile(torch.from_numpy(g2), st).numpy())
        d = np.abs(y2.astype(np.int16) - base.astype(np.int16)).max(2)
        for dist in range(0, 10):
            ring = np.zeros((rows, cols), bool)
            ring[max(0, r - dist):r + dist + 1, max(0, c - dist):c + dist + 1] = True
            if dist:
                ring[max(0, r - dist + 1):r + dist, max(0, c - dist + 1):c + dist] = False
            m = np.kron(ring, np.ones((16, 16), bool))[:d.shape[0], :d.shape[1]]
            reach.setdefault(dist, []).append(int(d[m].max()))
    rep["reach"] = [{"distance": k, "max_abs": int(max(v))} for k, v in sorted(reach.items())]
    for k, v in sorted(reach.items()):
        log(f"one changed token, distance {k} tokens: max |diff| {max(v)}")
    # 4. stat drift: frame t decoded with frame t-k's stats vs its own
    drift = []
    allg = encode_frames(frames_dir, list(range(0, 795, 5)), enc_path)
    stats = {}
    for i, gg in zip(range(0, 795, 5), allg):
        y, s = td.full(torch.from_numpy(gg))
        stats[i] = (s, to_u8(y.numpy()))
    for k in (5, 10, 25, 50, 100, 200):
        ms, mx = [], []
        for t in range(k, 795, 5):
            if t - k not in stats or t % 50 not in (0, 25):
                continue
            y = to_u8(td.tile(torch.from_numpy(allg[t // 5]), stats[t - k][0]).numpy())
            m, x = _diff(y, stats[t][1])
            ms.append(m)
            mx.append(x)
        drift.append({"k": k, "frames": len(ms), "mean_abs": float(np.mean(ms)), "mean_max_abs": float(np.mean(mx)),
                      "max_abs": int(np.max(mx))})
        log(f"stale stats from {k} frames back: mean |diff| {np.mean(ms):.3f}, max {np.max(mx)} "
            f"(mean of per-frame max {np.mean(mx):.1f}) over {len(ms)} frames")
    rep["drift"] = drift
    return rep


def compare(full_dir: str, tiled_dir: str, ref_dir: str | None, lpips_every: int, log=print) -> dict:
    """Frames decoded with tiles against the same packets decoded whole: mean / max abs diff per frame,
    and (every `lpips_every`-th frame, against the source frames in `ref_dir`) LPIPS-alex of both."""
    import glob
    from .data import load_rgb
    files = sorted(glob.glob(os.path.join(full_dir, "frame_*.png")))
    rows = []
    scorer = None
    if ref_dir and lpips_every:
        from .lpips import LPIPS
        scorer = LPIPS("alex").eval()
    t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    for i, f in enumerate(files):
        a = load_rgb(f)
        b = load_rgb(os.path.join(tiled_dir, os.path.basename(f)))
        m, x = _diff(a, b)
        r = {"frame": i, "mean_abs": m, "max_abs": x}
        if scorer is not None and i % lpips_every == 0:
            ref = load_rgb(os.path.join(ref_dir, f"f_{i:05d}.png"))
            with torch.no_grad():
                r["lpips_full"] = float(scorer(t(ref), t(a))[0])
                r["lpips_tiled"] = float(scorer(t(ref), t(b))[0])
                r["lpips_full_vs_tiled"] = float(scorer(t(a), t(b))[0])
        rows.append(r)
    mean = lambda k: float(np.mean([r[k] for r in rows if k in r])) if any(k in r for r in rows) else None
    out = {"frames": len(rows), "mean_abs": mean("mean_abs"), "max_abs": int(max(r["max_abs"] for r in rows)),
           "mean_of_max_abs": mean("max_abs"), "frames_identical": int(sum(r["max_abs"] == 0 for r in rows)),
           "lpips_frames": sum("lpips_full" in r for r in rows), "lpips_full": mean("lpips_full"),
           "lpips_tiled": mean("lpips_tiled"), "lpips_full_vs_tiled": mean("lpips_full_vs_tiled"), "per_frame": rows}
    log({k: v for k, v in out.items() if k != "per_frame"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write the tile graph into a bundle and check it against torch")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--bundle", required=True)
    m = sub.add_parser("measure", help="halo, reach and stat-drift tables on a frame folder")
    m.add_argument("--ckpt", required=True)
    m.add_argument("--frames", default="/tmp/vtest")
    m.add_argument("--bundle", required=True)
    m.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="frames decoded with tiles vs the same stream decoded whole")
    c.add_argument("--full", required=True, help="stream-decode --render full output folder")
    c.add_argument("--tiled", required=True, help="stream-decode --render tiles output folder")
    c.add_argument("--ref", default=None, help="source frames f_%%05d.png (for LPIPS)")
    c.add_argument("--lpips-every", type=int, default=0)
    c.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd == "compare":
        rep = compare(args.full, args.tiled, args.ref, args.lpips_every)
        with open(args.out, "w") as f:
            json.dump(rep, f, indent=1)
        return 0
    tok, _ = load_tokenizer(args.ckpt)
    if args.cmd == "export":
        p = export_tile_graph(tok, args.bundle)
        print(f"wrote {p}: {check_tile_graph(args.bundle)}")
        return 0
    t0 = time.time()
    rep = measure(tok, args.frames, os.path.join(args.bundle, "tokenizer_encoder.onnx"))
    rep["seconds"] = time.time() - t0
    with open(args.out, "w") as f:
        json.dump(rep, f, indent=1)
    return 0


def codebook_size(bundle_dir: str) -> int:
    from .bundle import read_manifest
    return int(read_manifest(bundle_dir)["codebook_size"])


def check_tile_graph(bundle_dir: str, seed: int = 0, k: int | None = None,
                     decoder_file: str = "tokenizer_decoder.onnx", tile_file: str = TILE_FILE) -> dict:
    """onnxruntime: the tile graph `tile_file` with stats_weight 0 against `decoder_file`, and a tile with the
    full frame's statistics against the full decode (interior of a 6-token halo)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    dec = ort.InferenceSession(os.path.join(bundle_dir, decoder_file), so, providers=["CPUExecutionProvider"])
    tile = ort.InferenceSession(os.path.join(bundle_dir, tile_file), so, providers=["CPUExecutionProvider"])
    s_len = tile.get_inputs()[1].shape[0]
    rng = np.random.default_rng(seed)
    k = k or codebook_size(bundle_dir)
    idx = rng.integers(0, k, (1, 12, 16), dtype=np.int64)
    a = dec.run(["image"], {"indices": idx})[0]
    b, st = tile.run(["image", "stats"], {"indices": idx, "stats_in": np.zeros(s_len, np.float32),
                                          "stats_weight": np.zeros(1, np.float32)})
    c = tile.run(["image"], {"indices": idx, "stats_in": st, "stats_weight": np.ones(1, np.float32)})[0]
    # a tile (cols 1..15) with the full picture's statistics vs with its own: its centre (rows 4..8,
    # cols 5..11, 4-token halo) must be much closer to the full decode with the given ones
    sub = np.ascontiguousarray(idx[:, :, 1:15])
    tg = tile.run(["image"], {"indices": sub, "stats_in": st, "stats_weight": np.ones(1, np.float32)})[0]
    to = tile.run(["image"], {"indices": sub, "stats_in": st, "stats_weight": np.zeros(1, np.float32)})[0]
    ref = a[:, :, 64:128, 80:176]
    cen = lambda t: t[:, :, 64:128, 64:160]
    return {"stats_len": int(s_len), "own_stats_vs_decoder_max_abs": float(np.abs(a - b).max()),
            "given_stats_vs_decoder_max_abs": float(np.abs(a - c).max()),
            "tile_given_stats_mean_abs": float(np.abs(cen(tg) - ref).mean()),
            "tile_own_stats_mean_abs": float(np.abs(cen(to) - ref).mean())}


if __name__ == "__main__":
    sys.exit(main())
