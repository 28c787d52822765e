"""A tiny tokenizer exports to ONNX that matches torch exactly (indices) and follows the contract."""
import os

import numpy as np
import pytest
from conftest import require_module

torch = require_module("torch")
ort = require_module("onnxruntime")

from uigc_models.export import export_onnx  # noqa: E402
from uigc_models.model import Tokenizer, spherical_kmeans  # noqa: E402


def tiny(up_mode="nearest"):
    torch.manual_seed(0)
    return Tokenizer(k=32, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                     dec_res=(1, 0, 0, 0, 0), up_mode=up_mode).eval()


@pytest.mark.parametrize("up_mode", ["nearest", "bilinear"])
def test_export_matches_torch(tmp_path, up_mode):
    tok = tiny(up_mode)
    export_onnx(tok, str(tmp_path))
    enc = ort.InferenceSession(str(tmp_path / "tokenizer_encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(tmp_path / "tokenizer_decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for h, w in ((32, 48), (128, 64)):
        x = rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
        a = enc.run(["indices"], {"image": x})[0]
        b = tok.encode_indices(torch.from_numpy(x)).numpy()
        assert a.dtype == np.int64 and a.shape == (1, h // 16, w // 16)
        assert (a == b).all()
        y = dec.run(["image"], {"indices": a})[0]
        yt = tok.decode_indices(torch.from_numpy(a)).numpy()
        assert y.shape == (1, 3, h, w) and np.abs(y - yt).max() < 1e-4
    # the graphs carry the upsampling mode: onnx_import reads it back with the weights
    from uigc_models.onnx_import import import_bundle
    back, hp = import_bundle(str(tmp_path))
    assert hp["up_mode"] == up_mode and hp["dec_ch"] == [16, 8, 8, 8, 8] and hp["dec_res"] == [1, 0, 0, 0, 0]
    assert hp["enc_ch"] == [8, 8, 16] and hp["enc_res"] == [1, 0, 1]
    for k, v in tok.state_dict().items():
        if not k.startswith("quant.") or k == "quant.embed":
            assert torch.allclose(v.float(), back.state_dict()[k].float()), k


def test_quantizer_straight_through_and_ema():
    tok = tiny().train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y, z, idx, commit = tok(x)
    assert y.shape == x.shape and idx.shape == (2, 4, 4) and commit.item() >= 0
    (y.abs().mean() + commit).backward()
    assert tok.encoder.net[0].weight.grad is not None  # straight-through reaches the encoder
    assert torch.allclose(tok.quant.embed.norm(dim=1), torch.ones(32), atol=1e-5)


def test_spherical_kmeans_covers_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    x = torch.nn.functional.normalize(centers.repeat(50, 1) + 0.01 * torch.randn(400, 4, generator=g), dim=1)
    c = spherical_kmeans(x, 8, iters=10)
    assert ((c @ centers.t()).max(0).values > 0.99).all()
