"""The training-side colour-thumbnail correction (uigc_models/colour.py) is the Rust decoder's: a frame
encoded with and without the thumbnail by the real CLI, the thumbnail-free decode corrected in PyTorch,
equals the Rust decode with the thumbnail (up to float rounding)."""
import os
import subprocess

import numpy as np
import pytest
from conftest import require_module

torch = require_module("torch")

from conftest import REPO_ROOT, uigc_binary  # noqa: E402
from uigc_models import colour  # noqa: E402
from uigc_models.data import load_rgb  # noqa: E402

TINY = os.path.join(REPO_ROOT, "tests", "data", "tiny-model")


def to_t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.parametrize("spec,size", [("32:4", (200, 136)), ("16:1", (97, 61)), ("64:8", (150, 300))])
def test_torch_correction_matches_the_rust_decoder(tmp_path, spec, size):
    from PIL import Image
    w, h = size
    rgb = load_rgb(os.path.join(REPO_ROOT, "docs", "sample", "kodim23.png"))[100:100 + h, 200:200 + w]
    src = str(tmp_path / "f.png")
    Image.fromarray(rgb).save(src)
    out = {}
    for mode in ("off", "on:" + spec):
        pkt, png = str(tmp_path / "p.uigc"), str(tmp_path / f"{mode[:3]}.png")
        for cmd in (["encode", src, "-o", pkt, "--colour", mode], ["decode", pkt, "-o", png]):
            r = subprocess.run([uigc_binary(), *cmd, "--model", TINY, "--threads", "1"],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        out[mode[:3]] = np.asarray(Image.open(png).convert("RGB")).astype(int)
    block, step = colour.parse(spec)
    y = colour.correct(to_t(out["off"]), to_t(rgb), block, step)
    mine = ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(int)
    diff = np.abs(mine - out["on:"])
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    # and the correction does something: the block means move to the photo's
    err = lambda a: float((colour.thumbnail(to_t(a.astype(np.uint8)), block, step)  # noqa: E731
                           - colour.thumbnail(to_t(rgb), block, step)).abs().mean())
    assert err(out["on:"]) < 0.5 * err(out["off"])


def test_parse_refuses_what_the_packet_cannot_carry():
    assert colour.parse("32:4") == (32, 4)
    for bad in ("24:4", "32:0", "32:33", "4:4"):
        with pytest.raises(ValueError):
            colour.parse(bad)
