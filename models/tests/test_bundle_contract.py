"""Bundles in the repository follow docs/bundle.md (manifest, hashes, prior.bin, ONNX I/O contract)."""
import glob
import json
import os

import numpy as np
import pytest

from conftest import MODELS_DIR, REPO_ROOT, require_module, require_path
from uigc_models.bundle import read_manifest, read_prior_bin, sha256_file, verify_bundle_hashes

ort = require_module("onnxruntime")
onnx = require_module("onnx")

BUNDLES = sorted(
    [d for d in glob.glob(os.path.join(REPO_ROOT, "tests", "data", "tiny-model*")) if os.path.isdir(d)]
    + [os.path.dirname(p) for p in glob.glob(os.path.join(MODELS_DIR, "*", "manifest.toml"))])


@pytest.mark.parametrize("bundle", BUNDLES, ids=[os.path.basename(b) for b in BUNDLES])
def test_bundle(bundle):
    m = verify_bundle_hashes(bundle)
    assert m["format"] == "uigc-bundle" and m["format_version"] == 1
    assert m["downsample"] == 16
    k = m["codebook_size"]
    assert m["prior"]["kind"] in ("unigram", "int-transformer-v1")
    if m["prior"]["kind"] == "unigram":
        w = read_prior_bin(os.path.join(bundle, m["prior"]["path"]))
        assert len(w) == k and (w >= 1).all()
    assert len(m["pixels"]["mean"]) == 3 and len(m["pixels"]["std"]) == 3
    assert m["schedule"]["kind"] == "interleave2x2"
    for sec in ("tokenizer_encoder", "tokenizer_decoder"):
        mo = onnx.load(os.path.join(bundle, m[sec]["path"]))
        assert any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in mo.opset_import)
    enc = ort.InferenceSession(os.path.join(bundle, m["tokenizer_encoder"]["path"]), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(bundle, m["tokenizer_decoder"]["path"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == ["image"] and [o.name for o in enc.get_outputs()] == ["indices"]
    assert [i.name for i in dec.get_inputs()] == ["indices"] and [o.name for o in dec.get_outputs()] == ["image"]
    rng = np.random.default_rng(0)
    for h, w_ in ((16, 16), (32, 48), (64, 32)):
        x = rng.uniform(-1, 1, (1, 3, h, w_)).astype(np.float32)
        idx = enc.run(None, {"image": x})[0]
        assert idx.dtype == np.int64 and idx.shape == (1, h // 16, w_ // 16)
        assert idx.min() >= 0 and idx.max() < k
        y = dec.run(None, {"indices": idx})[0]
        assert y.dtype == np.float32 and y.shape == (1, 3, h, w_)
    gdir = os.path.join(bundle, "golden")
    if os.path.isdir(gdir):
        from PIL import Image
        g = json.load(open(os.path.join(gdir, "golden.json")))
        a = np.asarray(Image.open(os.path.join(gdir, g["input"])).convert("RGB"))
        x = ((a.astype(np.float32) / 255.0 - np.array(m["pixels"]["mean"], np.float32))
             / np.array(m["pixels"]["std"], np.float32)).transpose(2, 0, 1)[None].copy()
        idx = enc.run(None, {"image": x})[0]
        ref = np.fromfile(os.path.join(gdir, g["indices"]), "<i8").reshape(g["indices_shape"])
        assert (idx == ref).all()
        y = dec.run(None, {"indices": ref})[0]
        yref = np.fromfile(os.path.join(gdir, g["decoded"]), "<f4").reshape(g["decoded_shape"])
        assert np.abs(y - yref).max() < 1e-4


def test_tiny_models_differ():
    a = os.path.join(REPO_ROOT, "tests", "data", "tiny-model")
    b = os.path.join(REPO_ROOT, "tests", "data", "tiny-model-b")
    for d in (a, b):
        require_path(d, "test bundle", "run python models/make_test_models.py")
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["tokenizer_encoder"]["sha256"] != mb["tokenizer_encoder"]["sha256"]
    assert ma["tokenizer_decoder"]["sha256"] != mb["tokenizer_decoder"]["sha256"]
    for d in (a, b):
        for f in ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "prior.bin"):
            assert os.path.getsize(os.path.join(d, f)) < 200_000


def test_make_test_models_is_deterministic(tmp_path):
    import subprocess
    import sys
    subprocess.check_call([sys.executable, os.path.join(MODELS_DIR, "make_test_models.py"), "--out-root", str(tmp_path)])
    for name in ("tiny-model", "tiny-model-b", "tiny-model-k4"):
        ref = require_path(os.path.join(REPO_ROOT, "tests", "data", name), "test bundle",
                           "run python models/make_test_models.py")
        for f in ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "prior.bin", "manifest.toml",
                  "golden/indices.i64le"):
            assert sha256_file(os.path.join(tmp_path, name, f)) == sha256_file(os.path.join(ref, f)), (name, f)


TILE_BUNDLES = [b for b in BUNDLES if "tokenizer_decoder_tile" in read_manifest(b)]


@pytest.mark.parametrize("bundle", TILE_BUNDLES, ids=[os.path.basename(b) for b in TILE_BUNDLES])
def test_tile_graph(bundle):
    """The optional tile graph (docs/bundle.md "Tile graph"): its I/O, and with its own statistics or
    with those it output, the decoder's image to float precision."""
    from uigc_models.tiled import check_tile_graph
    m = read_manifest(bundle)
    s = ort.InferenceSession(os.path.join(bundle, m["tokenizer_decoder_tile"]["path"]),
                             providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["indices", "stats_in", "stats_weight"]
    assert [o.name for o in s.get_outputs()] == ["image", "stats"]
    r = check_tile_graph(bundle)
    assert r["own_stats_vs_decoder_max_abs"] < 1e-4 and r["given_stats_vs_decoder_max_abs"] < 1e-4, r
    assert r["tile_given_stats_mean_abs"] < 0.5 * r["tile_own_stats_mean_abs"], r



FAST_BUNDLES = [b for b in BUNDLES if "tokenizer_encoder_fast" in read_manifest(b)]


@pytest.mark.parametrize("bundle", FAST_BUNDLES, ids=[os.path.basename(b) for b in FAST_BUNDLES])
def test_fast_encoder(bundle):
    """The optional fast encoder (docs/bundle.md "Fast encoder"): the encoder's I/O contract, and on
    the golden image it picks the full encoder's token at most positions (it was distilled to)."""
    from PIL import Image
    m = read_manifest(bundle)
    mk = lambda sec: ort.InferenceSession(os.path.join(bundle, m[sec]["path"]), providers=["CPUExecutionProvider"])
    fast, full = mk("tokenizer_encoder_fast"), mk("tokenizer_encoder")
    assert [i.name for i in fast.get_inputs()] == ["image"] and [o.name for o in fast.get_outputs()] == ["indices"]
    assert os.path.getsize(os.path.join(bundle, m["tokenizer_encoder_fast"]["path"])) < \
        os.path.getsize(os.path.join(bundle, m["tokenizer_encoder"]["path"]))
    g = json.load(open(os.path.join(bundle, "golden", "golden.json")))
    a = np.asarray(Image.open(os.path.join(bundle, "golden", g["input"])).convert("RGB"))
    x = ((a.astype(np.float32) / 255.0 - np.array(m["pixels"]["mean"], np.float32))
         / np.array(m["pixels"]["std"], np.float32)).transpose(2, 0, 1)[None].copy()
    i_fast, i_full = fast.run(None, {"image": x})[0], full.run(None, {"image": x})[0]
    assert i_fast.dtype == np.int64 and i_fast.shape == i_full.shape
    assert i_fast.min() >= 0 and i_fast.max() < m["codebook_size"]
    agree = (i_fast == i_full).mean()
    assert agree >= 0.75, f"fast encoder agrees with the full one on {agree:.1%} of the golden tokens"


FAST_DECODER_BUNDLES = [b for b in BUNDLES if "tokenizer_decoder_fast" in read_manifest(b)]


@pytest.mark.parametrize("bundle", FAST_DECODER_BUNDLES, ids=[os.path.basename(b) for b in FAST_DECODER_BUNDLES])
def test_fast_decoder(bundle):
    """The optional fast decoder and fast tile graph (docs/bundle.md "Fast decoder"): the decoder's I/O
    contract, smaller files (int8 weights), pictures of the golden tokens within 38 dB of the float graphs'
    but not identical to them (a different graph); and the exact sub-pixel form equals nearest + conv."""
    import torch
    from uigc_models.fast_decoder import UpSubpixel
    from uigc_models.model import Up
    m = read_manifest(bundle)
    mk = lambda sec: ort.InferenceSession(os.path.join(bundle, m[sec]["path"]), providers=["CPUExecutionProvider"])
    g = json.load(open(os.path.join(bundle, "golden", "golden.json")))
    idx = np.fromfile(os.path.join(bundle, "golden", g["indices"]), dtype="<i8")
    full = mk("tokenizer_decoder")
    for sec, ref in (("tokenizer_decoder_fast", "tokenizer_decoder"), ("tokenizer_decoder_tile_fast", "tokenizer_decoder_tile")):
        fast, slow = mk(sec), mk(ref)
        assert [i.name for i in fast.get_inputs()] == [i.name for i in slow.get_inputs()]
        assert [o.name for o in fast.get_outputs()] == [o.name for o in slow.get_outputs()]
        assert os.path.getsize(os.path.join(bundle, m[sec]["path"])) < os.path.getsize(os.path.join(bundle, m[ref]["path"]))
    from PIL import Image
    gi = np.asarray(Image.open(os.path.join(bundle, "golden", g["input"])))
    grid = idx.reshape(1, gi.shape[0] // 16, gi.shape[1] // 16)
    a = full.run(["image"], {"indices": grid})[0]
    b = mk("tokenizer_decoder_fast").run(["image"], {"indices": grid})[0]
    to8 = lambda y: ((np.clip(y, -1, 1) + 1) * 127.5).round()
    mse = float(np.mean((to8(a) - to8(b)) ** 2))
    psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
    assert 38.0 <= psnr < 70.0, f"fast decoder vs full: {psnr:.1f} dB"
    # the exact part of the recipe, on a random block
    torch.manual_seed(0)
    up = Up(8, 6, "nearest").eval()
    x = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        assert torch.allclose(UpSubpixel(up)(x), up(x), atol=1e-5)
