"""GPU training path (uigc_models.gpu_pack + gpu/train_on_device.sh): pack -> CPU dry run -> unpack."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from uigc_models.gpu_pack import INPUT_LIMIT, RETURN_LIMIT, pack, unpack  # noqa: E402
from uigc_models.lpips import weights_path  # noqa: E402
from uigc_models.model import Tokenizer  # noqa: E402


def tiny_ckpt(path):
    torch.manual_seed(0)
    tok = Tokenizer(k=32, code_dim=8, enc_ch=(8, 8, 16), enc_res=(1, 0, 1), dec_ch=(16, 8, 8, 8, 8),
                    dec_res=(1, 0, 0, 0, 0), up_mode="bilinear")
    tok.quant.initted.fill_(1)
    args = dict(tok.hparams)
    torch.save({"model": tok.state_dict(), "step": 7, "train_seconds": 60.0, "args": args, "hparams": tok.hparams},
               path)
    return tok


def fake_train_root(root):
    from PIL import Image
    rng = np.random.default_rng(0)
    for sub in ("bsds500", "sun-hays80", "urban100"):
        d = root / "train" / sub
        d.mkdir(parents=True)
        for i in range(3):
            a = rng.integers(0, 255, (272, 288, 3), dtype=np.uint8)   # >= the 256px validation crops
            Image.fromarray(a).save(d / f"im{i}.jpg", quality=90)
    return str(root)


def test_pack_dry_run_unpack(tmp_path):
    w = weights_path("alex")
    if not os.path.exists(w):
        pytest.skip(f"LPIPS-alex weights not found at {w} (python -m uigc_models.lpips convert)")
    base = tmp_path / "base.pt"
    tok = tiny_ckpt(base)
    pdir = tmp_path / "pack"
    meta = pack(str(base), str(pdir), fake_train_root(tmp_path / "data"),
                "--freeze-encoder --warmup-frac 0 --colour-loop 32:4 --lpips-shift 16", max_data_mib=60, minutes=1,
                lpips_weights=w, log=lambda *_: None)
    assert meta["data_files"] == 9 and meta["total_mib"] * 2 ** 20 <= INPUT_LIMIT
    assert (pdir / "run.sh").exists() and (pdir / "uigc_models" / "train.py").exists()
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DRY_RUN="1", PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", str(pdir / "run.sh")], env=env, capture_output=True, text=True, timeout=600,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = out / "gpu_ckpt.pt"
    assert got.exists() and got.stat().st_size <= RETURN_LIMIT
    assert (out / "train.log").exists() and (out / "run.log").exists()
    ck = unpack(str(base), str(got), str(tmp_path / "merged.pt"))
    assert ck["step"] == 3 and ck["gpu_run"]["dry_run"]
    t2 = Tokenizer(**ck["hparams"])
    t2.load_state_dict(ck["model"])
    assert t2.hparams["up_mode"] == "bilinear"
    # frozen encoder: identical weights, so the tokens do not change
    for k, v in tok.state_dict().items():
        if k.startswith("encoder.") or k == "quant.embed":
            assert torch.equal(v, ck["model"][k]), k
