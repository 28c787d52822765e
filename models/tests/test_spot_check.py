"""Checkpoint spot check: image selection and the raw / colour-corrected scores."""
import numpy as np
import pytest
from conftest import require_module

torch = require_module("torch")

from uigc_models.lpips import LPIPS  # noqa: E402
from uigc_models.model import Tokenizer  # noqa: E402
from uigc_models.spot_check import score, select_images  # noqa: E402


def fake_kodak(tmp_path):
    d = tmp_path / "kodak"
    d.mkdir()
    for i in range(1, 25):
        (d / f"kodim{i:02d}.png").write_bytes(b"")
    return str(tmp_path)


def test_select_images(tmp_path):
    root = fake_kodak(tmp_path)
    six = [p.rsplit("/", 1)[1] for p in select_images("six", root)]
    assert six == ["kodim01.png", "kodim05.png", "kodim09.png", "kodim13.png", "kodim17.png", "kodim21.png"]
    assert len(select_images("all", root)) == 24
    assert [p.rsplit("/", 1)[1] for p in select_images("kodim23, kodim01.png", root)] == ["kodim01.png", "kodim23.png"]
    with pytest.raises(FileNotFoundError, match="kodim99"):
        select_images("kodim01,kodim99", root)


def test_colour_correction_scores_better_on_a_flat_image(lpips_alex_weights):
    w = lpips_alex_weights
    torch.manual_seed(0)
    tok = Tokenizer(k=32, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                    dec_res=(1, 0, 0, 0, 0)).eval()
    flat = np.zeros((64, 96, 3), np.uint8)
    flat[...] = (200, 60, 30)
    r = score(tok, [flat], LPIPS("alex", weights=w), block=16, step=1)
    assert set(r) == {"raw", "colour"}
    assert all(np.isfinite(v).all() for v in r.values())
    # an untrained decoder gets the colour wrong; the correction moves its block means to the photo's
    assert r["colour"][1] > r["raw"][1] + 3.0, r
