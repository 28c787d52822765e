"""Video benchmark helpers: point names, packet stream framing, equal-LPIPS rate interpolation, and
(when ffmpeg with libx265 is installed) one tiny x265 point end to end."""
import math
import os
import shutil
import struct
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from uigc_models import bench_video as bv  # noqa: E402


def test_uigc_point_names():
    assert bv.uigc_args("intra") == ("uigc-intra", ["--keyframe-interval", "1"])
    assert bv.uigc_args("inter:t3") == ("uigc-inter-t3", ["--change-threshold", "3"])
    assert bv.uigc_args("inter:t5:r8000:m300") == (
        "uigc-inter-t5-r8000-m300",
        ["--change-threshold", "5", "--target-bitrate", "8000", "--max-frame-bytes", "300"])
    with pytest.raises(SystemExit):
        bv.uigc_args("dense")


def test_split_packets(tmp_path):
    p = tmp_path / "s.uigcs"
    pk = [b"abc", b"", b"\x00" * 300]
    p.write_bytes(b"".join(struct.pack("<I", len(x)) + x for x in pk))
    assert bv.split_packets(str(p)) == pk


def test_rate_at_lpips_is_log_linear_and_bounded():
    pts = [{"lpips_alex": 0.2, "kbps": 100.0}, {"lpips_alex": 0.4, "kbps": 10.0},
           {"lpips_alex": 0.3, "kbps": 20.0}, {"lpips_alex": None, "kbps": 1.0}]
    assert math.isclose(bv.rate_at_lpips(pts, 0.25), math.sqrt(100 * 20))
    assert math.isclose(bv.rate_at_lpips(pts, 0.4), 10.0)
    assert bv.rate_at_lpips(pts, 0.5) is None and bv.rate_at_lpips(pts, 0.1) is None


def test_frame_list(tmp_path):
    for i in range(25):
        (tmp_path / f"f_{i:05d}.png").write_bytes(b"")
    fl = bv.frame_list(str(tmp_path), 10, None)
    assert [os.path.basename(f) for f in fl] == ["f_00000.png", "f_00010.png", "f_00020.png"]
    assert len(bv.frame_list(str(tmp_path), 1, 4)) == 4


def test_x265_point_round_trip(tmp_path):
    ff = shutil.which("ffmpeg")
    if not ff or b"libx265" not in subprocess.run([ff, "-hide_banner", "-encoders"], capture_output=True).stdout:
        pytest.skip("ffmpeg with libx265 not installed")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 6, 3)).repeat(16, 0).repeat(16, 1).astype(np.uint8)  # 64x96
    frames = [np.roll(base, i, 1) for i in range(3)]
    a = SimpleNamespace(fps=10.0, ff_threads=1, av1_cpu_used=8)
    out = list(bv.ffmpeg_point("x265", 20, "0", ["a", "b", "c"], lambda i: frames[i], a, str(tmp_path)))
    assert [o[0] for o in out] == [0, 1, 2]
    assert os.path.getsize(tmp_path / "stream.hevc") > 0
    assert all(bv.psnr(frames[i], o[5]) > 20 for i, o in enumerate(out))
