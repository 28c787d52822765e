"""decoder_cost (issue 12/15): a candidate decoder's float and int8 cost next to the shipped graphs."""
import os
import re
import tempfile

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from conftest import skip_or_fail  # noqa: E402


@pytest.mark.parametrize("up_mode,subpixel_blocks", [("bilinear", 0), ("nearest", 4)])
def test_decoder_cost_times_all_four_graphs(capsys, up_mode, subpixel_blocks):
    import torch
    from uigc_models import decoder_cost
    from uigc_models.data import list_train_images
    from uigc_models.model import Tokenizer
    try:
        list_train_images()
    except FileNotFoundError as e:
        skip_or_fail(f"calibration needs the training photos: {e}")
    torch.manual_seed(0)
    # K must be the bundle's: the calibration tokens come from its encoder
    tok = Tokenizer(k=256, dec_ch=(16, 16, 8, 8, 8), dec_res=(1, 0, 0, 0, 0), up_mode=up_mode)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "c.pt")
        torch.save({"hparams": tok.hparams, "model": tok.state_dict()}, ckpt)
        assert decoder_cost.main([ckpt, "--tokens", "2x3"]) == 0
    out = capsys.readouterr().out
    assert f"decoder upsampling ['{up_mode}'], {subpixel_blocks} blocks in sub-pixel form" in out
    for name in ("shipped full", "shipped fast", "candidate float", "candidate int8"):
        assert re.search(rf"^{name} +CPU \d+\.\d+ s  wall \d+\.\d+ s  \(2x3 tokens, 1 thread\(s\)\)$", out, re.M), out
    psnr = [float(v) for v in re.findall(r"PSNR (-?\d+\.\d+) dB", out)]
    assert len(psnr) == 2 and all(p > 20 for p in psnr), out
