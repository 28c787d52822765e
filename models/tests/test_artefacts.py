"""Periodic-artefact figure (uigc_models.artefacts)."""
import numpy as np

from uigc_models.artefacts import KEYS, periodic_ratios, periodic_record, summarise


def photo_like(h=256, w=384, seed=0):
    """A smooth random image (low-pass noise) in 8-bit RGB: little power at short periods."""
    rng = np.random.default_rng(seed)
    f = np.fft.fft2(rng.normal(size=(h, w)))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None]
    y = np.real(np.fft.ifft2(f / (1 + 200 * np.hypot(fy, fx)) ** 2))
    y = 128 + 60 * y / y.std()
    return np.clip(np.stack([y, y * 0.9 + 10, y * 0.8 + 20], -1), 0, 255).astype(np.uint8)


def test_identical_images_give_one():
    a = photo_like()
    r = periodic_ratios(a, a)
    assert set(r) == set(KEYS) | {"periodic_max"}
    assert all(abs(v - 1.0) < 1e-9 for v in r.values()), r


def test_period8_pattern_is_found_on_its_axis():
    a = photo_like()
    rows = np.arange(a.shape[0])[:, None, None]
    grid = 6.0 * np.cos(2 * np.pi * rows / 8)      # repeats every 8 rows: period 8 vertically
    b = np.clip(a + grid, 0, 255).astype(np.uint8)
    r = periodic_ratios(a, b)
    assert r["p8v"] > 20, r
    assert r["periodic_max"] == r["p8v"]
    for k in ("p8h", "p4h", "p16h", "p16v"):
        assert r[k] < 1.5, (k, r)


def test_blur_stays_below_one_and_record_shape():
    a = photo_like()
    f = a.astype(np.float64)
    b = ((f + np.roll(f, 1, 0) + np.roll(f, 1, 1) + np.roll(f, (1, 1), (0, 1))) / 4).round().astype(np.uint8)
    rec = periodic_record(a, b)
    assert rec["periodic_max"] < 1.0, rec
    s = summarise([{"image": "x.png", **rec}, {"image": "y.png", **periodic_record(a, a)}])
    assert s["periodic_images_over_2"] == 0 and abs(s["periodic_max_worst"] - 1.0) < 1e-9


def test_lpips_shifted_identical_is_zero_and_sees_a_difference():
    import os

    import pytest
    torch = pytest.importorskip("torch")
    from uigc_models.artefacts import lpips_shifted
    from uigc_models.lpips import LPIPS, weights_path
    w = weights_path("alex")
    if not os.path.exists(w):
        pytest.skip(f"LPIPS-alex weights not found at {w}")
    lp = LPIPS("alex", weights=w)
    a = torch.from_numpy(photo_like(96, 128)).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert lpips_shifted(lp, a, a) < 1e-6
    b = a + 0.2 * torch.cos(torch.arange(96.0) * 2 * torch.pi / 8)[None, None, :, None]
    assert lpips_shifted(lp, a, b) > 0.01
