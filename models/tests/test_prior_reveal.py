"""Same-stage reveals (training for iterative regeneration): the masks follow docs/prior.md."""
import numpy as np
import torch

from uigc_models import prior_model as pm
from uigc_models.prior_train import sample_reveals


def test_no_reveal_is_the_coding_time_forward():
    torch.manual_seed(0)
    m = pm.PriorNet(K=16, d=32, heads=4, layers=2, ffn=64, radius=3, levels=3)
    x = torch.randint(0, 16, (2, 12, 16))
    cut = torch.full((2,), -1)
    reveal = torch.zeros(2, 12 * 16, dtype=torch.bool)
    assert torch.equal(m(x, 3, 5), m(x, 3, 5, cut, reveal))


def test_reveal_masks_follow_the_known_token_rule():
    rows, cols, R, levels = 16, 16, 3, 3
    st = pm.stage_grid(rows, cols, levels).reshape(-1)
    n = rows * cols
    cut = torch.tensor([6])
    reveal = ((st == 6) & (torch.arange(n) % 3 == 0))[None]
    mask = pm.reveal_masks(rows, cols, R, levels, 0, 0, cut, reveal)[0]
    base, _, _ = pm.masks(rows, cols, R, levels)
    rr, cc = np.divmod(np.arange(n), cols)
    for i in range(n):
        win = torch.from_numpy((np.abs(rr - rr[i]) <= R) & (np.abs(cc - cc[i]) <= R))
        partial = win & ((st < 6) | reveal[0])
        # known copies: revealed ones see stages < 6 plus the revealed set (themselves included)
        assert torch.equal(mask[i], partial if reveal[0, i] else base[i])
        # queries of stage 6 see the same set (never themselves: they are not revealed)
        assert torch.equal(mask[n + i], partial if st[i] == 6 and not reveal[0, i] else base[n + i])


def test_sampled_reveals_and_loss_weights():
    x = torch.zeros(8, 16, 16, dtype=torch.long)
    cut, reveal, w = sample_reveals(x, 0, 0, 3, 1.0, np.random.default_rng(3))
    st = pm.stage_grid(16, 16, 3).reshape(-1)
    assert (cut >= 1).all() and (cut <= 9).all()
    for b in range(8):
        assert (st[reveal[b]] == cut[b]).all()
        keep = (st < cut[b]) | ((st == cut[b]) & ~reveal[b])
        assert torch.equal(w[b] > 0, keep)
    cut, reveal, w = sample_reveals(x, 0, 0, 3, 0.0, np.random.default_rng(3))
    assert (cut == -1).all() and not reveal.any() and (w == 1).all()
