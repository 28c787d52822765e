"""The PyTorch LPIPS port must reproduce the reference distances on the official example triplet."""
import os

import pytest
from conftest import require_module

torch = require_module("torch")

from uigc_models.lpips import LPIPS, load_image_m11  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMGS = os.path.join(HERE, "data", "lpips")


def test_lpips_alex_reference_triplet(lpips_alex_weights):
    w = lpips_alex_weights
    m = LPIPS("alex", weights=w)
    ref = load_image_m11(os.path.join(IMGS, "ex_ref.png"))
    with torch.no_grad():
        d0 = m(ref, load_image_m11(os.path.join(IMGS, "ex_p0.png"))).item()
        d1 = m(ref, load_image_m11(os.path.join(IMGS, "ex_p1.png"))).item()
    assert abs(d0 - 0.722) <= 0.002, d0
    assert abs(d1 - 0.138) <= 0.002, d1


def test_lpips_identity_is_zero(lpips_alex_weights):
    w = lpips_alex_weights
    m = LPIPS("alex", weights=w)
    ref = load_image_m11(os.path.join(IMGS, "ex_ref.png"))
    with torch.no_grad():
        assert m(ref, ref).item() == pytest.approx(0.0, abs=1e-7)
