"""Dense graphs (issue 12): the f=8 tokenizer's layout, its weights from an f=16 one, and installing it
into a bundle only over the bundle's own codebook."""
import os
import shutil
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from conftest import REPO_ROOT, skip_or_fail  # noqa: E402

SMALL = dict(k=16, code_dim=4, enc_ch=(8, 8, 8), enc_res=(1, 1, 1), dec_ch=(8, 8, 8, 8, 8), dec_res=(1, 0, 0, 0, 0))


def test_f8_state_keeps_every_weight_and_the_strided_conv():
    from uigc_models.model import Tokenizer, f8_state
    torch.manual_seed(0)
    f16 = Tokenizer(**SMALL).eval()
    f8 = Tokenizer(**SMALL, factor=8).eval()
    f8.load_state_dict(f8_state(f16))
    assert f8.hparams["factor"] == 8 and "factor" not in f16.hparams   # older checkpoints stay loadable
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        assert f8.encode_z(x).shape == (1, 4, 6, 8) and f16.encode_z(x).shape == (1, 4, 3, 4)
        assert f8.decode_indices(torch.zeros(1, 6, 8, dtype=torch.long)).shape == (1, 3, 48, 64)
        # the 3x3/1 conv at even positions is the f=16 2x2/2 conv
        i16 = [i for i, m in enumerate(f16.encoder.net) if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)][-1]
        h = torch.randn(1, 8, 8, 8)
        a, b = f16.encoder.net[i16](h), f8.encoder.net[i16](h)[..., ::2, ::2]
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert torch.equal(f8.quant.embed, f16.quant.embed)
    with pytest.raises(ValueError, match="factor 4"):
        Tokenizer(**SMALL, factor=4)


def test_install_needs_the_bundles_codebook():
    import onnx
    from uigc_models import dense
    from uigc_models.bundle import read_manifest
    from uigc_models.data import list_train_images
    from uigc_models.model import Tokenizer
    from uigc_models.onnx_import import _initializers
    try:
        list_train_images()
    except FileNotFoundError as e:
        skip_or_fail(f"the install check runs on training photos: {e}")
    src = os.path.join(REPO_ROOT, "tests", "data", "tiny-model")
    codebook = _initializers(onnx.load(os.path.join(src, "tokenizer_decoder.onnx")))["codebook"]
    torch.manual_seed(0)
    tok = Tokenizer(**SMALL, factor=8)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "b")
        shutil.copytree(src, bundle)
        ckpt = os.path.join(tmp, "f8.pt")
        torch.save({"hparams": tok.hparams, "model": tok.state_dict(), "step": 1}, ckpt)
        with pytest.raises(ValueError, match="--freeze-codebook"):
            dense.install(bundle, ckpt)
        assert "tokenizer_encoder_dense" not in read_manifest(bundle)
        with torch.no_grad():
            tok.quant.embed.copy_(torch.from_numpy(np.asarray(codebook)))
        torch.save({"hparams": tok.hparams, "model": tok.state_dict(), "step": 2}, ckpt)
        rep = dense.install(bundle, ckpt, version="0.0.2")
        assert rep["all_ok"] and rep["codebook_max_diff"] == 0.0
        m = read_manifest(bundle)
        assert m["version"] == "0.0.2"
        assert m["tokenizer_encoder_dense"]["path"] == dense.ENCODER_FILE
        assert m["tokenizer_decoder_dense"]["path"] == dense.DECODER_FILE
        # an f=16 checkpoint is refused
        f16 = Tokenizer(**SMALL)
        torch.save({"hparams": f16.hparams, "model": f16.state_dict()}, ckpt)
        with pytest.raises(ValueError, match="--factor 8"):
            dense.install(bundle, ckpt)
