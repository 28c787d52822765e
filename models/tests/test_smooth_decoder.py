"""Smooth decoder (issue 12): installed into a bundle only when its encoder and codebook are the
bundle's, with its own tile graph when the bundle has one, outside the model id."""
import os
import shutil
import tempfile

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from conftest import REPO_ROOT, skip_or_fail  # noqa: E402

SMALL = dict(k=16, code_dim=4, enc_ch=(8, 8, 8), enc_res=(1, 1, 1), dec_ch=(8, 8, 8, 8, 8), dec_res=(1, 0, 0, 0, 0))


def test_install_checks_the_tokens_and_writes_both_graphs():
    from uigc_models import smooth_decoder
    from uigc_models.bundle import read_manifest, set_optional_file, verify_bundle_hashes
    from uigc_models.data import list_train_images
    from uigc_models.model import Tokenizer
    from uigc_models.bundle import write_manifest
    from uigc_models.export import export_onnx
    from uigc_models.tiled import TILE_FILE, export_tile_graph
    try:
        list_train_images()
    except FileNotFoundError as e:
        skip_or_fail(f"the install check runs on training photos: {e}")
    torch.manual_seed(0)
    tok = Tokenizer(**SMALL).eval()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "b")
        os.makedirs(bundle)
        export_onnx(tok, bundle)   # a bundle of a nearest-upsampling tokenizer, K=16, with a tile graph
        shutil.copy(os.path.join(REPO_ROOT, "tests", "data", "tiny-model", "prior.bin"), bundle)
        write_manifest(bundle, "small", "0.0.1", 16)
        export_tile_graph(tok, bundle)
        set_optional_file(bundle, "tokenizer_decoder_tile", TILE_FILE)
        before = open(os.path.join(bundle, "manifest.toml")).read()
        smooth = Tokenizer(**{**tok.hparams, "up_mode": "bilinear"}).eval()
        smooth.load_state_dict(tok.state_dict())
        ckpt = os.path.join(tmp, "smooth.pt")

        # another encoder (the codebook kept): its tokens are not the bundle's
        with torch.no_grad():
            conv = next(m for m in smooth.encoder.modules() if isinstance(m, torch.nn.Conv2d))
            saved = conv.weight.clone()
            conv.weight.mul_(-1.0)
        torch.save({"hparams": smooth.hparams, "model": smooth.state_dict(), "step": 1}, ckpt)
        with pytest.raises(ValueError, match="--freeze-encoder"):
            smooth_decoder.install(bundle, ckpt)
        assert open(os.path.join(bundle, "manifest.toml")).read() == before
        assert not os.path.exists(os.path.join(bundle, smooth_decoder.DECODER_FILE))

        with torch.no_grad():
            conv.weight.copy_(saved)
        torch.save({"hparams": smooth.hparams, "model": smooth.state_dict(), "step": 2}, ckpt)
        rep = smooth_decoder.install(bundle, ckpt, version="0.0.3")
        assert rep["all_indices_identical"] and rep["up_mode"] == "bilinear" and rep["codebook_max_diff"] == 0.0
        assert rep["max_decoder_diff"] < 1e-3
        assert rep["tile"]["own_stats_vs_decoder_max_abs"] < 1e-3
        assert rep["tile"]["tile_given_stats_mean_abs"] < rep["tile"]["tile_own_stats_mean_abs"]
        m = read_manifest(bundle)
        assert m["version"] == "0.0.3"
        assert m["tokenizer_decoder_smooth"]["path"] == smooth_decoder.DECODER_FILE
        assert m["tokenizer_decoder_tile_smooth"]["path"] == smooth_decoder.TILE_FILE
        verify_bundle_hashes(bundle)

        # an f=8 tokenizer is refused
        f8 = Tokenizer(**{**tok.hparams, "factor": 8})
        torch.save({"hparams": f8.hparams, "model": f8.state_dict()}, ckpt)
        with pytest.raises(ValueError, match="f=16"):
            smooth_decoder.install(bundle, ckpt)
