"""train.grid_template: the error component locked to the 16-px token grid (--w-grid)."""
import pytest

torch = pytest.importorskip("torch")

from uigc_models.train import grid_template  # noqa: E402


def test_locked_pattern_is_seen_and_unlocked_noise_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 160, 160, generator=g) * 2 - 1
    rows = torch.arange(160.0)
    locked = 0.05 * torch.cos(2 * torch.pi * rows / 8)[None, None, :, None].expand(8, 3, 160, 160)
    noise = 0.05 * torch.randn(8, 3, 160, 160, generator=g)
    t_locked = grid_template(locked).pow(2).mean()
    t_noise = grid_template(noise).pow(2).mean()
    assert t_locked > 100 * t_noise
    # a constant offset (colour) and a pattern that is not 16-periodic are not the grid's
    assert grid_template(torch.full((2, 3, 32, 48), 0.3)).abs().max() < 1e-6
    y = (x + locked).requires_grad_(True)
    grid_template(y - x).pow(2).mean().backward()
    assert y.grad.abs().sum() > 0


def test_per_crop_sees_a_pattern_whose_sign_depends_on_the_image():
    rows = torch.arange(64.0)
    pat = 0.05 * torch.cos(2 * torch.pi * rows / 8)[None, None, :, None].expand(2, 3, 64, 64).clone()
    pat[1] *= -1      # opposite sign in the second image: cancels in the batch mean
    assert grid_template(pat).abs().max() < 1e-7
    assert grid_template(pat, per_crop=True).shape == (2, 3, 16, 16)
    assert grid_template(pat, per_crop=True).pow(2).mean() > 1e-4
