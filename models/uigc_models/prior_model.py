"""Float PyTorch twin of the integer prior (docs/prior.md), fake-quant QAT, and the exporter.

The float model has exactly the integer model's structure: token / stage embeddings, pre-RMSNorm,
ReLU MLP, per-head relative position bias inside the window radius R, block-causal masks

* known i attends known j  iff stage_j <= stage_i and |dr|, |dc| <= R (itself included);
* query i attends known j  iff stage_j <  stage_i and in the window (no key: output 0).

One forward pass trains every stage: the sequence is the n known copies followed by the n query
copies of a token crop, the queries' outputs give the logits of every position.

With ``model.qat = True`` the forward mirrors the integer ops with fake quantisation (int8 weights
per output channel, int8 activations after norms / linears / attention, norm gains on the int
grid, straight-through estimators) using the activation scales in the buffers set by
``calibrate``. ``export_int`` turns the (QAT) float model into an ``IntPrior``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import intprior_ref as ref

# activation quant points per layer
ACT_POINTS = ("n1", "q", "k", "v", "n2", "h")


def fq(x, s, lo=-127.0, hi=127.0):
    """Fake quantisation to round(x s) clipped to [lo, hi]; STE inside the range, 0 outside."""
    xc = torch.maximum(torch.minimum(x, hi / s), lo / s) if torch.is_tensor(s) else x.clamp(lo / s, hi / s)
    return xc + (torch.round(xc * s) / s - xc).detach()


def wscale_rows(w):
    return 127.0 / w.detach().abs().amax(1).clamp_min(1e-8)


def fq_w_rows(w):
    s = wscale_rows(w)[:, None]
    return w + (torch.clamp(torch.round(w * s), -127, 127) / s - w).detach()


def fq_w_tensor(w):
    s = 127.0 / w.detach().abs().max().clamp_min(1e-8)
    return w + (torch.clamp(torch.round(w * s), -127, 127) / s - w).detach()


def stage_grid(rows, cols, levels, r0=0, c0=0):
    return torch.from_numpy(ref.stage_map(r0 + rows, c0 + cols, levels)[r0:, c0:].copy())


_MASKS = {}
_BIDX = {}


def masks(rows, cols, R, levels, r0=0, c0=0):
    """(mask [2n, n] bool, bias index [n, n] long, stages [n]) for known+query rows vs known keys."""
    ph = (r0 % (1 << levels), c0 % (1 << levels))
    key = (rows, cols, R, levels) + ph
    rr, cc = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    rr, cc = rr.reshape(-1), cc.reshape(-1)
    dr = rr[None, :] - rr[:, None]  # key - query
    dc = cc[None, :] - cc[:, None]
    if (rows, cols, R) not in _BIDX:
        _BIDX[(rows, cols, R)] = ((dr.clamp(-R, R) + R) * (2 * R + 1) + (dc.clamp(-R, R) + R)).long()
    if key not in _MASKS:
        st = stage_grid(rows, cols, levels, *ph).reshape(-1)
        win = (dr.abs() <= R) & (dc.abs() <= R)
        mkk = win & (st[None, :] <= st[:, None])
        mqk = win & (st[None, :] < st[:, None])
        _MASKS[key] = (torch.cat([mkk, mqk], 0), st, win)
    mask, st, _ = _MASKS[key]
    return mask, _BIDX[(rows, cols, R)], st


def reveal_masks(rows, cols, R, levels, r0, c0, cut, reveal):
    """Per-sample masks [B, 2n, n] for training iterative regeneration (docs/prior.md, "Known
    tokens"): in sample b, the positions ``reveal[b]`` of stage ``cut[b]`` are known (fixed by an
    earlier round). Their known copies and the queries of stage ``cut[b]`` attend to the known
    tokens of stages ``< cut[b]`` plus the revealed ones, exactly as the integer engine computes
    them during iterative regeneration. ``cut[b] < 0``: the coding-time masks unchanged. Queries of
    stages ``> cut[b]`` see a partial stage in these masks, so the loss must skip them."""
    mask, _, st = masks(rows, cols, R, levels, r0, c0)
    ph = (r0 % (1 << levels), c0 % (1 << levels))
    win = _MASKS[(rows, cols, R, levels) + ph][2]
    n = rows * cols
    allowed = win[None] & ((st[None, None, :] < cut[:, None, None]) | reveal[:, None, :])  # [B, n, n]
    rows_q = (st[None, :] == cut[:, None]) & ~reveal
    mk = torch.where(reveal[:, :, None], allowed, mask[None, :n])
    mq = torch.where(rows_q[:, :, None], allowed, mask[None, n:])
    return torch.cat([mk, mq], 1)


class PriorNet(nn.Module):
    def __init__(self, K=256, d=96, heads=4, layers=3, ffn=192, radius=6, levels=3, init_scale=1.0):
        super().__init__()
        assert d % heads == 0
        self.cfg = dict(K=K, d=d, heads=heads, layers=layers, ffn=ffn, radius=radius, levels=levels)
        self.K, self.d, self.H, self.L, self.ffn, self.R, self.levels = K, d, heads, layers, ffn, radius, levels
        self.stages = 1 + 3 * levels
        self.dh = d // heads
        self.tok = nn.Parameter(torch.randn(K, d) * init_scale)
        self.kstage = nn.Parameter(torch.randn(self.stages, d) * 0.3 * init_scale)
        self.qstage = nn.Parameter(torch.randn(self.stages, d) * init_scale)
        self.layers = nn.ModuleList()
        W = 2 * radius + 1
        for _ in range(layers):
            m = nn.Module()
            m.g1 = nn.Parameter(torch.ones(d))
            m.g2 = nn.Parameter(torch.ones(d))
            m.wq, m.wk, m.wv, m.wo = (nn.Linear(d, d) for _ in range(4))
            m.w1 = nn.Linear(d, ffn)
            m.w2 = nn.Linear(ffn, d)
            m.bias = nn.Parameter(torch.zeros(heads, W, W))
            self.layers.append(m)
        self.gf = nn.Parameter(torch.ones(d))
        self.wout = nn.Linear(d, K)
        self.register_buffer("act_scale", torch.ones(layers, len(ACT_POINTS)))
        self.register_buffer("nf_scale", torch.ones(()))
        self.qat = False
        self._calib = None

    # -- helpers ---------------------------------------------------------------------------
    def _norm(self, x, g, s):
        n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12)
        if self.qat:
            gq = g + (torch.round(g * s) / s - g).detach()
            return fq(n * gq, s)
        return n * g

    def _lin(self, lin, x, s_out=None, relu=False):
        w = fq_w_rows(lin.weight) if self.qat else lin.weight
        y = F.linear(x, w, lin.bias)
        if relu:
            y = F.relu(y)
        if self.qat and s_out is not None:
            y = fq(y, s_out, 0.0 if relu else -127.0, 127.0)
        return y

    def _rec(self, name, t):
        if self._calib is not None:
            a = t.detach().abs().reshape(-1)
            if a.numel() > 2_000_000:
                a = a[torch.randint(0, a.numel(), (2_000_000,))]
            v = float(torch.quantile(a.float(), 0.99995)) if a.numel() > 100 else float(a.max())
            self._calib.setdefault(name, []).append(max(v, 1e-6))

    # -- forward ---------------------------------------------------------------------------
    def forward(self, tokens, r0=0, c0=0, cut=None, reveal=None):
        """tokens: long [B, rows, cols] -> logits [B, rows*cols, K] of every position (query).
        ``cut`` [B] / ``reveal`` [B, n]: same-stage reveals (see ``reveal_masks``)."""
        B, rows, cols = tokens.shape
        n = rows * cols
        mask, bidx, st = masks(rows, cols, self.R, self.levels, r0, c0)
        st = st.to(tokens.device)
        xk = self.tok[tokens.reshape(B, n)] + self.kstage[st][None]
        xq = self.qstage[st][None].expand(B, n, self.d)
        x = torch.cat([xk, xq], 1)  # [B, 2n, d]
        if cut is not None:
            mask = reveal_masks(rows, cols, self.R, self.levels, r0, c0, cut, reveal)[:, None]  # [B,1,2n,n]
            madd = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, -1e9)
            has_key = mask.any(-1, keepdim=True).to(x.dtype)  # [B, 1, 2n, 1]
        else:
            madd = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, -1e9)  # [2n, n]
            has_key = mask.any(1).to(x.dtype)[None, None, :, None]  # rows without keys -> o = 0
        H, dh = self.H, self.dh
        for l, m in enumerate(self.layers):
            sc = self.act_scale[l]
            n1 = self._norm(x, m.g1, sc[0])
            self._rec(f"{l}.n1", n1)
            q = self._lin(m.wq, n1, sc[1])
            k = self._lin(m.wk, n1[:, :n], sc[2])
            v = self._lin(m.wv, n1[:, :n], sc[3])
            self._rec(f"{l}.q", q)
            self._rec(f"{l}.k", k)
            self._rec(f"{l}.v", v)
            qh = q.view(B, 2 * n, H, dh).transpose(1, 2)
            kh = k.view(B, n, H, dh).transpose(1, 2)
            vh = v.view(B, n, H, dh).transpose(1, 2)
            bias = m.bias.view(H, -1)[:, bidx]  # [H, n, n]
            am = torch.cat([bias, bias], 1)[None] + (madd if madd.dim() == 4 else madd[None, None])
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=am)  # scale 1/sqrt(dh)
            o = (o * has_key).transpose(1, 2).reshape(B, 2 * n, self.d)
            if self.qat:
                o = fq(o, sc[3])
            x = x + self._lin(m.wo, o)
            n2 = self._norm(x, m.g2, sc[4])
            self._rec(f"{l}.n2", n2)
            h = self._lin(m.w1, n2, sc[5], relu=True)
            self._rec(f"{l}.h", h)
            x = x + self._lin(m.w2, h)
        xq = x[:, n:]
        nf = self._norm(xq, self.gf, self.nf_scale)
        self._rec("nf", nf)
        w = fq_w_tensor(self.wout.weight) if self.qat else self.wout.weight
        return F.linear(nf, w, self.wout.bias)

    def loss_bits(self, tokens, r0=0, c0=0, cut=None, reveal=None):
        """Mean bits/token over all positions of the batch, and bits per stage (sum, count)."""
        logits = self.forward(tokens, r0, c0, cut, reveal)
        B, rows, cols = tokens.shape
        ce = F.cross_entropy(logits.reshape(-1, self.K), tokens.reshape(-1), reduction="none") / math.log(2)
        return ce.mean(), ce.view(B, rows * cols)

    @torch.no_grad()
    def calibrate(self, grids, max_grids=64):
        """Sets the activation scales (127 / high percentile of |activation|) from float passes."""
        was_qat, self.qat = self.qat, False
        self._calib = {}
        for g in grids[:max_grids]:
            self.forward(torch.as_tensor(g, dtype=torch.long)[None])
        c = {k: max(v) for k, v in self._calib.items()}
        self._calib = None
        self.qat = was_qat
        for l in range(self.L):
            for i, p in enumerate(ACT_POINTS):
                self.act_scale[l, i] = 127.0 / c[f"{l}.{p}"]
        self.nf_scale.fill_(127.0 / c["nf"])
        return c


# ----------------------------------------------------------------------------------------------
# exporter

def _pick_shift(ratio, limit=(1 << 15) - 1):
    """sh in [0, 47] with max |round(ratio 2^sh)| <= limit, as large as possible."""
    mx = float(np.max(np.abs(ratio)))
    assert mx > 0
    sh = int(math.floor(math.log2(limit / mx)))
    sh = min(max(sh, 0), 47)
    m = np.round(ratio * 2.0 ** sh).astype(np.int64)
    assert np.all(np.abs(m) < (1 << 16)), f"multiplier overflow (ratio {mx})"
    return sh, m


def exp_table(T: float, scale_bits: int, max_len: int | None = None) -> np.ndarray:
    """round(2^scale_bits exp(-t / T)) for t = 0.. while >= 1 (the only float exp)."""
    vals = []
    t = 0
    while True:
        v = int(round((1 << scale_bits) * math.exp(-t / T)))
        if v < 1 or (max_len is not None and t >= max_len):
            break
        vals.append(v)
        t += 1
    return np.array(vals, np.uint32)


@torch.no_grad()
def export_int(model: PriorNet, T_att=32.0, T_out=64.0, att_bits=24, out_bits=28,
               att_len=None, out_len=None, emb_max=16000.0) -> ref.IntPrior:
    """Float (QAT) model -> IntPrior. Uses model.act_scale / nf_scale (call calibrate first)."""
    f64 = lambda t: t.detach().double().cpu().numpy()
    d, H, dh, K = model.d, model.H, model.dh, model.K
    tok, ks, qs = f64(model.tok), f64(model.kstage), f64(model.qstage)
    S_x = emb_max / max(np.abs(tok).max(), np.abs(ks).max(), np.abs(qs).max())
    T = {}
    i16 = lambda a: np.round(a).astype(np.int64)
    T["tok"] = i16(tok * S_x)
    T["kstage"] = i16(ks * S_x)
    T["qstage"] = i16(qs * S_x)
    att_ratio = []
    hdr_shifts = {}
    for l, m in enumerate(model.layers):
        sc = f64(model.act_scale[l])
        S_n1, S_q, S_k, S_v, S_n2, S_h = sc
        p = f"l{l}."
        T[p + "g1"] = i16(f64(m.g1) * S_n1)
        T[p + "g2"] = i16(f64(m.g2) * S_n2)
        shifts = []

        def lin(name, mod, S_in, S_out):
            w, b = f64(mod.weight), f64(mod.bias)
            s_w = 127.0 / np.maximum(np.abs(w).max(1), 1e-8)
            T[p + "w" + name] = np.clip(np.round(w * s_w[:, None]), -127, 127).astype(np.int64)
            T[p + "b" + name] = np.round(b * s_w * S_in).astype(np.int64)
            sh, mm = _pick_shift(S_out / (s_w * S_in))
            T[p + "m" + name] = mm
            shifts.append(sh)

        lin("q", m.wq, S_n1, S_q)
        lin("k", m.wk, S_n1, S_k)
        lin("v", m.wv, S_n1, S_v)
        lin("o", m.wo, S_v, S_x)
        lin("1", m.w1, S_n2, S_h)
        lin("2", m.w2, S_h, S_x)
        T[p + "shifts"] = np.array(shifts, np.int64)
        qk = S_q * S_k * math.sqrt(dh)
        T[p + "bias"] = np.round(f64(m.bias) * qk).astype(np.int64)
        att_ratio.append(np.full(H, T_att / qk))
    att_ratio = np.stack(att_ratio)
    ash = int(min(max(math.floor(math.log2(((1 << 24) - 1) / att_ratio.max())), 0), 47))
    att_a = np.round(att_ratio * 2.0 ** ash).astype(np.int64)
    assert np.all(att_a >= 1), "attention multiplier underflow"
    for l in range(model.L):
        T[f"l{l}.att_a"] = att_a[l]
    S_nf = float(model.nf_scale)
    T["gf"] = i16(f64(model.gf) * S_nf)
    w, b = f64(model.wout.weight), f64(model.wout.bias)
    s_o = 127.0 / max(np.abs(w).max(), 1e-8)
    T["wout"] = np.clip(np.round(w * s_o), -127, 127).astype(np.int64)
    T["bout"] = np.round(b * s_o * S_nf).astype(np.int64)
    ratio_out = T_out / (s_o * S_nf)
    osh = int(min(max(math.floor(math.log2(((1 << 24) - 1) / ratio_out)), 0), 47))
    a_out = int(round(ratio_out * 2.0 ** osh))
    assert a_out >= 1
    T["att_exp"] = exp_table(T_att, att_bits, att_len)
    T["out_exp"] = exp_table(T_out, out_bits, out_len)
    header = dict(format=ref.FORMAT, K=K, d=d, heads=H, layers=model.L, ffn=model.ffn, radius=model.R,
                  stages=model.stages, ash=ash, osh=osh, a_out=a_out)
    specs = {n: (dt, sh) for n, dt, sh in _specs(header, T)}
    tensors = {}
    for name, (dt, shape) in specs.items():
        a = np.asarray(T[name])
        info = np.iinfo(ref.DTYPES[dt])
        assert a.min() >= info.min and a.max() <= info.max, f"{name} out of {dt} range"
        if dt == "i8":
            assert a.min() >= -127
        tensors[name] = a.astype(ref.DTYPES[dt]).reshape(shape)
    return ref.IntPrior(header, tensors).validate()


@torch.no_grad()
def import_int(prior: ref.IntPrior, act_max: float = 4.0) -> PriorNet:
    """IntPrior -> float PriorNet computing the same function up to rounding (the inverse of
    ``export_int``): a trained prior whose float checkpoint is gone can be fine-tuned again
    (e.g. on another tokenizer's grids). The float units are free (``export_int`` recalibrates
    them): the residual stream is scaled so that the largest embedding is 1, every other
    activation so that the integer range +-127 is +-``act_max``. The per-head attention
    temperature (``att_a``) is folded into the query weights, the output temperature into
    ``wout``."""
    h = prior.header
    model = PriorNet(K=h["K"], d=h["d"], heads=h["heads"], layers=h["layers"], ffn=h["ffn"],
                     radius=h["radius"], levels=ref.levels_of(h["stages"]))
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64), dtype=torch.float32)
    S_x = float(max(np.abs(prior[n]).max() for n in ("tok", "kstage", "qstage")))
    S_a = 127.0 / act_max
    model.tok.copy_(t(prior["tok"] / S_x))
    model.kstage.copy_(t(prior["kstage"] / S_x))
    model.qstage.copy_(t(prior["qstage"] / S_x))
    dh = model.dh
    for l, m in enumerate(model.layers):
        p = f"l{l}."
        sh = prior[p + "shifts"]
        m.g1.copy_(t(prior[p + "g1"] / S_a))
        m.g2.copy_(t(prior[p + "g2"] / S_a))
        # per-head logit factor of the integer attention: (q.k + bias) a_h / 2^ash / T_att, with
        # T_att the exp table's temperature (its entries are 2^b exp(-t / T_att))
        att = prior["att_exp"].astype(np.float64)
        T_att = 1.0 / math.log(att[0] / att[1])
        c = prior[p + "att_a"].astype(np.float64) / 2.0 ** prior.ash / T_att  # [H]
        # q_f . k_f / sqrt(dh) = c_h q_int . k_int with k_f = k_int / S_a: q_f = c_h sqrt(dh) S_a q_int
        q_out = np.repeat(1.0 / (c * math.sqrt(dh) * S_a), dh)  # q_int per unit of q_f, per row

        def lin(name, mod, S_in, S_out, i):
            scale = prior[p + "m" + name].astype(np.float64) / 2.0 ** int(sh[i])
            S_out = np.broadcast_to(np.asarray(S_out, np.float64), scale.shape)
            mod.weight.copy_(t(prior[p + "w" + name] * (scale * S_in / S_out)[:, None]))
            mod.bias.copy_(t(prior[p + "b" + name] * scale / S_out))

        lin("q", m.wq, S_a, q_out, 0)
        lin("k", m.wk, S_a, S_a, 1)
        lin("v", m.wv, S_a, S_a, 2)
        lin("o", m.wo, S_a, S_x, 3)
        lin("1", m.w1, S_a, S_a, 4)
        lin("2", m.w2, S_a, S_x, 5)
        m.bias.copy_(t(prior[p + "bias"] * c[:, None, None]))
    model.gf.copy_(t(prior["gf"] / S_a))
    out = prior["out_exp"].astype(np.float64)
    T_out = 1.0 / math.log(out[0] / out[1])
    c_out = prior.a_out / 2.0 ** prior.osh / T_out
    model.wout.weight.copy_(t(prior["wout"] * S_a * c_out))
    model.wout.bias.copy_(t(prior["bout"] * c_out))
    model.act_scale.fill_(S_a)
    model.nf_scale.fill_(S_a)
    return model


def _specs(header, T):
    class _P:
        pass
    p = _P()
    for k in ref.HEADER_INTS:
        setattr(p, k, header[k])
    p.t = {"att_exp": T["att_exp"], "out_exp": T["out_exp"]}
    return ref.IntPrior.tensor_specs(p)


# ----------------------------------------------------------------------------------------------
# evaluation helpers

@torch.no_grad()
def float_grid_bits(model: PriorNet, grid) -> tuple[np.ndarray, np.ndarray]:
    """(bits per stage, tokens per stage) of one full grid under the float (or QAT) model."""
    g = torch.as_tensor(np.asarray(grid), dtype=torch.long)[None]
    _, ce = model.loss_bits(g)
    st = ref.stage_map(g.shape[1], g.shape[2], model.levels).reshape(-1)
    ce = ce[0].double().numpy()
    return (np.array([ce[st == s].sum() for s in range(model.stages)]),
            np.array([(st == s).sum() for s in range(model.stages)]))


def int_grid_bits(prior: ref.IntPrior, grid) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(grid)
    return ref.grid_bits(prior, g.reshape(-1), g.shape[0], g.shape[1])
