"""bench_codecs' peer codecs (issue 12 item 5): byte matching and each peer on a small picture."""
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("torch")

from uigc_models import bench_codecs as bc  # noqa: E402
from conftest import skip_or_fail  # noqa: E402


def test_matched_finds_the_closest_size_and_its_picture():
    calls = []

    def encode(q):
        calls.append(q)
        return 1000 - 7 * q, f"picture {q}"
    q, size, pic = bc.matched(encode, 555, 0, 100)
    assert abs(size - 555) <= 3 and pic == f"picture {q}"
    assert len(calls) <= 8, "a binary search, not a scan"
    # out of reach: the nearest end
    assert bc.matched(encode, 5000, 0, 100)[0] == 0
    assert bc.matched(encode, 10, 0, 100)[0] == 100


def picture(h=96, w=128):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 2, y * 2, (x + y) % 256], -1)
    rgb[30:60, 40:90] = [200, 40, 40]
    return rgb.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("peer", sorted(bc.PEERS))
def test_each_peer_decodes_a_picture_near_the_asked_bytes(peer):
    for tool in ("aomenc", "aomdec", "ffmpeg"):
        if not shutil.which(tool):
            skip_or_fail(f"{tool} not installed (deploy/setup.sh --dev installs it)")
    rgb = picture()
    label, encode = bc.PEERS[peer]
    with tempfile.TemporaryDirectory() as tmp:
        small = encode(rgb, 300, tmp)
        large = encode(rgb, 3000, tmp)
    for q, size, rec in (small, large):
        assert rec.shape == rgb.shape and rec.dtype == np.uint8
        assert size > 0
    assert small[1] < large[1], f"{peer}: more bytes asked, fewer given ({small[1]} vs {large[1]})"
    # the larger one is the better picture
    err = lambda r: float(np.mean((r.astype(float) - rgb) ** 2))
    assert err(large[2]) < err(small[2]), peer
    assert err(large[2]) < 200.0, f"{peer}: {err(large[2]):.1f} MSE at 3000 bytes (a broken decode?)"


def test_side_by_side_is_a_grid_with_every_picture():
    from PIL import Image
    rgb = picture(64, 80)
    pictures = [(f"codec {i}", np.full_like(rgb, 20 * i)) for i in range(7)]
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/sbs.png"
        bc.side_by_side(rgb, pictures, path, crop=32, columns=3)
        sheet = np.asarray(Image.open(path).convert("RGB"))
    # 8 tiles (the original first), 3 a row: 3 rows of (32 + 32) px, 3 columns of (32 + 4) px
    assert sheet.shape == (3 * 64, 3 * 36, 3)
    # the last picture sits in row 3, column 2, below its label
    assert (sheet[2 * 64 + 28:2 * 64 + 60, 36:68] == 120).all()
    # the original's centre crop is first
    assert (sheet[28:60, 0:32] == rgb[16:48, 24:56]).all()
