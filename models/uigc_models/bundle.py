"""Bundle files shared by the exporters (docs/bundle.md): manifest.toml, prior.bin, golden vectors.

No torch import here: models/make_test_models.py uses it with numpy + onnx only.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_prior_bin(path: str, weights) -> None:
    w = np.asarray(weights, dtype=np.int64)
    assert w.ndim == 1 and (w >= 1).all() and (w < 2 ** 32).all()
    with open(path, "wb") as f:
        f.write(b"UGP1")
        f.write(np.array([len(w)], dtype="<u4").tobytes())
        f.write(w.astype("<u4").tobytes())


def _fmt_float_list(v) -> str:
    # TOML floats; always with a decimal point.
    return "[" + ", ".join(repr(float(x)) for x in v) + "]"


def write_manifest(bundle_dir: str, name: str, version: str, k: int, levels: int = 3,
                   mean=MEAN, std=STD, enc="tokenizer_encoder.onnx", dec="tokenizer_decoder.onnx",
                   prior="prior.bin", prior_kind="unigram", tile: str | None = None) -> str:
    """`tile`: the optional tile graph (tokenizer_decoder_tile.onnx, docs/bundle.md), not part of the model id."""
    text = (
        'format = "uigc-bundle"\n'
        "format_version = 1\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
        f"codebook_size = {k}\n"
        "downsample = 16\n"
        "\n[pixels]\n"
        f"mean = {_fmt_float_list(mean)}\n"
        f"std = {_fmt_float_list(std)}\n"
        "\n[schedule]\n"
        'kind = "interleave2x2"\n'
        f"levels = {levels}\n"
        "\n[tokenizer_encoder]\n"
        f'path = "{enc}"\n'
        f'sha256 = "{sha256_file(os.path.join(bundle_dir, enc))}"\n'
        "\n[tokenizer_decoder]\n"
        f'path = "{dec}"\n'
        f'sha256 = "{sha256_file(os.path.join(bundle_dir, dec))}"\n'
        + (("\n[tokenizer_decoder_tile]\n"
            f'path = "{tile}"\n'
            f'sha256 = "{sha256_file(os.path.join(bundle_dir, tile))}"\n') if tile else "")
        + "\n[prior]\n"
        f'kind = "{prior_kind}"\n'
        f'path = "{prior}"\n'
        f'sha256 = "{sha256_file(os.path.join(bundle_dir, prior))}"\n'
    )
    p = os.path.join(bundle_dir, "manifest.toml")
    with open(p, "w", newline="\n") as f:
        f.write(text)
    return p


GOLDEN_README = """# Golden vectors

Computed with onnxruntime (CPU) from the bundle in the parent directory.

* `input.png`: 8-bit RGB, {w}x{h} (W x H), both multiples of 16 (no padding needed).
* network input = (rgb / 255 - mean) / std with the manifest's [pixels] values, float32 NCHW.
* `indices.i64le`: raw little-endian int64, row-major, shape [1, {th}, {tw}] (= `indices.npy`).
* `decoded.f32le`: raw little-endian float32, the decoder output (normalised space),
  shape [1, 3, {h}, {w}].
* `decoded.png`: decoded image as 8-bit RGB: round(clamp((x * std + mean) * 255, 0, 255)).
* `golden.json`: the same facts in machine-readable form.

Float outputs may differ from another runtime by float rounding: compare with a tolerance
(e.g. 1e-4 in normalised space, or +-1 on the 8-bit PNG).
"""


def to_network(rgb_u8: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    x = rgb_u8.astype(np.float32) / 255.0
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def from_network(x: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    y = x[0].transpose(1, 2, 0) * np.array(std, np.float32) + np.array(mean, np.float32)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def write_golden(bundle_dir: str, rgb_u8: np.ndarray, mean=MEAN, std=STD, extra: dict | None = None,
                 files=("tokenizer_encoder.onnx", "tokenizer_decoder.onnx"), factor: int = 16,
                 subdir: str = "golden") -> dict:
    """Run the bundle's ONNX graphs (`files`: encoder, decoder at `factor` pixels per token) on rgb_u8
    (H, W, 3) and write `subdir`/ (golden/; golden_dense/ for the dense graphs)."""
    import onnxruntime as ort
    from PIL import Image

    h, w, _ = rgb_u8.shape
    px = factor
    assert h % px == 0 and w % px == 0
    gdir = os.path.join(bundle_dir, subdir)
    os.makedirs(gdir, exist_ok=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(os.path.join(bundle_dir, files[0]), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(bundle_dir, files[1]), so, providers=["CPUExecutionProvider"])
    x = to_network(rgb_u8, mean, std)
    idx = enc.run(["indices"], {"image": x})[0]
    assert idx.dtype == np.int64 and idx.shape == (1, h // px, w // px), (idx.dtype, idx.shape)
    y = dec.run(["image"], {"indices": idx})[0]
    assert y.dtype == np.float32 and y.shape == (1, 3, h, w), (y.dtype, y.shape)
    Image.fromarray(rgb_u8).save(os.path.join(gdir, "input.png"), optimize=False)
    idx.astype("<i8").tofile(os.path.join(gdir, "indices.i64le"))
    np.save(os.path.join(gdir, "indices.npy"), idx)
    y.astype("<f4").tofile(os.path.join(gdir, "decoded.f32le"))
    Image.fromarray(from_network(y, mean, std)).save(os.path.join(gdir, "decoded.png"))
    info = {
        "input": "input.png", "height": h, "width": w, "graphs": list(files), "pixels_per_token": px,
        "mean": list(mean), "std": list(std),
        "indices": "indices.i64le", "indices_shape": list(idx.shape), "indices_dtype": "int64 little-endian",
        "decoded": "decoded.f32le", "decoded_shape": list(y.shape), "decoded_dtype": "float32 little-endian",
        "decoded_png": "decoded.png",
        "indices_sha256": hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest(),
        "unique_indices": int(len(np.unique(idx))),
    }
    if extra:
        info.update(extra)
    with open(os.path.join(gdir, "golden.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    with open(os.path.join(gdir, "README.md"), "w") as f:
        f.write(GOLDEN_README.replace("multiples of 16", f"multiples of {px}").replace(
            "from the bundle in the parent directory", f"from {files[0]} / {files[1]} of the bundle in the parent "
            "directory").format(w=w, h=h, th=h // px, tw=w // px))
    return info


def read_prior_bin(path: str) -> np.ndarray:
    b = open(path, "rb").read()
    if b[:4] != b"UGP1":
        raise ValueError(f"{path}: bad magic {b[:4]!r}")
    k = int(np.frombuffer(b[4:8], "<u4")[0])
    w = np.frombuffer(b[8:], "<u4")
    if len(w) != k:
        raise ValueError(f"{path}: K={k} but {len(w)} weights")
    return w.astype(np.int64)


def read_manifest(bundle_dir: str) -> dict:
    try:
        import tomllib
    except ImportError:  # python < 3.11
        import tomli as tomllib
    with open(os.path.join(bundle_dir, "manifest.toml"), "rb") as f:
        return tomllib.load(f)


OPTIONAL_FILES = ("tokenizer_decoder_tile", "tokenizer_encoder_fast", "tokenizer_decoder_fast",
                  "tokenizer_decoder_tile_fast", "tokenizer_encoder_dense", "tokenizer_decoder_dense",
                  "tokenizer_decoder_smooth", "tokenizer_decoder_tile_smooth")
# Optional files that are part of the model id when present (docs/bundle.md "Dense graphs").
ID_OPTIONAL_FILES = ("tokenizer_encoder_dense", "tokenizer_decoder_dense")


def set_optional_file(bundle_dir: str, section: str, file: str, version: str | None = None) -> None:
    """Write (or replace) the manifest table of an optional file (one of OPTIONAL_FILES: hashed; not part
    of the model id, except ID_OPTIONAL_FILES) before [prior]; `version` replaces the bundle's version string."""
    import re
    if section not in OPTIONAL_FILES:
        raise ValueError(f"{section!r} is not an optional bundle file {OPTIONAL_FILES}")
    mp = os.path.join(bundle_dir, "manifest.toml")
    text = open(mp).read()
    text = re.sub(rf"\[{section}\]\n(?:[^\[\n][^\n]*\n)*\n?", "", text)
    table = f'[{section}]\npath = "{file}"\nsha256 = "{sha256_file(os.path.join(bundle_dir, file))}"\n\n'
    text = text.replace("[prior]", table + "[prior]", 1)
    if version:
        text = re.sub(r'^version = ".*"$', f'version = "{version}"', text, count=1, flags=re.M)
    with open(mp, "w", newline="\n") as f:
        f.write(text)


def verify_bundle_hashes(bundle_dir: str) -> dict:
    m = read_manifest(bundle_dir)
    for sec in ("tokenizer_encoder", "tokenizer_decoder", "prior", "prior_dense") + OPTIONAL_FILES:
        if sec not in m:  # OPTIONAL_FILES, prior_dense
            continue
        p = os.path.join(bundle_dir, m[sec]["path"])
        h = sha256_file(p)
        if h != m[sec]["sha256"]:
            raise ValueError(f"{p}: sha256 {h} != manifest {m[sec]['sha256']}")
    return m


def save_json_compat(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        f.write("\n")
