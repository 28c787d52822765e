#!/usr/bin/env python3
"""Export tiny, randomly initialised ONNX tokenizers that follow docs/bundle.md.

They exist only for the Rust tests (fast, small, deterministic); they are not
meant to compress anything well.

    python models/make_test_models.py            # writes tests/data/tiny-model{,-b,-k4,-dense}/
    python models/make_test_models.py --only tiny-model-k4

tiny-model and tiny-model-b: K=16, uniform-ish random unigram priors. tiny-model-k4: K=4 with a
codebook whose entry 0 lies at the centre of the encoder's outputs and a unigram prior that is
nearly certain of token 0, so it sends every token of a frame in a few bytes: under a small
budget the model-set rate control (most index bits per 16x16 pixels) must choose it over the
K=16 model, and under a large one the K=16 model (4 > 2 index bits per block). tiny-model-dense:
tiny-model's files (same seed) plus dense graphs, the same two graphs at 8x8 pixels per token.

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
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uigc_models.bundle import (MEAN, STD, from_network, sha256_file, to_network, write_golden,  # noqa: E402
                                write_manifest, write_prior_bin)

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; keeps older onnxruntime builds happy


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="uigc-make-test-models", producer_version="1")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def make_encoder(conv_w: np.ndarray, conv_b: np.ndarray, codebook: np.ndarray) -> onnx.ModelProto:
    k, c = codebook.shape
    f = conv_w.shape[-1]  # pixels per token side: 16, or 8 for dense graphs
    inits = [
        numpy_helper.from_array(conv_w.astype(np.float32), "enc.conv.weight"),
        numpy_helper.from_array(conv_b.astype(np.float32), "enc.conv.bias"),
        numpy_helper.from_array(np.ascontiguousarray(codebook.T).astype(np.float32), "codebook_t"),
        numpy_helper.from_array((codebook.astype(np.float32) ** 2).sum(1).astype(np.float32), "codebook_sqnorm"),
        numpy_helper.from_array(np.array(-2.0, dtype=np.float32), "minus_two"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "enc.conv.weight", "enc.conv.bias"], ["z"],
                         kernel_shape=[f, f], strides=[f, f]),
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
    f = deconv_w.shape[-1]
    inits = [
        numpy_helper.from_array(codebook.astype(np.float32), "codebook"),
        numpy_helper.from_array(deconv_w.astype(np.float32), "dec.deconv.weight"),
        numpy_helper.from_array(deconv_b.astype(np.float32), "dec.deconv.bias"),
    ]
    nodes = [
        helper.make_node("Gather", ["codebook", "indices"], ["q"], axis=0),
        helper.make_node("Transpose", ["q"], ["q_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["q_nchw", "dec.deconv.weight", "dec.deconv.bias"], ["y"],
                         kernel_shape=[f, f], strides=[f, f]),
        helper.make_node("Tanh", ["y"], ["image"]),
    ]
    g = helper.make_graph(
        nodes, "tiny_tokenizer_decoder",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "h", "w"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        inits)
    return _model(g)


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


def make_tiny_bundle(out_dir: str, seed: int, k: int = 16, c: int = 4, name: str = "tiny-model",
                     peaked: bool = False, dense: bool = False) -> None:
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 1.0 / np.sqrt(3 * 16 * 16), (c, 3, 16, 16)).astype(np.float32)
    conv_b = rng.normal(0, 0.05, (c,)).astype(np.float32)
    codebook = rng.normal(0, 0.6, (k, c)).astype(np.float32)
    deconv_w = rng.normal(0, 0.5, (c, 3, 16, 16)).astype(np.float32)
    deconv_b = rng.normal(0, 0.05, (3,)).astype(np.float32)
    if peaked:
        # Entry 0 at the encoder's bias (the output for a mid-grey patch), the others far away.
        codebook[0] = conv_b
        codebook[1:] *= 2.0
    onnx.save(make_encoder(conv_w, conv_b, codebook), os.path.join(out_dir, "tokenizer_encoder.onnx"))
    onnx.save(make_decoder(codebook, deconv_w, deconv_b), os.path.join(out_dir, "tokenizer_decoder.onnx"))
    prior_w = rng.integers(1, 1000, size=k)
    if peaked:
        prior_w = np.array([1_000_000] + [1] * (k - 1))
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
    if peaked:
        share = float((got == 0).mean())
        assert share > 0.9, f"token 0 is only {share:.2f} of the golden indices"
    if dense:
        # The same bundle plus dense graphs: 8x8-pixel patches over the same codebook (drawn after
        # everything above, so the other files are tiny-model's when the seed is).
        from uigc_models.bundle import set_optional_file
        w8 = rng.normal(0, 1.0 / np.sqrt(3 * 8 * 8), (c, 3, 8, 8)).astype(np.float32)
        d8 = rng.normal(0, 0.5, (c, 3, 8, 8)).astype(np.float32)
        onnx.save(make_encoder(w8, conv_b, codebook), os.path.join(out_dir, "tokenizer_encoder_dense.onnx"))
        onnx.save(make_decoder(codebook, d8, deconv_b), os.path.join(out_dir, "tokenizer_decoder_dense.onnx"))
        set_optional_file(out_dir, "tokenizer_encoder_dense", "tokenizer_encoder_dense.onnx")
        set_optional_file(out_dir, "tokenizer_decoder_dense", "tokenizer_decoder_dense.onnx")
        from uigc_models.dense import write_dense_golden
        write_dense_golden(out_dir, golden_image(seed, 40, 56))
    print(f"{out_dir}: K={k} unique tokens in golden={info['unique_indices']} "
          f"sizes={[os.path.getsize(os.path.join(out_dir, p)) for p in ('tokenizer_encoder.onnx', 'tokenizer_decoder.onnx', 'prior.bin')]}")


BUNDLES = {
    "tiny-model": dict(seed=1),
    "tiny-model-b": dict(seed=2),
    "tiny-model-k4": dict(seed=3, k=4, peaked=True),
    "tiny-model-dense": dict(seed=1, dense=True),   # tiny-model + dense graphs (8x8 pixels per token)
}


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-root", default=os.path.join(root, "tests", "data"))
    ap.add_argument("--only", choices=sorted(BUNDLES), help="write this bundle only")
    args = ap.parse_args(argv)
    for name, kw in BUNDLES.items():
        if args.only in (None, name):
            make_tiny_bundle(os.path.join(args.out_root, name), name=name, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
