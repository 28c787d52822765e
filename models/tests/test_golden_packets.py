"""The golden grids of tests/data/golden-packet/ are the Python integer reference's
(models/make_golden_packets.py), not whatever the Rust decoder printed."""
import os

import numpy as np

from conftest import REPO_ROOT
import make_golden_packets as mg

GOLDEN = os.path.join(REPO_ROOT, "tests", "data", "golden-packet")


def read_u16(name):
    return np.fromfile(os.path.join(GOLDEN, name), "<u2").astype(np.int64)


def test_input_grid_is_the_documented_formula():
    assert (read_u16("tokens.u16le") == mg.golden_grid()).all()


def test_adaptive_argmax_grid_is_the_reference():
    from uigc_models import intprior_ref as ref
    grid = mg.golden_grid()
    regen, extras = mg.adaptive_argmax_grid(ref.load_prior(mg.INT_PRIOR), grid)
    assert len(extras) == mg.EXTRA
    assert (read_u16("tokens-int-adaptive-argmax.u16le") == regen).all()
    # The regeneration changes something (else the file would pin nothing beyond the input).
    assert (regen != grid).sum() > 100
