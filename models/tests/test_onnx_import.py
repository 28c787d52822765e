"""Rebuilding a train.py checkpoint from the shipped bundle's ONNX graphs (uigc_models.onnx_import)."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from uigc_models.data import load_rgb  # noqa: E402
from uigc_models.export import SAMPLE_IMAGE  # noqa: E402
from uigc_models.model import Tokenizer  # noqa: E402
from uigc_models.onnx_import import checkpoint_dict, import_bundle, verify  # noqa: E402

BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "uigc-small")


def test_shipped_bundle_round_trips(tmp_path):
    torch.set_num_threads(1)
    tok, hp = import_bundle(BUNDLE)
    assert hp["k"] == 256 and hp["code_dim"] == 32 and hp["up_mode"] == "nearest"
    assert hp["enc_ch"] == [64, 128, 192] and hp["enc_res"] == [1, 1, 2]
    assert hp["dec_ch"] == [192, 128, 96, 48, 24] and hp["dec_res"] == [2, 1, 1, 1, 0]
    a = load_rgb(SAMPLE_IMAGE)
    crops = [np.ascontiguousarray(a[192:320, 288:480]), np.ascontiguousarray(a[:64, :96])]
    rep = verify(tok, BUNDLE, crops, threads=1)
    assert rep["all_indices_identical"], rep
    assert rep["max_decoder_diff"] <= 1e-4, rep

    # the checkpoint is what train.py / export.load_tokenizer read
    ck = checkpoint_dict(tok, hp, BUNDLE, rep)
    p = tmp_path / "imported.pt"
    torch.save(ck, p)
    ck2 = torch.load(p, map_location="cpu", weights_only=False)
    for key in ("k", "code_dim", "enc_ch", "enc_res", "dec_ch", "dec_res", "up_mode"):
        assert ck2["args"][key] == hp[key]
    assert ck2["step"] == 2415 and ck2["train_seconds"] > 0
    t2 = Tokenizer(**ck2["hparams"])
    t2.load_state_dict(ck2["model"])
    t2.eval()
    x = torch.from_numpy(crops[1]).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert torch.equal(t2.encode_indices(x), tok.encode_indices(x))
