"""Fast decoder: the bundle's decoder (and tile graph) re-expressed and quantised for CPUs.

Two steps, no training (docs/bundle.md "Fast decoder"):

1. **Sub-pixel re-expression (exact).** A nearest 2x upsampling followed by a 3x3 convolution is
   four 2x2 convolutions of the low-resolution input, one per output phase (row parity a, column
   parity b), whose taps are sums of the 3x3 taps: rows (i-1, i) get (w0, w1+w2) for a = 0 and rows
   (i, i+1) get (w0+w1, w2) for a = 1, columns alike. The phases are interleaved by stacking and
   reshaping. 16 instead of 36 multiply-adds per input pixel and channel pair for every upsampling
   block; the same function to float precision (max |diff| ~1e-6 in the normalised space).
2. **Static int8 quantisation** of the convolutions (onnxruntime QDQ, per-channel int8 weights,
   uint8 activations calibrated on tokens of training photos; never Kodak), except the last one
   (3 output channels: the int8 kernels are slower than the float ones there). This changes pixels
   slightly; what it costs is measured at install and in the model card.

Only the pixels change: tokens, prior and packets do not, so the files are hashed like the others
but are not part of the model id. A receiver on the CPU uses them by default (`uigc --decoder`,
`uigcdec decoder`).

    python -m uigc_models.fast_decoder install BUNDLE_DIR [VERSION]
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .bundle import set_optional_file
from .model import Up

FAST_FILE = "tokenizer_decoder_fast.onnx"
TILE_FAST_FILE = "tokenizer_decoder_tile_fast.onnx"
CALIB_IMAGES = 16
CALIB_SIZE = (512, 384)


def _phase_taps(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 taps along `axis` -> the 2 taps of output phase 0 (inputs i-1, i) and of phase 1 (i, i+1)."""
    w0, w1, w2 = w.unbind(axis)
    return torch.stack([w0, w1 + w2], axis), torch.stack([w0 + w1, w2], axis)


class UpSubpixel(nn.Module):
    """`Up` in nearest mode, computed at the input's resolution: out[2i+a, 2j+b] = conv_ab(x)[i, j]."""

    # (left, right, top, bottom) padding of phase (a, b), in the order a*2 + b
    PADS = ((1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1), (0, 1, 0, 1))

    def __init__(self, up: Up):
        super().__init__()
        if up.mode != "nearest":
            raise ValueError(f"the sub-pixel form needs nearest upsampling, not {up.mode!r}")
        w, b = up.conv.weight.detach(), up.conv.bias.detach()
        self.convs = nn.ModuleList()
        for rows in _phase_taps(w, 2):
            for taps in _phase_taps(rows, 3):
                conv = nn.Conv2d(w.shape[1], w.shape[0], 2, 1, 0)
                conv.weight.data = taps.contiguous()
                conv.bias.data = b.clone()
                self.convs.append(conv)

    def forward(self, x):
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        p = [conv(F.pad(x, pad)) for conv, pad in zip(self.convs, self.PADS)]
        c = p[0].shape[1]
        r0 = torch.stack([p[0], p[1]], -1).reshape(n, c, h, 2 * w)
        r1 = torch.stack([p[2], p[3]], -1).reshape(n, c, h, 2 * w)
        return torch.stack([r0, r1], -2).reshape(n, c, 2 * h, 2 * w)


def subpixel(module: nn.Module) -> int:
    """Replace every nearest-mode `Up` under `module` by its `UpSubpixel` (in place); returns how many."""
    n = 0
    for name, child in module.named_children():
        if isinstance(child, Up) and child.mode == "nearest":
            setattr(module, name, UpSubpixel(child))
            n += 1
        else:
            n += subpixel(child)
    return n


def calibration_tokens(encoder_onnx: str, n: int = CALIB_IMAGES, size=CALIB_SIZE) -> list[np.ndarray]:
    """Token grids of `n` training photos (evenly spread over the list) resized to `size`."""
    import onnxruntime as ort
    from PIL import Image

    from .data import list_train_images
    files = list_train_images()
    if not files:
        raise FileNotFoundError("no training photos for calibration (../shared/data/train)")
    enc = ort.InferenceSession(encoder_onnx, providers=["CPUExecutionProvider"])
    out = []
    for f in files[:: max(1, len(files) // n)][:n]:
        im = Image.open(f).convert("RGB").resize(size, Image.BICUBIC)
        x = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
        out.append(enc.run(None, {"image": np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0])
    return out


def narrow_convs(path: str, below: int = 8) -> list[str]:
    """Convolutions with fewer than `below` output channels (the RGB output): onnxruntime's int8 kernels
    work on channels-last data and are slower than the float ones there, so they stay float."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t).shape for t in m.graph.initializer}
    return [n.name for n in m.graph.node if n.op_type == "Conv" and weights.get(n.input[1], (below,))[0] < below]


def quantise(src: str, dst: str, feeds: list[dict]) -> str:
    """Static int8 QDQ quantisation of the convolutions of `src`, calibrated on `feeds`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre = dst + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    try:
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                        nodes_to_exclude=narrow_convs(pre))
    finally:
        os.remove(pre)
    return dst


def build(bundle_dir: str, log=print) -> dict:
    """Write FAST_FILE (and TILE_FAST_FILE when the bundle has a tile graph) into `bundle_dir`; returns
    what they cost against the bundle's own graphs on the calibration tokens."""
    from .bundle import read_manifest
    from .export import OnnxDecoder, export_decoder_graph, finalize_onnx
    from .onnx_import import import_bundle
    from .tiled import TileDecoder, export_tile_graph

    m = read_manifest(bundle_dir)
    tok, _ = import_bundle(bundle_dir)
    tok = copy.deepcopy(tok).eval()
    n_up = subpixel(tok.decoder)
    log(f"{n_up} upsampling blocks in sub-pixel form")
    calib = calibration_tokens(os.path.join(bundle_dir, m["tokenizer_encoder"]["path"]))
    report: dict = {"subpixel_blocks": n_up, "calibration": f"{len(calib)} training photos at {CALIB_SIZE}"}
    with tempfile.TemporaryDirectory() as tmp:
        dec_f32 = export_decoder_graph(OnnxDecoder(tok), os.path.join(tmp, "dec.onnx"))
        out = quantise(dec_f32, os.path.join(bundle_dir, FAST_FILE), [{"indices": t} for t in calib])
        finalize_onnx(out)
        report["decoder"] = compare(os.path.join(bundle_dir, m["tokenizer_decoder"]["path"]), out, calib)
        log(f"{FAST_FILE}: {report['decoder']}")
        if "tokenizer_decoder_tile" in m:
            tile_f32 = export_tile_graph(tok, tmp)
            feeds = [{"indices": t, "stats_in": np.zeros(TileDecoder(tok).stats_len, np.float32),
                      "stats_weight": np.zeros(1, np.float32)} for t in calib]
            tout = quantise(tile_f32, os.path.join(bundle_dir, TILE_FAST_FILE), feeds)
            finalize_onnx(tout)
            report["tile"] = compare(os.path.join(bundle_dir, m["tokenizer_decoder"]["path"]), tout, calib, feeds)
            log(f"{TILE_FAST_FILE}: {report['tile']}")
    return report


def psnr_levels(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR between two decoder outputs (normalised space) once rounded to 8-bit levels."""
    to8 = lambda y: ((np.clip(y, -1, 1) + 1) * 127.5).round()
    mse = float(np.mean((to8(a) - to8(b)) ** 2))
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def compare(ref_path: str, path: str, calib: list[np.ndarray], feeds: list[dict] | None = None) -> dict:
    """PSNR (8-bit pixels) of `path`'s pictures against the reference decoder's, mean and worst."""
    import onnxruntime as ort
    ref = ort.InferenceSession(ref_path, providers=["CPUExecutionProvider"])
    fast = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ps = [psnr_levels(ref.run(["image"], {"indices": t})[0],
                      fast.run(["image"], feeds[i] if feeds else {"indices": t})[0]) for i, t in enumerate(calib)]
    return {"psnr_vs_decoder_mean": round(float(np.mean(ps)), 2), "psnr_vs_decoder_min": round(float(np.min(ps)), 2)}


def install(bundle_dir: str, version: str | None = None, log=print) -> dict:
    """build() and write the manifest's [tokenizer_decoder_fast] (and [tokenizer_decoder_tile_fast]) tables."""
    from .bundle import read_manifest
    report = build(bundle_dir, log)
    set_optional_file(bundle_dir, "tokenizer_decoder_fast", FAST_FILE, version)
    if "tokenizer_decoder_tile" in read_manifest(bundle_dir):
        set_optional_file(bundle_dir, "tokenizer_decoder_tile_fast", TILE_FAST_FILE)
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3) or argv[0] != "install":
        print("usage: python -m uigc_models.fast_decoder install BUNDLE_DIR [VERSION]", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "2"))))
    import json
    print(json.dumps(install(argv[1], argv[2] if len(argv) == 3 else None), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
