"""Import of taming-transformers' VQGAN f16 (uigc_models/taming_import.py): names/shapes of the state dict,
checkpoint loading, codebook reduction, ONNX = torch, and the bundle round-trips through the Rust CLI.

Uses a randomly initialised model of the full size (72M parameters with n_e = 1024): ~40 s on 2 cores."""
import os
import sys
import types

import numpy as np
import pytest
from conftest import require_module
from PIL import Image

torch = require_module("torch")
ort = require_module("onnxruntime")
onnx = require_module("onnx")

from conftest import REPO_ROOT, cli_roundtrip  # noqa: E402
from uigc_models.bundle import read_manifest, read_prior_bin, to_network, verify_bundle_hashes  # noqa: E402
from uigc_models.data import load_rgb  # noqa: E402
from uigc_models.export import pad16  # noqa: E402
from uigc_models.taming_import import (build_vqgan, euclidean_kmeans, load_taming_state_dict, main,  # noqa: E402
                                       random_state_dict)

N_E, K = 1024, 64
SAMPLE = os.path.join(REPO_ROOT, "docs", "sample", "kodim23.png")


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict(N_E, seed=0)


@pytest.fixture(scope="module")
def bundle(state_dict, tmp_path_factory):
    """A Lightning-style last.ckpt (with loss.* weights and an object of a package that is not installed)
    converted with usage weighting on three small 'training photos'."""
    tmp = tmp_path_factory.mktemp("taming")
    root = tmp / "data"
    a = load_rgb(SAMPLE)
    for i, sub in enumerate(("bsds500", "sun-hays80", "urban100")):
        (root / "train" / sub).mkdir(parents=True)
        Image.fromarray(a[100 * i:100 * i + 64, 200:296]).save(root / "train" / sub / f"{i}.png")
    fake = types.ModuleType("fake_lightning_for_uigc_test")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__, AttributeDict.__qualname__ = fake.__name__, "AttributeDict"
    fake.AttributeDict = AttributeDict
    sys.modules[fake.__name__] = fake
    try:
        hp = AttributeDict(n_embed=N_E)
        sd = dict(state_dict)
        sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
        sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
        ckpt = tmp / "last.ckpt"
        torch.save({"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.0.8", "hyper_parameters": hp,
                    "optimizer_states": [], "state_dict": sd}, ckpt)
    finally:
        del sys.modules[fake.__name__]  # loading must not need it
    out = tmp / "vqgan-k64"
    rc = main(["--ckpt", str(ckpt), "--k", str(K), "--out", str(out), "--data-root", str(root),
               "--usage-images", "3", "--usage-side", "0", "--verify-images", "1", "--verify-sizes", "32x48",
               "--threads", "1"])
    assert rc == 0
    yield {"dir": str(out), "ckpt": str(ckpt)}
    for p in (ckpt, out / "tokenizer_encoder.onnx", out / "tokenizer_decoder.onnx"):  # 600 MB
        p.unlink()


def test_state_dict_has_taming_names_and_shapes(state_dict):
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    expect = {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.0.block.0.norm1.weight": (128,),
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
        "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (256, 512, 3, 3),
        "quant_conv.weight": (256, 256, 1, 1),
        "quantize.embedding.weight": (N_E, 256),
        "post_quant_conv.weight": (256, 256, 1, 1),
        "decoder.conv_in.weight": (512, 256, 3, 3),
        "decoder.up.4.attn.2.k.weight": (512, 512, 1, 1),
        "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    for k, s in expect.items():
        assert shapes.get(k) == s, (k, shapes.get(k), s)
    for absent in ("encoder.down.4.downsample.conv.weight", "decoder.up.0.upsample.conv.weight",
                   "encoder.down.3.attn.0.q.weight", "encoder.conv_out.bias.x"):
        assert absent not in shapes
    assert len(shapes) == 343
    assert sum(v.numel() for v in state_dict.values()) == 72_141_699


def test_refuses_other_architectures(state_dict):
    sd = {k: v for k, v in state_dict.items() if k != "encoder.mid.attn_1.q.bias"}
    sd["decoder.conv_in.weight"] = torch.zeros(256, 256, 3, 3)
    with pytest.raises(ValueError, match="missing: encoder.mid.attn_1.q.bias.*wrong shape: decoder.conv_in"):
        build_vqgan(sd)


def test_random_init_cli_checks_k(tmp_path):
    assert main(["--random-init", "--n-e", "16", "--k", "17", "--out", str(tmp_path), "--usage-images", "0"]) == 2


def test_weighted_euclidean_kmeans():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5
    x = centres.repeat_interleave(25, 0) + 0.01 * torch.randn(100, 8, generator=g)
    c, a = euclidean_kmeans(x, 4, iters=10)
    assert torch.cdist(centres, c).min(1).values.max() < 0.05
    assert (torch.bincount(a, minlength=4) == 25).all()
    # all the weight on one cluster: both centres go there
    w = torch.zeros(100)
    w[:25] = 1.0
    c, _ = euclidean_kmeans(x, 2, weights=w, iters=10)
    assert torch.cdist(c, centres[:1]).max() < 0.1


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_loader_runs_no_code(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    ck = {"state_dict": {"encoder.conv_in.weight": torch.ones(2, 3), "loss.logvar": torch.zeros(())},
          "callbacks": {"x": _RunsCode(str(marker))}, "hparams": {"lr": np.float64(4.5e-6), "shape": torch.Size([2])}}
    torch.save(ck, tmp_path / "c.ckpt")
    sd, info = load_taming_state_dict(str(tmp_path / "c.ckpt"))
    assert not marker.exists()
    assert list(sd) == ["encoder.conv_in.weight"] and (sd["encoder.conv_in.weight"] == 1).all()
    assert info["ignored_key_groups"] == ["loss"]


def test_checkpoint_loader_drops_loss_and_needs_no_lightning(bundle):
    sd, info = load_taming_state_dict(bundle["ckpt"])
    assert not any(k.startswith("loss.") for k in sd) and "encoder.conv_in.weight" in sd
    assert info["global_step"] == 1234 and info["ignored_key_groups"] == ["loss"]


def test_bundle_contract_and_onnx_matches_torch(bundle, state_dict):
    d = bundle["dir"]
    m = verify_bundle_hashes(d)
    assert m["codebook_size"] == K and m["prior"]["kind"] == "unigram" and m["downsample"] == 16
    assert m["pixels"]["mean"] == [0.5, 0.5, 0.5] and m["pixels"]["std"] == [0.5, 0.5, 0.5]
    weights = read_prior_bin(os.path.join(d, "prior.bin"))
    tokens = sum((64 // 16) * (96 // 16) for _ in range(3))  # the three usage photos, 64x96 each
    assert len(weights) == K and weights.sum() == tokens + K
    for f in ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx"):
        mo = onnx.load(os.path.join(d, f), load_external_data=False)
        assert any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in mo.opset_import)
    assert os.path.isfile(os.path.join(d, "golden", "indices.i64le"))

    # torch: the same weights + the reduced codebook (read back from the decoder graph)
    dec_model = onnx.load(os.path.join(d, "tokenizer_decoder.onnx"))
    cbs = [onnx.numpy_helper.to_array(t) for t in dec_model.graph.initializer if list(t.dims) == [K, 256]]
    assert len(cbs) == 1
    codebook = torch.from_numpy(cbs[0].copy())
    vq = build_vqgan(state_dict)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(os.path.join(d, "tokenizer_encoder.onnx"), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(d, "tokenizer_decoder.onnx"), so, providers=["CPUExecutionProvider"])
    x = to_network(pad16(load_rgb(SAMPLE)[300:348, 500:564]))  # 48 x 64
    idx = enc.run(["indices"], {"image": x})[0]
    with torch.no_grad():
        z = vq.encode_z(torch.from_numpy(x))
        d2 = ((z.permute(0, 2, 3, 1)[..., None, :] - codebook) ** 2).sum(-1)
        ref_idx = d2.argmin(-1).numpy()
        y_ref = vq.decode_q(codebook[torch.from_numpy(idx)].permute(0, 3, 1, 2)).numpy()
    assert idx.shape == (1, 3, 4) and idx.dtype == np.int64
    assert (idx == ref_idx).all()
    assert len(np.unique(idx)) > 1
    y = dec.run(["image"], {"indices": idx})[0]
    assert y.shape == (1, 3, 48, 64) and np.abs(y - y_ref).max() < 1e-3


def test_rust_cli_roundtrip(bundle, tmp_path):
    rgb = np.ascontiguousarray(load_rgb(SAMPLE)[200:241, 300:370])  # 41 x 70: padded to 48 x 80 by the codec
    r = cli_roundtrip(bundle["dir"], rgb, str(tmp_path))
    assert r["grid"].shape == (3, 5)
    assert read_manifest(bundle["dir"])["codebook_size"] == K and r["grid"].max() < K
