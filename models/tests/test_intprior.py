"""Tests of the integer prior reference (docs/prior.md), its float twin and the golden vectors."""
import glob
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, require_path
from uigc_models import intprior_ref as ref
from uigc_models import prior_model as pm

GOLDEN = os.path.join(REPO_ROOT, "tests", "data", "intprior")


def rust_quantize(weights):
    """Line-by-line transcription of entropy::quantize_weights with Python ints."""
    k = len(weights)
    total = sum(weights)
    budget = (1 << 24) - k
    if total == 0:
        out = [1 + budget // k] * k
    else:
        out = [1 + (w * budget) // total for w in weights]
    rest = (1 << 24) - sum(out)
    best = 0
    for i, p in enumerate(out):
        if p > out[best]:
            best = i
    out[best] += rest
    return out


def test_quantize_weights_rule():
    rng = np.random.default_rng(0)
    cases = [[3, 1], [0, 0, 0], [5], [0, 7, 7, 0], [2**32 - 1] * 300, [1] * 256, [0] * 255 + [1]]
    for _ in range(200):
        k = int(rng.integers(1, 400))
        w = rng.integers(0, 2**32, k) if rng.random() < 0.5 else rng.integers(0, 1000, k)
        w[rng.random(k) < 0.3] = 0
        cases.append([int(v) for v in w])
    for w in cases:
        t = ref.quantize_weights(np.array(w, np.int64))
        assert t.sum(dtype=np.int64) == 1 << 24
        assert t.min() >= 1
        assert [int(v) for v in t] == rust_quantize(w)
    # documented example (entropy.rs test)
    budget = (1 << 24) - 2
    p0, p1 = 1 + 3 * budget // 4, 1 + budget // 4
    assert list(ref.quantize_weights([3, 1])) == [p0 + (1 << 24) - p0 - p1, p1]
    # batched == row by row
    W = np.random.default_rng(1).integers(0, 2**20, (7, 33))
    assert np.array_equal(ref.quantize_weights(W), np.stack([ref.quantize_weights(r) for r in W]))


def test_primitives():
    v = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5])
    assert list(ref.rshift(v, 1)) == [(x + 1) // 2 for x in v.tolist()]
    assert list(ref.rshift(v, 0)) == v.tolist()
    for a in range(-20, 21):
        for b in range(1, 7):
            assert ref.rdiv(a, b) == (2 * a + b) // (2 * b)
    n = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**58 - 1, 2**58, (2**29 + 1) ** 2 - 1, 10**17])
    assert [int(x) for x in ref.isqrt(n)] == [math.isqrt(int(x)) for x in n]


def test_schedule():
    assert [ref.stage_of(0, 0, 1), ref.stage_of(1, 1, 1), ref.stage_of(1, 0, 1), ref.stage_of(0, 1, 1)] == [0, 1, 2, 3]
    sizes = [len(p) for p in ref.plan(32, 48, 3)]
    assert sizes == [24, 24, 24, 24, 96, 96, 96, 384, 384, 384]


def _tiny_prior(seed=0, qat=False, **kw):
    torch.manual_seed(seed)
    cfg = dict(K=16, d=32, heads=2, layers=2, ffn=64, radius=3, levels=3)
    cfg.update(kw)
    m = pm.PriorNet(**cfg)
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, cfg["K"], (12, 12)) for _ in range(3)]
    m.calibrate(grids)
    return m, pm.export_int(m)


def test_container_round_trip(tmp_path):
    _, p = _tiny_prior()
    data = ref.save_prior(p, str(tmp_path / "p.bin"))
    assert data[:4] == b"UGIP"
    q = ref.load_prior(str(tmp_path / "p.bin"))
    assert {k: q.header[k] for k in ref.HEADER_INTS} == {k: p.header[k] for k in ref.HEADER_INTS}
    assert q.header["format"] == "int-transformer-v1"
    for k, v in p.t.items():
        assert q.t[k].dtype == v.dtype and np.array_equal(q.t[k], v), k
    assert ref.save_prior(q, "") == data
    n = int.from_bytes(data[4:8], "little")
    hdr = json.loads(data[8:8 + n])
    assert all(e["offset"] % 8 == 0 for e in hdr["tensors"])


def test_reference_is_deterministic_and_stagewise():
    _, p = _tiny_prior(1)
    g = np.random.default_rng(5).integers(0, 16, (11, 9))
    a = ref.all_stage_tables(p, g.ravel(), 11, 9)
    b = ref.all_stage_tables(p, g.ravel(), 11, 9)
    for s in range(p.stages):
        assert np.array_equal(a[s], b[s])
        assert np.array_equal(a[s], ref.stage_tables(p, g.ravel(), 11, 9, s))
        assert a[s].dtype == np.uint32 and (a[s].sum(1) == 1 << 24).all() and (a[s] >= 1).all()
    # a stage's tables depend only on the tokens of earlier stages
    st = ref.stage_map(11, 9, 3)
    g2 = g.copy()
    g2[st >= 5] = (g2[st >= 5] + 3) % 16
    c = ref.all_stage_tables(p, g2.ravel(), 11, 9)
    for s in range(6):
        assert np.array_equal(a[s], c[s])


def test_int_vs_float_tiny():
    m, p = _tiny_prior(2)
    m.eval()
    rng = np.random.default_rng(3)
    fb = ib = 0.0
    for _ in range(3):
        g = rng.integers(0, 16, (16, 16))
        fb += pm.float_grid_bits(m, g)[0].sum()
        ib += pm.int_grid_bits(p, g)[0].sum()
    assert abs(ib - fb) / fb < 0.03, (fb, ib)


def test_import_int_inverts_export():
    # prior.bin -> float model (prior_model.import_int): the same bits as the integer prior, up
    # to rounding, so a shipped prior can be fine-tuned without its float checkpoint
    _, p = _tiny_prior(2)
    m = pm.import_int(p)
    m.eval()
    rng = np.random.default_rng(5)
    for _ in range(3):
        g = rng.integers(0, 16, (16, 24))
        ib, _ = pm.int_grid_bits(p, g)
        fb, _ = pm.float_grid_bits(m, g)
        assert abs(ib.sum() - fb.sum()) / ib.sum() < 0.005, (fb.sum(), ib.sum())
    # and exporting it again gives a prior that codes like the original
    m.calibrate([rng.integers(0, 16, (16, 16)) for _ in range(4)])
    m.qat = True
    p2 = pm.export_int(m)
    g = rng.integers(0, 16, (16, 16))
    a, b = pm.int_grid_bits(p, g)[0].sum(), pm.int_grid_bits(p2, g)[0].sum()
    assert abs(a - b) / a < 0.03, (a, b)


def naive_tables(p, tokens, rows, cols):
    """Scalar, position-by-position transcription of docs/prior.md with Python ints."""
    L, d, H, R = p.layers, p.d, p.heads, p.radius
    dh = d // H
    T = {k: v.tolist() for k, v in p.t.items()}
    st = [[ref.stage_of(r, c, p.levels) for c in range(cols)] for r in range(rows)]

    def rsh(v, s):
        return v if s == 0 else (v + (1 << (s - 1))) >> s

    def rdiv(a, b):
        return (2 * a + b) // (2 * b)

    c8 = lambda v: min(max(v, -127), 127)

    def norm(x, g):
        ms = sum(v * v for v in x) // d
        r = max(math.isqrt(ms), 1)
        return [c8(rdiv(x[i] * g[i], r)) for i in range(d)]

    def accv(W, b, n):
        return [b[o] + sum(W[o][i] * n[i] for i in range(len(n))) for o in range(len(W))]

    def lin(l, nm, n, relu=False):
        sh = T[f"l{l}.shifts"]["qkvo12".index(nm)]
        a = accv(T[f"l{l}.w{nm}"], T[f"l{l}.b{nm}"], n)
        y = [rsh(a[o] * T[f"l{l}.m{nm}"][o], sh) for o in range(len(a))]
        return [min(max(v, 0), 127) for v in y] if relu else [c8(v) for v in y]

    def resadd(l, nm, x, n):
        sh = T[f"l{l}.shifts"]["qkvo12".index(nm)]
        a = accv(T[f"l{l}.w{nm}"], T[f"l{l}.b{nm}"], n)
        return [min(max(x[o] + rsh(a[o] * T[f"l{l}.m{nm}"][o], sh), -2**24), 2**24) for o in range(d)]

    def attend(l, q, r, c, keys):  # keys: list of (kr, kc) with cached k, v
        out = []
        E = len(T["att_exp"])
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            if not keys:
                out += [0] * dh
                continue
            s = [sum(a * b for a, b in zip(q[sl], K[l][kr][kc][sl])) + T[f"l{l}.bias"][h][kr - r + R][kc - c + R]
                 for kr, kc in keys]
            mx = max(s)
            w = []
            for sj in s:
                t = rsh((mx - sj) * T[f"l{l}.att_a"][h], p.ash)
                w.append(T["att_exp"][t] if t < E else 0)
            den = sum(w)
            for ch in range(sl.start, sl.stop):
                out.append(c8(rdiv(sum(wj * V[l][kr][kc][ch] for wj, (kr, kc) in zip(w, keys)), den)))
        return out

    def window(r, c, ok):
        return [(kr, kc) for kr in range(max(0, r - R), min(rows, r + R + 1))
                for kc in range(max(0, c - R), min(cols, c + R + 1)) if ok(st[kr][kc])]

    K = [[[None] * cols for _ in range(rows)] for _ in range(L)]
    V = [[[None] * cols for _ in range(rows)] for _ in range(L)]
    # known pass, stage by stage (keys of a stage needed by the same stage: compute layer-wise)
    xs = {(r, c): [T["tok"][tokens[r][c]][i] + T["kstage"][st[r][c]][i] for i in range(d)]
          for r in range(rows) for c in range(cols)}
    for l in range(L):
        qs = {}
        for (r, c), x in xs.items():
            n1 = norm(x, T[f"l{l}.g1"])
            qs[(r, c)] = lin(l, "q", n1)
            K[l][r][c] = lin(l, "k", n1)
            V[l][r][c] = lin(l, "v", n1)
        if l == L - 1:
            break
        for (r, c), x in xs.items():
            o = attend(l, qs[(r, c)], r, c, window(r, c, lambda sj, si=st[r][c]: sj <= si))
            x = resadd(l, "o", x, o)
            hdn = lin(l, "1", norm(x, T[f"l{l}.g2"]), relu=True)
            xs[(r, c)] = resadd(l, "2", x, hdn)
    tables = [[] for _ in range(p.stages)]
    for r in range(rows):
        for c in range(cols):
            x = list(T["qstage"][st[r][c]])
            for l in range(L):
                q = lin(l, "q", norm(x, T[f"l{l}.g1"]))
                o = attend(l, q, r, c, window(r, c, lambda sj, si=st[r][c]: sj < si))
                x = resadd(l, "o", x, o)
                x = resadd(l, "2", x, lin(l, "1", norm(x, T[f"l{l}.g2"]), relu=True))
            nf = norm(x, T["gf"])
            logits = accv(T["wout"], T["bout"], nf)
            mx = max(logits)
            E = len(T["out_exp"])
            w = []
            for lg in logits:
                t = rsh((mx - lg) * p.a_out, p.osh)
                w.append(T["out_exp"][t] if t < E else 0)
            tables[st[r][c]] += rust_quantize(w)
    return tables


def _golden_files():
    return sorted(glob.glob(os.path.join(GOLDEN, "grid_*.json")))


def test_golden_files_exist():
    names = {os.path.basename(f) for f in _golden_files()}
    for need in ("grid_1x1.json", "grid_3x5.json", "grid_9x7.json", "grid_16x16.json", "grid_20x13.json"):
        assert need in names
    total = sum(os.path.getsize(os.path.join(GOLDEN, f)) for f in os.listdir(GOLDEN))
    assert total < 1 << 20


@pytest.mark.parametrize("path", _golden_files(), ids=os.path.basename)
def test_golden_reproduced_by_reference(path):
    p = ref.load_prior(os.path.join(GOLDEN, "prior.bin"))
    with open(path) as f:
        g = json.load(f)
    rows, cols = g["rows"], g["cols"]
    tok = np.array(g["tokens"], np.int64)
    assert tok.size == rows * cols and len(g["stages"]) == p.stages
    cache = ref.known_pass(p, tok, rows, cols)
    for s in range(p.stages):
        t = ref.stage_tables(p, tok, rows, cols, s, cache=cache)
        assert t.reshape(-1).tolist() == g["stages"][s], f"stage {s}"


@pytest.mark.parametrize("name", ["grid_3x5.json", "grid_9x7.json", "grid_2x17.json"])
def test_golden_reproduced_by_naive_transcription(name):
    """An independent scalar implementation of the spec agrees with the vectorised reference."""
    p = ref.load_prior(os.path.join(GOLDEN, "prior.bin"))
    with open(os.path.join(GOLDEN, name)) as f:
        g = json.load(f)
    rows, cols = g["rows"], g["cols"]
    tok = np.array(g["tokens"]).reshape(rows, cols).tolist()
    assert naive_tables(p, tok, rows, cols) == g["stages"]


def _bundle_copy(tmp_path, name, dest="bundle"):
    """A copy of the test bundle tests/data/<name> under tmp_path/<dest>."""
    import shutil
    src = os.path.join(REPO_ROOT, "tests", "data", name)
    require_path(src, "test bundle", "run python models/make_test_models.py")
    shutil.copytree(src, tmp_path / dest)
    return tmp_path / dest


def test_attach_prior(tmp_path):
    from uigc_models.bundle import sha256_file
    from uigc_models.prior_train import attach_prior
    b = _bundle_copy(tmp_path, "tiny-model")
    before = (b / "manifest.toml").read_text()
    attach_prior(str(b), os.path.join(GOLDEN, "prior.bin"))
    after = (b / "manifest.toml").read_text()
    sha = sha256_file(str(b / "prior.bin"))
    assert 'kind = "int-transformer-v1"' in after and f'sha256 = "{sha}"' in after
    # only the [prior] table changed
    strip = lambda t: t.split("[prior]")[0]
    assert strip(before) == strip(after)
    assert len(before.splitlines()) == len(after.splitlines())


def test_attach_dense_prior(tmp_path):
    from uigc_models.bundle import sha256_file
    from uigc_models.prior_train import attach_prior
    b = _bundle_copy(tmp_path, "tiny-model-dense")
    before = (b / "manifest.toml").read_text()
    attach_prior(str(b), os.path.join(GOLDEN, "prior.bin"), "prior_dense.bin", "prior_dense")
    after = (b / "manifest.toml").read_text()
    sha = sha256_file(str(b / "prior_dense.bin"))
    # appended as [prior_dense]; everything before it unchanged, [prior] still the unigram one
    assert after.startswith(before) and "[prior_dense]" in after[len(before):]
    assert f'sha256 = "{sha}"' in after[len(before):]
    # attaching again rewrites that table in place
    attach_prior(str(b), os.path.join(GOLDEN, "prior.bin"), "prior_dense.bin", "prior_dense")
    assert (b / "manifest.toml").read_text() == after
    # a bundle without dense graphs is refused
    plain = _bundle_copy(tmp_path, "tiny-model", "plain")
    with pytest.raises(AssertionError, match="dense graphs"):
        attach_prior(str(plain), os.path.join(GOLDEN, "prior.bin"), "prior_dense.bin", "prior_dense")
