"""Numpy int64 reference of the exact integer prior ``int-transformer-v1`` (docs/prior.md).

This module is the spec in code: every function mirrors one line of docs/prior.md, in int64 with
explicit flooring semantics (numpy ``>>`` on int64 is an arithmetic shift, ``//`` floors). No float
is used on any value that reaches a probability table (``isqrt`` uses a float first guess and then
corrects it exactly).

Public API:

* ``IntPrior`` / ``load_prior(path)`` / ``save_prior(prior, path)`` — the ``prior.bin`` container;
* ``stage_of(r, c, levels)``, ``stage_map(rows, cols, levels)``, ``plan(rows, cols, levels)``;
* ``quantize_weights(w)`` — exact port of ``src/codec/entropy.rs::quantize_weights`` (rows too);
* ``known_pass(prior, tokens, rows, cols)`` — the cached keys/values of every known token;
* ``stage_tables(prior, tokens, rows, cols, stage, cache=None)`` — uint32 ``[n_stage, K]``;
* ``all_stage_tables(prior, tokens, rows, cols)`` — list over stages (known-pass cache shared);
* ``grid_bits(prior, tokens, rows, cols)`` — ideal code length per stage (float statistic only).
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np

MAGIC = b"UGIP"
FORMAT = "int-transformer-v1"
PRECISION = 24
TOTAL = 1 << PRECISION
RES_MAX = 1 << 24

# optional coverage counters (golden-vector generation): set to a dict to enable
STATS = None


def _count(name, n):
    if STATS is not None:
        STATS[name] = STATS.get(name, 0) + int(n)

DTYPES = {"i8": np.dtype("<i1"), "i16": np.dtype("<i2"), "i32": np.dtype("<i4"), "u32": np.dtype("<u4")}
HEADER_INTS = ("K", "d", "heads", "layers", "ffn", "radius", "stages", "ash", "osh", "a_out")


# ----------------------------------------------------------------------------------------------
# schedule (docs/bitstream.md, src/codec/schedule.rs)

def stage_of(row: int, col: int, levels: int) -> int:
    level = 0
    for l in range(1, levels + 1):
        mask = (1 << l) - 1
        if row & mask or col & mask:
            level = l
            break
    if level == 0:
        return 0
    odd_row = (row >> (level - 1)) & 1 == 1
    odd_col = (col >> (level - 1)) & 1 == 1
    within = {(True, True): 0, (True, False): 1, (False, True): 2}[(odd_row, odd_col)]
    return 1 + 3 * (levels - level) + within


def stage_map(rows: int, cols: int, levels: int) -> np.ndarray:
    """int64 [rows, cols]: the stage of every position."""
    out = np.empty((rows, cols), np.int64)
    for r in range(rows):
        for c in range(cols):
            out[r, c] = stage_of(r, c, levels)
    return out


def plan(rows: int, cols: int, levels: int) -> list[np.ndarray]:
    """Raster indices of every stage, in raster order."""
    st = stage_map(rows, cols, levels).ravel()
    return [np.nonzero(st == s)[0].astype(np.int64) for s in range(1 + 3 * levels)]


def levels_of(stages: int) -> int:
    assert stages >= 4 and (stages - 1) % 3 == 0, f"stages={stages} is not 1 + 3 L"
    return (stages - 1) // 3


# ----------------------------------------------------------------------------------------------
# integer primitives

def rshift(v, s: int):
    v = np.asarray(v, np.int64)
    s = int(s)
    if s == 0:
        return v
    return (v + (1 << (s - 1))) >> s


def rdiv(a, b):
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    assert np.all(b > 0)
    return (2 * a + b) // (2 * b)


def clamp8(v):
    v = np.asarray(v, np.int64)
    _count("clamp8_saturated", (np.abs(v) > 127).sum())
    return np.clip(v, -127, 127)


def clampr(v):
    return np.clip(np.asarray(v, np.int64), -RES_MAX, RES_MAX)


def isqrt(n):
    """Exact floor(sqrt(n)) for int64 arrays, 0 <= n < 2^62."""
    n = np.asarray(n, np.int64)
    assert np.all(n >= 0)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    for _ in range(4):
        r = np.where(r * r > n, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= n, r + 1, r)
    assert np.all(r * r <= n) and np.all((r + 1) * (r + 1) > n)
    return r


def norm(x, g):
    """x int64 [N, d], g [d] -> int8-valued int64 [N, d]."""
    x = np.asarray(x, np.int64)
    d = x.shape[-1]
    ms = (x * x).sum(-1) // d
    r = np.maximum(isqrt(ms), 1)
    return clamp8(rdiv(x * np.asarray(g, np.int64)[None, :], r[:, None]))


def acc(w, b, n):
    """acc_o = b_o + sum_i W[o][i] n_i  (int64 [N, out])."""
    return np.asarray(n, np.int64) @ np.asarray(w, np.int64).T + np.asarray(b, np.int64)[None, :]


def lin8(w, b, m, sh, n):
    return clamp8(rshift(acc(w, b, n) * np.asarray(m, np.int64)[None, :], sh))


def lin8relu(w, b, m, sh, n):
    return np.clip(rshift(acc(w, b, n) * np.asarray(m, np.int64)[None, :], sh), 0, 127)


def resadd(x, w, b, m, sh, n):
    return clampr(np.asarray(x, np.int64) + rshift(acc(w, b, n) * np.asarray(m, np.int64)[None, :], sh))


def quantize_weights(weights) -> np.ndarray:
    """Exact port of entropy::quantize_weights; accepts [K] or [N, K] integer weights (< 2^32)."""
    w = np.asarray(weights, np.int64)
    one = w.ndim == 1
    if one:
        w = w[None, :]
    assert np.all(w >= 0) and np.all(w < (1 << 32))
    k = w.shape[1]
    assert 0 < k <= (1 << 20), "alphabet size out of range"
    total = w.sum(1)
    budget = TOTAL - k
    safe = np.where(total == 0, 1, total)
    out = np.where((total == 0)[:, None], 1 + budget // k, 1 + (w * budget) // safe[:, None])
    rest = TOTAL - out.sum(1)
    best = np.argmax(out, axis=1)  # first index of the maximum == Rust's strict '>' scan
    out[np.arange(out.shape[0]), best] += rest
    assert np.all(out >= 1) and np.all(out.sum(1) == TOTAL)
    out = out.astype(np.uint32)
    return out[0] if one else out


# ----------------------------------------------------------------------------------------------
# container

class IntPrior:
    """Header ints as attributes, tensors in ``self.t`` (numpy arrays of the file dtypes)."""

    def __init__(self, header: dict, tensors: dict):
        self.header = dict(header)
        for k in HEADER_INTS:
            setattr(self, k, int(header[k]))
        self.t = tensors
        self._i64 = {k: np.asarray(v, np.int64) for k, v in tensors.items()}
        self.levels = levels_of(self.stages)
        self.dh = self.d // self.heads

    def __getitem__(self, name):
        return self._i64[name]

    def tensor_specs(self):
        K, d, H, L, F, R, S = self.K, self.d, self.heads, self.layers, self.ffn, self.radius, self.stages
        specs = [("tok", "i16", (K, d)), ("kstage", "i16", (S, d)), ("qstage", "i16", (S, d))]
        for l in range(L):
            p = f"l{l}."
            specs += [(p + "g1", "i16", (d,)), (p + "g2", "i16", (d,))]
            for n in "qkvo":
                specs += [(p + "w" + n, "i8", (d, d))]
            for n in "qkvo":
                specs += [(p + "b" + n, "i32", (d,))]
            for n in "qkvo":
                specs += [(p + "m" + n, "i32", (d,))]
            specs += [(p + "w1", "i8", (F, d)), (p + "b1", "i32", (F,)), (p + "m1", "i32", (F,)),
                      (p + "w2", "i8", (d, F)), (p + "b2", "i32", (d,)), (p + "m2", "i32", (d,)),
                      (p + "shifts", "i32", (6,)), (p + "att_a", "i32", (H,)),
                      (p + "bias", "i32", (H, 2 * R + 1, 2 * R + 1))]
        specs += [("gf", "i16", (d,)), ("wout", "i8", (K, d)), ("bout", "i32", (K,)),
                  ("att_exp", "u32", tuple(self.t["att_exp"].shape)),
                  ("out_exp", "u32", tuple(self.t["out_exp"].shape))]
        return specs

    def validate(self):
        assert self.header.get("format") == FORMAT
        assert self.d % self.heads == 0
        for name, dt, shape in self.tensor_specs():
            a = self.t[name]
            assert a.dtype == DTYPES[dt], f"{name}: dtype {a.dtype} != {dt}"
            assert tuple(a.shape) == tuple(shape), f"{name}: shape {a.shape} != {shape}"
        assert set(self.t) == {s[0] for s in self.tensor_specs()}, "unexpected tensors"
        for l in range(self.layers):
            sh = self.t[f"l{l}.shifts"]
            assert np.all(sh >= 0) and np.all(sh < 48), f"l{l}.shifts out of range"
            for n in ("mq", "mk", "mv", "mo", "m1", "m2"):
                assert np.all(np.abs(self[f"l{l}.{n}"]) < (1 << 16)), f"l{l}.{n}: |m| >= 2^16"
        assert 0 <= self.ash < 48 and 0 <= self.osh < 48
        assert self.t["att_exp"].size >= 1 and int(self.t["att_exp"][0]) > 0
        assert self.t["out_exp"].size >= 1 and int(self.t["out_exp"][0]) > 0
        return self


def save_prior(prior: IntPrior, path: str) -> bytes:
    """Writes prior.bin; returns the bytes. Tensors in the order of docs/prior.md's table."""
    prior.validate()
    entries, blobs, off = [], [], 0
    for name, dt, shape in prior.tensor_specs():
        a = np.ascontiguousarray(prior.t[name], dtype=DTYPES[dt])
        pad = (-off) % 8
        blobs.append(b"\0" * pad)
        off += pad
        entries.append({"name": name, "dtype": dt, "shape": [int(s) for s in shape], "offset": off})
        b = a.tobytes()
        blobs.append(b)
        off += len(b)
    header = {"format": FORMAT}
    for k in HEADER_INTS:
        header[k] = int(getattr(prior, k))
    header["tensors"] = entries
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    data = MAGIC + struct.pack("<I", len(hb)) + hb + b"".join(blobs)
    if path:
        with open(path, "wb") as f:
            f.write(data)
    return data


def parse_prior(data: bytes) -> IntPrior:
    assert data[:4] == MAGIC, "bad magic"
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    tensors = {}
    for e in header["tensors"]:
        dt = DTYPES[e["dtype"]]
        shape = tuple(int(s) for s in e["shape"])
        off = int(e["offset"])
        assert off % 8 == 0, f"{e['name']}: offset not 8-byte aligned"
        cnt = int(np.prod(shape)) if shape else 1
        start = base + off
        end = start + cnt * dt.itemsize
        assert end <= len(data), f"{e['name']}: data past end of file"
        tensors[e["name"]] = np.frombuffer(data[start:end], dtype=dt).reshape(shape).copy()
    return IntPrior(header, tensors).validate()


def load_prior(path: str) -> IntPrior:
    with open(path, "rb") as f:
        return parse_prior(f.read())


# ----------------------------------------------------------------------------------------------
# the model

def _offsets(R: int):
    return [(dr, dc) for dr in range(-R, R + 1) for dc in range(-R, R + 1)]


def attention(prior: IntPrior, layer: int, q, qpos, k, v, kstage, rows, cols, allowed):
    """Per-head windowed attention, exact.

    q: int64 [P, d] (queries), qpos: (rows_q, cols_q, stage_q) int64 [P] each;
    k, v: int64 [N, d] of all known grid positions (raster), kstage: int64 [N];
    allowed(stage_q, stage_k) -> bool array.  Returns o int64 [P, d].
    """
    R, H, dh = prior.radius, prior.heads, prior.dh
    rq, cq, sq = qpos
    P = q.shape[0]
    offs = _offsets(R)
    W = len(offs)
    bias = prior[f"l{layer}.bias"]  # [H, 2R+1, 2R+1]
    a = prior[f"l{layer}.att_a"]  # [H]
    att_exp = prior["att_exp"]
    E = att_exp.shape[0]
    qh = q.reshape(P, H, dh)
    S = np.zeros((P, W, H), np.int64)
    valid = np.zeros((P, W), bool)
    kidx = np.zeros((P, W), np.int64)
    for wi, (dr, dc) in enumerate(offs):
        rk, ck = rq + dr, cq + dc
        inb = (rk >= 0) & (rk < rows) & (ck >= 0) & (ck < cols)
        idx = np.where(inb, rk * cols + ck, 0)
        ok = inb & allowed(sq, kstage[idx])
        valid[:, wi] = ok
        kidx[:, wi] = idx
        kh = k[idx].reshape(P, H, dh)
        S[:, wi, :] = (qh * kh).sum(-1) + bias[:, dr + R, dc + R][None, :]
    any_valid = valid.any(1)
    neg = np.iinfo(np.int64).min // 4
    Sm = np.where(valid[:, :, None], S, neg)
    mx = Sm.max(1)  # [P, H]
    diff = np.where(valid[:, :, None], mx[:, None, :] - S, 0)
    assert np.all(diff >= 0)
    t = rshift(diff * a[None, None, :], prior.ash)
    w = np.where(valid[:, :, None] & (t < E), att_exp[np.minimum(t, E - 1)], 0)  # [P, W, H]
    if STATS is not None:
        _count("att_keys", valid.sum() * H)
        _count("att_t_beyond_table", (valid[:, :, None] & (t >= E)).sum())
        _count("att_empty_queries", (~any_valid).sum())
        inwin = np.zeros((P, W), bool)
        for wi, (dr, dc) in enumerate(offs):
            rk, ck = rq + dr, cq + dc
            inwin[:, wi] = (rk >= 0) & (rk < rows) & (ck >= 0) & (ck < cols)
        _count("att_inwindow_disallowed", (inwin & ~valid).sum())
    num = np.zeros((P, H, dh), np.int64)
    for wi in range(W):
        vh = v[kidx[:, wi]].reshape(P, H, dh)
        num += w[:, wi, :, None] * vh
    den = w.sum(1)  # [P, H]
    den_safe = np.where(den > 0, den, 1)
    assert np.all((den > 0) | ~any_valid[:, None])
    o = clamp8(rdiv(num, den_safe[:, :, None]))
    o = np.where(any_valid[:, None, None], o, 0)
    return o.reshape(P, H * dh)


def _layer_mlp(prior, l, x, o):
    p = f"l{l}."
    sh = prior[p + "shifts"]
    x = resadd(x, prior[p + "wo"], prior[p + "bo"], prior[p + "mo"], sh[3], o)
    n2 = norm(x, prior[p + "g2"])
    h = lin8relu(prior[p + "w1"], prior[p + "b1"], prior[p + "m1"], sh[4], n2)
    x = resadd(x, prior[p + "w2"], prior[p + "b2"], prior[p + "m2"], sh[5], h)
    return x


def known_pass(prior: IntPrior, tokens, rows: int, cols: int):
    """Keys and values (int64 [layers][N, d]) of every grid token as a known token.

    Known token i attends known j iff stage_j <= stage_i and j in i's window (itself included).
    Because every known token is the grid's true token, one pass over the whole grid equals the
    stage-by-stage cache of the codec.
    """
    tokens = np.asarray(tokens, np.int64).reshape(-1)
    assert tokens.shape[0] == rows * cols
    assert np.all((tokens >= 0) & (tokens < prior.K))
    st = stage_map(rows, cols, prior.levels).ravel()
    rr, cc = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    x = prior["tok"][tokens] + prior["kstage"][st]
    ks, vs = [], []
    for l in range(prior.layers):
        p = f"l{l}."
        sh = prior[p + "shifts"]
        n1 = norm(x, prior[p + "g1"])
        q = lin8(prior[p + "wq"], prior[p + "bq"], prior[p + "mq"], sh[0], n1)
        k = lin8(prior[p + "wk"], prior[p + "bk"], prior[p + "mk"], sh[1], n1)
        v = lin8(prior[p + "wv"], prior[p + "bv"], prior[p + "mv"], sh[2], n1)
        ks.append(k)
        vs.append(v)
        if l == prior.layers - 1:
            break  # a known token's last layer needs only its k, v
        o = attention(prior, l, q, (rr, cc, st), k, v, st, rows, cols, lambda a, b: b <= a)
        x = _layer_mlp(prior, l, x, o)
    return {"k": ks, "v": vs, "stage": st, "rows": rows, "cols": cols}


def query_tables(prior: IntPrior, cache: dict, positions) -> np.ndarray:
    """uint32 [P, K] tables of the query positions (raster indices) given the known cache."""
    rows, cols, st = cache["rows"], cache["cols"], cache["stage"]
    positions = np.asarray(positions, np.int64)
    P = positions.shape[0]
    if P == 0:
        return np.zeros((0, prior.K), np.uint32)
    rq, cq = np.divmod(positions, cols)
    sq = st[positions]
    x = prior["qstage"][sq]
    for l in range(prior.layers):
        p = f"l{l}."
        sh = prior[p + "shifts"]
        n1 = norm(x, prior[p + "g1"])
        q = lin8(prior[p + "wq"], prior[p + "bq"], prior[p + "mq"], sh[0], n1)
        o = attention(prior, l, q, (rq, cq, sq), cache["k"][l], cache["v"][l], st, rows, cols,
                      lambda a, b: b < a)
        x = _layer_mlp(prior, l, x, o)
    nf = norm(x, prior["gf"])
    logits = acc(prior["wout"], prior["bout"], nf)
    assert np.all(np.abs(logits) < (1 << 31))
    mx = logits.max(1, keepdims=True)
    t = rshift((mx - logits) * prior.a_out, prior.osh)
    out_exp = prior["out_exp"]
    E = out_exp.shape[0]
    w = np.where(t < E, out_exp[np.minimum(t, E - 1)], 0)
    _count("out_t_beyond_table", (t >= E).sum())
    _count("out_entries", t.size)
    return quantize_weights(w)


def stage_tables(prior: IntPrior, grid_tokens, rows: int, cols: int, stage: int, cache=None) -> np.ndarray:
    """uint32 [n_positions_of_stage, K]: the tables of stage `stage`'s positions in raster order."""
    if cache is None:
        cache = known_pass(prior, grid_tokens, rows, cols)
    pos = np.nonzero(cache["stage"] == stage)[0]
    return query_tables(prior, cache, pos)


def all_stage_tables(prior: IntPrior, grid_tokens, rows: int, cols: int) -> list[np.ndarray]:
    cache = known_pass(prior, grid_tokens, rows, cols)
    allt = query_tables(prior, cache, np.arange(rows * cols))
    return [allt[cache["stage"] == s] for s in range(prior.stages)]


def grid_bits(prior: IntPrior, grid_tokens, rows: int, cols: int):
    """(bits per stage [stages] float, tokens per stage [stages]) — ideal code length."""
    tok = np.asarray(grid_tokens, np.int64).reshape(-1)
    cache = known_pass(prior, tok, rows, cols)
    allt = query_tables(prior, cache, np.arange(rows * cols))
    p = allt[np.arange(rows * cols), tok].astype(np.float64)
    bits = PRECISION - np.log2(p)
    st = cache["stage"]
    return (np.array([bits[st == s].sum() for s in range(prior.stages)]),
            np.array([(st == s).sum() for s in range(prior.stages)]))
