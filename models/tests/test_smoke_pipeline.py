"""Smoke test of the whole Python pipeline on a tiny model: data cache -> train (autoencoder phase, then
resumed into k-means + VQ) -> export (unigram prior, golden) -> the Rust CLI loads the bundle and
round-trips a frame. Needs no ../shared data: the 'training photos' are crops of docs/sample/kodim23.png
(the model is thrown away). ~15 s on 2 cores."""
import json
import os
import signal

import numpy as np
from conftest import require_module

torch = require_module("torch")
require_module("onnxruntime")

from conftest import REPO_ROOT, cli_roundtrip  # noqa: E402
from uigc_models import data, export, train  # noqa: E402
from uigc_models.bundle import read_prior_bin, verify_bundle_hashes  # noqa: E402

TINY = ["--k", "16", "--code-dim", "8", "--enc-ch", "8", "8", "8", "--enc-res", "1", "0", "1",
        "--dec-ch", "8", "8", "8", "8", "8", "--dec-res", "1", "0", "0", "0", "0",
        "--crop", "32", "--batch", "2", "--threads", "1", "--kmeans-crop", "64", "--kmeans-iters", "5",
        "--lr-warmup-steps", "1", "--log-every", "1", "--total-minutes", "60"]


def fake_data_root(root):
    """train/{bsds500,sun-hays80,urban100}/ with one 256x384 crop of kodim23 each (256: the validation crops)."""
    from PIL import Image
    a = data.load_rgb(os.path.join(REPO_ROOT, "docs", "sample", "kodim23.png"))
    for i, sub in enumerate(("bsds500", "sun-hays80", "urban100")):
        d = os.path.join(root, "train", sub)
        os.makedirs(d)
        y, x = (0, 256, 0)[i], (0, 0, 384)[i]
        Image.fromarray(a[y:y + 256, x:x + 384]).save(os.path.join(d, f"{i}.png"))


def run_train(argv):
    """train.main in this process (no second torch start-up), leaving pytest's signal handlers as they were."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return train.main(argv)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_train_export_and_rust_roundtrip(tmp_path, lpips_alex_weights):
    # The LPIPS-alex weights are a training loss: the fixture fails under CI when they are absent.
    threads = torch.get_num_threads()
    root, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    fake_data_root(root)
    cache = data.prepare(root, str(tmp_path / "train_u8.pkl"))
    common = ["--run", "smoke", "--runs-root", runs, "--data-cache", cache] + TINY
    try:
        # 1. two steps of the autoencoder warm-up (the schedule is 60 min long: progress stays ~0 < 0.5)
        assert run_train(common + ["--max-steps", "2", "--warmup-frac", "0.5"]) == 0
        ck = torch.load(os.path.join(runs, "smoke", "last.pt"), weights_only=False)
        assert ck["step"] == 2 and ck["model"]["quant.initted"].item() == 0
        # 2. resumed with the warm-up over: k-means codebook initialisation, then two VQ steps
        assert run_train(common + ["--max-steps", "4", "--warmup-frac", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    ck = torch.load(os.path.join(runs, "smoke", "last.pt"), weights_only=False)
    assert ck["step"] == 4 and ck["model"]["quant.initted"].item() == 1
    assert ck["hparams"]["k"] == 16 and ck["hparams"]["code_dim"] == 8
    with open(os.path.join(runs, "smoke", "metrics.jsonl")) as f:
        phases = [json.loads(line)["phase"] for line in f]
    assert phases == ["ae", "ae", "vq", "vq"]
    assert os.path.exists(os.path.join(runs, "smoke", "ae_warmup.pt"))

    bundle = str(tmp_path / "bundle")
    try:
        rc = export.main(["--ckpt", os.path.join(runs, "smoke", "last.pt"), "--out", bundle, "--name", "smoke",
                          "--data-root", root, "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    m = verify_bundle_hashes(bundle)
    assert m["name"] == "smoke" and m["codebook_size"] == 16 and m["prior"]["kind"] == "unigram"
    w = read_prior_bin(os.path.join(bundle, "prior.bin"))
    assert len(w) == 16 and w.sum() == 3 * (256 // 16) * (384 // 16) + 16  # every token of the 3 photos, +1 each
    with open(os.path.join(bundle, "export_report.json")) as f:
        rep = json.load(f)
    assert rep["all_indices_identical"] and rep["all_shapes_ok"] and rep["step"] == 4
    assert os.path.isfile(os.path.join(bundle, "golden", "indices.i64le"))

    rgb = np.ascontiguousarray(data.load_rgb(os.path.join(root, "train", "bsds500", "0.png"))[:50, :90])
    r = cli_roundtrip(bundle, rgb, str(tmp_path))
    assert r["grid"].shape == (4, 6)


def test_freeze_decoder_trains_the_encoder_only(tmp_path, lpips_alex_weights):
    """--freeze-decoder: the decoder and the codebook are bit-identical after training, the encoder is not;
    with --freeze-encoder too, or without a checkpoint to start from, it refuses."""
    threads = torch.get_num_threads()
    root, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    fake_data_root(root)
    cache = data.prepare(root, str(tmp_path / "train_u8.pkl"))
    common = ["--runs-root", runs, "--data-cache", cache] + TINY
    try:
        assert run_train(["--run", "base"] + common + ["--max-steps", "2", "--warmup-frac", "0"]) == 0
        base = os.path.join(runs, "base", "last.pt")
        enc_only = ["--run", "enc", "--init-from", base, "--freeze-decoder", "--max-steps", "3", "--warmup-frac", "0"]
        assert run_train(common + enc_only) == 0
        assert run_train(["--run", "none"] + common + ["--freeze-decoder", "--max-steps", "1", "--warmup-frac", "0"]) == 2
        assert run_train(common + enc_only[:4] + ["--freeze-encoder", "--freeze-decoder", "--max-steps", "1"]) == 2
    finally:
        torch.set_num_threads(threads)
    a = torch.load(base, weights_only=False)["model"]
    b = torch.load(os.path.join(runs, "enc", "last.pt"), weights_only=False)["model"]
    for k, v in a.items():
        if k.startswith("encoder.") and v.is_floating_point():
            continue
        assert torch.equal(v, b[k]), k
    assert any(not torch.equal(v, b[k]) for k, v in a.items() if k.startswith("encoder."))


def test_regenerate_replaces_the_stages_not_sent_with_the_priors_argmax():
    """train.regenerate: stages < keep untouched, the rest the float prior's argmax given the earlier
    stages, computed stage by stage (so a later stage sees the regenerated earlier ones)."""
    from uigc_models.prior_model import PriorNet, stage_grid
    torch.manual_seed(0)
    prior = PriorNet(K=16, d=16, heads=2, layers=1, ffn=16, radius=3, levels=2).eval()
    idx = torch.randint(0, 16, (3, 8, 8))
    keep = torch.tensor([5, 6, 7])  # 7 stages in all: the last crop keeps every token
    out = train.regenerate(prior, idx, keep)
    st = stage_grid(8, 8, 2)
    for b in range(3):
        k = int(keep[b])
        assert torch.equal(out[b][st < k], idx[b][st < k])
        ref = idx[b:b + 1].clone()
        for s in range(k, 7):
            am = prior(ref).argmax(-1).view(1, 8, 8)
            ref = torch.where(st[None] == s, am, ref)
        assert torch.equal(out[b], ref[0])
    assert not torch.equal(out[0], idx[0])  # random tokens are not the prior's argmax
    assert torch.equal(out[2], idx[2])
