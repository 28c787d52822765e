"""Decoder weight averaging: averages the decoder, keeps encoder/codebook, refuses mismatches."""
import pytest
from conftest import require_module

torch = require_module("torch")

from uigc_models.average import AverageError, average_states, main  # noqa: E402
from uigc_models.model import Tokenizer  # noqa: E402


def tiny(seed):
    torch.manual_seed(seed)
    return Tokenizer(k=32, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                     dec_res=(1, 0, 0, 0, 0)).eval()


def fine_tuned(base, seed):
    """A copy of `base` whose decoder alone was moved (what --freeze-encoder training does)."""
    m = tiny(0)
    m.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.decoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def test_average_of_decoders_keeps_the_tokens():
    base = tiny(0)
    a, b, c = (fine_tuned(base, s) for s in (1, 2, 3))
    avg = average_states([m.state_dict() for m in (a, b, c)])
    for k, v in avg.items():
        if k.startswith("decoder.") and v.is_floating_point():
            want = (a.state_dict()[k] + b.state_dict()[k] + c.state_dict()[k]) / 3
            assert torch.allclose(v, want, atol=1e-6), k
        else:
            assert torch.equal(v, base.state_dict()[k]), k
    m = tiny(5)
    m.load_state_dict(avg)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    assert torch.equal(m.encode_indices(x), base.encode_indices(x))
    # and the decoder really is a new one
    idx = base.encode_indices(x)
    assert not torch.allclose(m.decode_indices(idx), a.decode_indices(idx))


def test_refuses_other_encoder_or_codebook():
    base = tiny(0)
    a = fine_tuned(base, 1)
    other = tiny(7)  # different encoder and codebook
    with pytest.raises(AverageError, match="outside the decoder"):
        average_states([a.state_dict(), other.state_dict()])
    cb = fine_tuned(base, 2)
    with torch.no_grad():
        cb.quant.embed[0, 0] += 1e-3
    with pytest.raises(AverageError, match="quant"):
        average_states([a.state_dict(), cb.state_dict()])
    with pytest.raises(AverageError, match="no checkpoints"):
        average_states([])


def test_cli_writes_a_loadable_checkpoint(tmp_path):
    base = tiny(0)
    paths = []
    for s in (1, 2):
        m = fine_tuned(base, s)
        p = tmp_path / f"c{s}.pt"
        torch.save({"model": m.state_dict(), "hparams": m.hparams, "args": {}, "step": 10 * s,
                    "train_seconds": 60.0 * s}, p)
        paths.append(str(p))
    assert main(["--run", "avg", "--runs-root", str(tmp_path), *paths]) == 0
    ck = torch.load(tmp_path / "avg" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 20 and [s["step"] for s in ck["averaged_from"]] == [10, 20]
    m = Tokenizer(**ck["hparams"])
    m.load_state_dict(ck["model"])
    # a checkpoint of another architecture is refused with an error, not averaged
    big = Tokenizer(k=64, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                    dec_res=(1, 0, 0, 0, 0))
    torch.save({"model": big.state_dict(), "hparams": big.hparams, "args": {}, "step": 1}, tmp_path / "big.pt")
    assert main(["--run", "avg2", "--runs-root", str(tmp_path), paths[0], str(tmp_path / "big.pt")]) == 2
