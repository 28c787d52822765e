"""token_refine: the straight-through optimisation of a latent finds a grid that decodes closer to the image."""
from conftest import require_module

torch = require_module("torch")

from uigc_models.model import Tokenizer  # noqa: E402
from uigc_models.token_refine import refine  # noqa: E402


def test_refinement_lowers_the_loss_by_changing_tokens():
    torch.manual_seed(0)
    tok = Tokenizer(k=32, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                    dec_res=(1, 0, 0, 0, 0)).eval()
    tok.requires_grad_(False)
    t = torch.rand(1, 3, 64, 96) * 2 - 1
    no_lpips = lambda a, b: torch.zeros(a.shape[0])  # noqa: E731  (w_lpips 0: L1 + MSE only)
    idx0 = tok.encode_indices(t)
    same, loss_same, first = refine(tok, no_lpips, t, 0, 0.05, 0.0, 4.0)
    assert torch.equal(same, idx0) and loss_same == first
    best, loss, first = refine(tok, no_lpips, t, 30, 0.05, 0.0, 4.0)
    assert best.shape == idx0.shape and best.dtype == idx0.dtype
    assert (best != idx0).any()
    assert loss < first
    err = lambda g: float((tok.decode_indices(g) - t).abs().mean() * 0.5 + ((tok.decode_indices(g) - t) ** 2).mean() * 4)  # noqa: E731
    assert abs(err(idx0) - first) < 1e-5 and abs(err(best) - loss) < 1e-5
