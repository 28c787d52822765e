#!/usr/bin/env python3
"""Export tiny, randomly initialised ONNX tokenizers that follow docs/bundle.md.

They exist only for the Rust tests (fast, small, deterministic); they are not
meant to compress anything well.

    python models/make_test_models.py            # writes tests/data/tiny-model{,-b}/

Encoder graph (opset 17):
    image f32[1,3,H,W] --Conv(3->C, k=16, s=16)--> z[1,C,h,w]
    --Transpose--> [1,h,w,C] --MatMul(codebook^T)--> dot[1,h,w,K]
    dist = |c|^2 - 2*dot   (|z|^2 is constant per position)
    --ArgMin(axis=3, keepdims=0)--> indices i64[1,h,w]
Decoder graph:
    indices i64[1,h,w] --Gather(codebook)--> [1,h,w,C] --Transpose--> [1,C,h,w]
    --ConvTranspose(C->3, k=16, s=16)--> --Tanh--> image f32[1,3,16h,16w]

Each bundle also gets golden/ (input PNG, indices, decoded image) computed with
onnxruntime, see golden/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; keeps older onnxruntime builds happy
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="uigc-make-test-models", producer_version="1")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def make_encoder(conv_w: np.ndarray, conv_b: np.ndarray, codebook: np.ndarray) -> onnx.ModelProto:
    k, c = codebook.shape
    inits = [
        numpy_helper.from_array(conv_w.astype(np.float32), "enc.conv.weight"),
        numpy_helper.from_array(conv_b.astype(np.float32), "enc.conv.bias"),
        numpy_helper.from_array(np.ascontiguousarray(codebook.T).astype(np.float32), "codebook_t"),
        numpy_helper.from_array((codebook.astype(np.float32) ** 2).sum(1).astype(np.float32), "codebook_sqnorm"),
        numpy_helper.from_array(np.array(-2.0, dtype=np.float32), "minus_two"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "enc.conv.weight", "enc.conv.bias"], ["z"],
                         kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Transpose", ["z"], ["z_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["z_nhwc", "codebook_t"], ["dot"]),
        helper.make_node("Mul", ["dot", "minus_two"], ["dot2"]),
        helper.make_node("Add", ["dot2", "codebook_sqnorm"], ["dist"]),
        helper.make_node("ArgMin", ["dist"], ["indices"], axis=3, keepdims=0),
    ]
    g = helper.make_graph(
        nodes, "tiny_tokenizer_encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "h", "w"])],
        inits)
    return _model(g)


def make_decoder(codebook: np.ndarray, deconv_w: np.ndarray, deconv_b: np.ndarray) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(codebook.astype(np.float32), "codebook"),
        numpy_helper.from_array(deconv_w.astype(np.float32), "dec.deconv.weight"),
        numpy_helper.from_array(deconv_b.astype(np.float32), "dec.deconv.bias"),
    ]
    nodes = [
        helper.make_node("Gather", ["codebook", "indices"], ["q"], axis=0),
        helper.make_node("Transpose", ["q"], ["q_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["q_nchw", "dec.deconv.weight", "dec.deconv.bias"], ["y"],
                         kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Tanh", ["y"], ["image"]),
    ]
    g = helper.make_graph(
        nodes, "tiny_tokenizer_decoder",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "h", "w"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        inits)
    return _model(g)


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
                   prior="prior.bin", prior_kind="unigram") -> str:
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
        "\n[prior]\n"
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


def write_golden(bundle_dir: str, rgb_u8: np.ndarray, mean=MEAN, std=STD, extra: dict | None = None) -> dict:
    """Run the bundle's ONNX graphs on rgb_u8 (H, W, 3) and write golden/."""
    import onnxruntime as ort
    from PIL import Image

    h, w, _ = rgb_u8.shape
    assert h % 16 == 0 and w % 16 == 0
    gdir = os.path.join(bundle_dir, "golden")
    os.makedirs(gdir, exist_ok=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(os.path.join(bundle_dir, "tokenizer_encoder.onnx"), so,
                               providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(bundle_dir, "tokenizer_decoder.onnx"), so,
                               providers=["CPUExecutionProvider"])
    x = to_network(rgb_u8, mean, std)
    idx = enc.run(["indices"], {"image": x})[0]
    assert idx.dtype == np.int64 and idx.shape == (1, h // 16, w // 16), (idx.dtype, idx.shape)
    y = dec.run(["image"], {"indices": idx})[0]
    assert y.dtype == np.float32 and y.shape == (1, 3, h, w), (y.dtype, y.shape)
    Image.fromarray(rgb_u8).save(os.path.join(gdir, "input.png"), optimize=False)
    idx.astype("<i8").tofile(os.path.join(gdir, "indices.i64le"))
    np.save(os.path.join(gdir, "indices.npy"), idx)
    y.astype("<f4").tofile(os.path.join(gdir, "decoded.f32le"))
    Image.fromarray(from_network(y, mean, std)).save(os.path.join(gdir, "decoded.png"))
    info = {
        "input": "input.png", "height": h, "width": w,
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
        f.write(GOLDEN_README.format(w=w, h=h, th=h // 16, tw=w // 16))
    return info


def golden_image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A small smooth synthetic RGB image (gradients + blobs), deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for ch in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        img[..., ch] = 128 + 60 * np.sin(a * xx / 7 + b * yy / 5 + c * 3) + 40 * np.cos((xx - w / 2) * (yy - h / 2) / 90 + ch)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_tiny_bundle(out_dir: str, seed: int, k: int = 16, c: int = 4, name: str = "tiny-model") -> None:
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 1.0 / np.sqrt(3 * 16 * 16), (c, 3, 16, 16)).astype(np.float32)
    conv_b = rng.normal(0, 0.05, (c,)).astype(np.float32)
    codebook = rng.normal(0, 0.6, (k, c)).astype(np.float32)
    deconv_w = rng.normal(0, 0.5, (c, 3, 16, 16)).astype(np.float32)
    deconv_b = rng.normal(0, 0.05, (3,)).astype(np.float32)
    onnx.save(make_encoder(conv_w, conv_b, codebook), os.path.join(out_dir, "tokenizer_encoder.onnx"))
    onnx.save(make_decoder(codebook, deconv_w, deconv_b), os.path.join(out_dir, "tokenizer_decoder.onnx"))
    prior_w = rng.integers(1, 1000, size=k)
    write_prior_bin(os.path.join(out_dir, "prior.bin"), prior_w)
    write_manifest(out_dir, name=name, version="0.0.1", k=k)
    with open(os.path.join(out_dir, "MODEL_CARD.md"), "w") as f:
        f.write(f"# {name}\n\nA tiny randomly initialised tokenizer (seed {seed}, K={k}, C={c}) generated by\n"
                "`models/make_test_models.py` for the Rust tests. It does not compress anything well.\n"
                "Regenerate with `python models/make_test_models.py` (deterministic).\n")
    info = write_golden(out_dir, golden_image(seed), extra={"seed": seed})
    # Self-check against a numpy reference of the same maths.
    x = to_network(np.array(__import__("PIL.Image", fromlist=["Image"]).open(os.path.join(out_dir, "golden", "input.png"))))
    h, w = x.shape[2] // 16, x.shape[3] // 16
    patches = x[0].reshape(3, h, 16, w, 16).transpose(1, 3, 0, 2, 4).reshape(h, w, -1)
    z = patches @ conv_w.reshape(c, -1).T + conv_b
    d = ((z[:, :, None, :] - codebook[None, None]) ** 2).sum(-1)
    ref = d.argmin(-1)
    got = np.load(os.path.join(out_dir, "golden", "indices.npy"))[0]
    assert (ref == got).all(), "onnx encoder disagrees with numpy reference"
    print(f"{out_dir}: K={k} unique tokens in golden={info['unique_indices']} "
          f"sizes={[os.path.getsize(os.path.join(out_dir, p)) for p in ('tokenizer_encoder.onnx', 'tokenizer_decoder.onnx', 'prior.bin')]}")


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-root", default=os.path.join(root, "tests", "data"))
    args = ap.parse_args(argv)
    make_tiny_bundle(os.path.join(args.out_root, "tiny-model"), seed=1, name="tiny-model")
    make_tiny_bundle(os.path.join(args.out_root, "tiny-model-b"), seed=2, name="tiny-model-b")
    return 0


if __name__ == "__main__":
    sys.exit(main())
