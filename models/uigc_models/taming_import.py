"""Import the paper's tokenizer: a taming-transformers VQGAN (f=16, ImageNet) as a uigc bundle.

    python -m uigc_models.taming_import --ckpt last.ckpt --k 256 --out ../models/vqgan-f16-k256
    python -m uigc_models.taming_import --random-init --n-e 1024 --k 64 --out /tmp/vqgan-random   # tests

--ckpt is taming's `vqgan_imagenet_f16_16384` (or `_1024`) `last.ckpt` (a PyTorch Lightning checkpoint;
only "state_dict" is read, the loss.* discriminator/LPIPS weights are ignored, and pytorch_lightning
need not be installed). The network is rebuilt here with taming's parameter names and shapes (config:
ch 128, ch_mult 1,1,2,2,4, 2 res blocks, attention at 16x16, z_channels = embed_dim = 256, inputs in
[-1, 1] = the bundle's pixel normalisation). The codebook of n_e codes is reduced to --k codes by
Euclidean k-means (taming's quantiser is a plain nearest neighbour, no l2-normalisation), each code
weighted by how often the encoder picks it on --usage-images training photos (uniform without them).
The encoder graph then returns the nearest *reduced* codeword, the decoder looks it up, and the
unigram prior is the reduced-code frequency on the same photos (+1). Written: the bundle of
docs/bundle.md (+ golden/, export_report.json, taming_import.log). docs/taming_import.md has more.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .bundle import save_json_compat, sha256_file, to_network, write_golden, write_manifest
from .common import DATA_ROOT, set_threads, setup_logging, write_config
from .data import list_train_images, load_rgb
from .export import GOLDEN_SOURCE, bundle_files_report, export_graphs, golden_input, ort_sessions, pad16, \
    verify, write_unigram_prior

# taming-transformers configs/model.yaml of vqgan_imagenet_f16_{1024,16384} (ddconfig + embed_dim)
TAMING_F16 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), z_channels=256,
                  embed_dim=256, resolution=256, in_channels=3, out_ch=3)
MIN_INDICES_EQUAL = 0.995  # per check: torch and onnxruntime pick the same code
MAX_DECODER_DIFF = 1e-2    # normalised space ([-1, 1]): 1.3 levels of 8 bits
MODULE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.embedding.")


# ---------------------------------------------------------------------------------------------------------------
# The network, with taming's state-dict names and shapes


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (1x1 convs for q, k, v and the output)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))
        self.scale = c ** -0.5

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h).flatten(2), self.k(h).flatten(2), self.v(h).flatten(2)   # [B, C, N]
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=2)  # [B, N query, N key]
        out = torch.bmm(v, attn.transpose(1, 2))                                    # [B, C, N query]
        return x + self.proj_out(out.reshape_as(x))


class Downsample(nn.Module):
    """3x3 stride-2 conv after zero padding one row/column at the bottom/right only."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(c: int) -> nn.Module:
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
    return m


def _run_mid(m: nn.Module, h):
    return m.block_2(m.attn_1(m.block_1(h)))


class Encoder(nn.Module):
    """image [-1, 1] -> z [B, z_channels, H/16, W/16] (5 levels, 4 downsamplings)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, resolution, in_channels=3,
                 **_):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        res, cin = resolution, ch
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * mult))
                cin = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i < len(ch_mult) - 1:
                level.downsample = Downsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = _mid(cin)
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z [B, z_channels, h, w] -> image [B, 3, 16h, 16w] in [-1, 1] (not clamped)."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, resolution, out_ch=3, **_):
        super().__init__()
        cin = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, cin, 3, 1, 1)
        self.mid = _mid(cin)
        levels = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i > 0:
                level.upsample = Upsample(cin)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[0] is the full-resolution level, as in taming
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, 1, 1)

    def forward(self, z):
        h = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGAN(nn.Module):
    """taming's VQModel for inference: encoder -> quant_conv -> nearest codeword -> post_quant_conv -> decoder."""

    def __init__(self, n_e: int, cfg: dict = TAMING_F16):
        super().__init__()
        self.encoder = Encoder(**cfg)
        self.decoder = Decoder(**cfg)
        self.quant_conv = nn.Conv2d(cfg["z_channels"], cfg["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(cfg["embed_dim"], cfg["z_channels"], 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(n_e, cfg["embed_dim"])

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantize.embedding.weight

    def encode_z(self, x):
        return self.quant_conv(self.encoder(x))

    def decode_q(self, q):
        return self.decoder(self.post_quant_conv(q))


def nearest_code(z: torch.Tensor, codebook_t: torch.Tensor, codebook_sqnorm: torch.Tensor) -> torch.Tensor:
    """z [B, D, h, w] -> indices [B, h, w] of the Euclidean-nearest codeword (|z|^2 is the same for all)."""
    d = codebook_sqnorm - 2.0 * torch.matmul(z.permute(0, 2, 3, 1), codebook_t)
    return torch.argmin(d, dim=3)


class EncoderGraph(nn.Module):
    """image [1,3,H,W] in [-1,1] -> indices int64 [1,H/16,W/16] into `codebook` (tokenizer_encoder.onnx)."""

    def __init__(self, vq: VQGAN, codebook: torch.Tensor):
        super().__init__()
        self.encoder, self.quant_conv = vq.encoder, vq.quant_conv
        self.register_buffer("codebook_t", codebook.detach().t().contiguous().clone())
        self.register_buffer("codebook_sqnorm", (codebook.detach() ** 2).sum(1).clone())

    def forward(self, image):
        return nearest_code(self.quant_conv(self.encoder(image)), self.codebook_t, self.codebook_sqnorm)


class DecoderGraph(nn.Module):
    """indices int64 [1,h,w] -> image [1,3,16h,16w] in [-1,1], not clamped (tokenizer_decoder.onnx)."""

    def __init__(self, vq: VQGAN, codebook: torch.Tensor):
        super().__init__()
        self.post_quant_conv, self.decoder = vq.post_quant_conv, vq.decoder
        self.register_buffer("codebook", codebook.detach().clone())

    def forward(self, indices):
        q = F.embedding(indices, self.codebook).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(q))


class BundleTokenizer(nn.Module):
    """The two graphs with the encode_indices / decode_indices interface export.verify expects."""

    def __init__(self, vq: VQGAN, codebook: torch.Tensor):
        super().__init__()
        self.enc, self.dec = EncoderGraph(vq, codebook).eval(), DecoderGraph(vq, codebook).eval()

    @torch.no_grad()
    def encode_indices(self, x):
        return self.enc(x)

    @torch.no_grad()
    def decode_indices(self, idx):
        return self.dec(idx)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


class _Placeholder(dict):
    """Inert stand-in for every object of a class outside _SAFE_GLOBALS (pytorch_lightning, omegaconf, ...)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        self.state = state


_SAFE_GLOBALS = {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("_codecs", "encode")} \
    | {("builtins", n) for n in ("set", "frozenset", "slice", "range", "complex", "bytearray")} \
    | {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")} \
    | {("numpy", "ndarray"), ("numpy", "dtype")}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only tensors, containers and numbers; anything else becomes a _Placeholder. So loading a
    checkpoint imports nothing (pytorch_lightning need not be installed) and cannot run code."""

    def find_class(self, module, name):
        if ((module, name) in _SAFE_GLOBALS
                or (module in ("torch._utils", "torch._tensor") and name.startswith("_rebuild"))
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))):
            return super().find_class(module, name)
        return _Placeholder


_safe_pickle = types.SimpleNamespace(__name__="uigc_safe_pickle", Unpickler=_SafeUnpickler,
                                     load=lambda f, **kw: _SafeUnpickler(f, **kw).load())


def load_taming_state_dict(path: str) -> tuple[dict, dict]:
    """The VQModel weights of a taming checkpoint (Lightning "state_dict", or a bare state dict).

    Returns (state_dict restricted to the inference modules, info: ignored key groups, global_step)."""
    ck = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_safe_pickle)
    sd = ck.get("state_dict", ck) if isinstance(ck, dict) else None
    if not isinstance(sd, dict) or not any(k.startswith("encoder.") for k in sd):
        raise ValueError(f"{path}: no taming VQModel state_dict (no encoder.* keys)")
    keep = {k: v for k, v in sd.items() if k.startswith(MODULE_PREFIXES)}
    ignored = sorted({k.split(".")[0] for k in sd if k not in keep})
    info = {"ignored_key_groups": ignored, "global_step": ck.get("global_step"), "epoch": ck.get("epoch")}
    return keep, info


def build_vqgan(sd: dict) -> VQGAN:
    """A VQGAN holding `sd`; refuses (naming the keys) a checkpoint of another architecture."""
    if "quantize.embedding.weight" not in sd:
        raise ValueError("checkpoint has no quantize.embedding.weight")
    vq = VQGAN(int(sd["quantize.embedding.weight"].shape[0]))
    ref = vq.state_dict()
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    wrong = sorted(k for k in set(ref) & set(sd) if tuple(ref[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        def show(what, keys):
            return f"; {what}: " + ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(ref[k].shape)}" for k in wrong]
        raise ValueError(f"not a taming VQGAN f16 checkpoint with config {TAMING_F16}"
                         + (show("missing", missing) if missing else "")
                         + (show("unexpected", unexpected) if unexpected else "")
                         + (show("wrong shape", shapes) if shapes else ""))
    vq.load_state_dict({k: v.float() for k, v in sd.items()})
    return vq.eval()


def random_state_dict(n_e: int = 16384, seed: int = 0) -> dict:
    """A randomly initialised state dict with taming's names and shapes (for tests)."""
    torch.manual_seed(seed)
    vq = VQGAN(n_e)
    # codewords about as long as the random encoder's outputs, so that an image uses many codes
    nn.init.normal_(vq.quantize.embedding.weight, std=0.1)
    return vq.state_dict()


# ---------------------------------------------------------------------------------------------------------------
# Codebook reduction


@torch.no_grad()
def euclidean_kmeans(x: torch.Tensor, k: int, weights: torch.Tensor | None = None, iters: int = 50,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means (k-means++ seeding, Lloyd steps). x [N, D] -> (centres [k, D], assignment [N])."""
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    n = x.shape[0]
    if k > n:
        raise ValueError(f"cannot make {k} codes from {n}")
    w = torch.ones(n) if weights is None else weights.float().clamp_min(0)
    if w.sum() <= 0:
        w = torch.ones(n)
    sq = (x * x).sum(1)

    def dist2(c):  # [N, k]
        return (sq[:, None] - 2.0 * x @ c.t() + (c * c).sum(1)[None]).clamp_min(0)

    first = int(torch.multinomial(w, 1, generator=g))
    chosen = [first]
    mind = dist2(x[first:first + 1])[:, 0]
    for _ in range(1, k):
        p = mind * w
        if p.sum() <= 0:  # every weighted point is a centre already: continue among the unweighted ones
            p = mind.clone()
        j = int(torch.multinomial(p, 1, generator=g))
        chosen.append(j)
        mind = torch.minimum(mind, dist2(x[j:j + 1])[:, 0])
    c = x[chosen].clone()
    for _ in range(iters):
        a = dist2(c).argmin(1)
        mass = torch.zeros(k).index_add_(0, a, w)
        s = torch.zeros_like(c).index_add_(0, a, x * w[:, None])
        upd = mass > 0
        c_new = c.clone()
        c_new[upd] = s[upd] / mass[upd, None]
        if torch.equal(c_new, c):
            break
        c = c_new
    return c, dist2(c).argmin(1)


def train_photos(data_root: str, log) -> list[str]:
    try:
        return list_train_images(data_root)
    except FileNotFoundError as e:
        log.warning(f"no training photos ({e}): uniform code weights, uniform prior, no photos in the check")
        return []


def spread(files: list[str], n: int) -> list[str]:
    """n files evenly spaced over the list (so every training subset contributes)."""
    n = min(max(n, 0), len(files))
    return [files[i * len(files) // n] for i in range(n)]


def center_crop16(a: np.ndarray, side: int) -> np.ndarray:
    """Centre crop to at most side x side (side a multiple of 16, 0 = whole image), then edge-pad to x16."""
    if side > 0:
        h, w = a.shape[:2]
        ch, cw = min(h, side), min(w, side)
        y, x = (h - ch) // 2, (w - cw) // 2
        a = a[y:y + ch, x:x + cw]
    return pad16(a)


@torch.no_grad()
def encoder_latents(vq: VQGAN, files: list[str], side: int, log) -> torch.Tensor:
    """quant_conv outputs on the photos, [M, embed_dim] (one row per token)."""
    zs = []
    t0 = time.time()
    for i, p in enumerate(files):
        x = torch.from_numpy(to_network(center_crop16(load_rgb(p), side)))
        z = vq.encode_z(x)
        zs.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        if (i + 1) % 8 == 0 or i + 1 == len(files):
            log.info(f"usage: {i + 1}/{len(files)} photos encoded ({time.time() - t0:.0f}s)")
    return torch.cat(zs) if zs else torch.zeros(0, vq.codebook.shape[1])


def assign(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Nearest codeword of each row of z [M, D] (chunked: n_e = 16384 codes)."""
    cb_t, sqn = codebook.t().contiguous(), (codebook ** 2).sum(1)
    out = [(sqn - 2.0 * z[i:i + chunk] @ cb_t).argmin(1) for i in range(0, z.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def reduce_codebook(vq: VQGAN, z: torch.Tensor, k: int, iters: int, seed: int, log) -> tuple[torch.Tensor, dict]:
    """k codes from the n_e of `vq`, weighted by usage on z (uniform when z is empty)."""
    cb = vq.codebook.detach().float()
    n_e = cb.shape[0]
    used = torch.bincount(assign(z, cb), minlength=n_e).float()
    info = {"n_e": n_e, "k": k, "usage_tokens": int(z.shape[0]), "original_codes_used": int((used > 0).sum())}
    if z.shape[0]:
        # a tiny floor keeps never-seen codes as a fallback when fewer than k codes were seen
        weights = used + 1e-3
        log.info(f"usage: {z.shape[0]} tokens use {info['original_codes_used']} of {n_e} codes")
    else:
        weights = torch.ones(n_e)
    t0 = time.time()
    if k == n_e:
        reduced = cb.clone()
    else:
        reduced, _ = euclidean_kmeans(cb, k, weights, iters=iters, seed=seed)
    if z.shape[0]:
        zq_orig = ((z - cb[assign(z, cb)]) ** 2).sum(1).mean()
        zq_red = ((z - reduced[assign(z, reduced)]) ** 2).sum(1).mean()
        info.update(quant_err_original=float(zq_orig), quant_err_reduced=float(zq_red),
                    latent_sq_norm=float((z ** 2).sum(1).mean()))
        log.info(f"k-means {n_e} -> {k} codes ({time.time() - t0:.1f}s): mean |z - c|^2 on the usage tokens "
                 f"{zq_orig:.3g} (n_e codes) -> {zq_red:.3g} (k codes); mean |z|^2 {info['latent_sq_norm']:.3g}")
    else:
        log.info(f"k-means {n_e} -> {k} codes, uniform weights ({time.time() - t0:.1f}s)")
    return reduced, info


def agrees(v: dict, log) -> bool:
    """Verdict on export.verify's report. A token may flip between torch and onnxruntime where two codewords
    are equally near within float rounding (harmless: the bundle's graph defines the tokens); a wrong graph
    changes many tokens or the decoder's output."""
    worst = min(c["indices_equal_frac"] for c in v["checks"])
    ok = v["all_shapes_ok"] and worst >= MIN_INDICES_EQUAL and v["max_decoder_diff"] < MAX_DECODER_DIFF
    if not ok:
        log.error(f"onnxruntime disagrees with torch (worst indices identical {worst * 100:.2f}%, decoder max|diff| "
                  f"{v['max_decoder_diff']:.2e}; see export_report.json)")
    elif worst < 1.0:
        log.warning(f"{(1 - worst) * 100:.2f}% of the tokens of one check flipped between torch and onnxruntime "
                    "(near-ties), within the tolerance")
    return ok


# ---------------------------------------------------------------------------------------------------------------


def parse_hw(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="taming last.ckpt (vqgan_imagenet_f16_16384 or _1024)")
    src.add_argument("--random-init", action="store_true",
                     help="random weights with taming's names and shapes instead of a checkpoint (tests)")
    ap.add_argument("--n-e", type=int, default=16384, help="codebook size of --random-init")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=256, help="codebook size of the bundle (k-means of the n_e codes)")
    ap.add_argument("--out", required=True, help="bundle directory to write")
    ap.add_argument("--name", default=None, help="bundle name (default: basename of --out)")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--levels", type=int, default=3, help="stage schedule depth (manifest [schedule].levels)")
    ap.add_argument("--data-root", default=DATA_ROOT, help="holds train/{bsds500,sun-hays80,urban100}")
    ap.add_argument("--usage-images", type=int, default=48,
                    help="training photos that weight the k-means and make the prior (0: uniform)")
    ap.add_argument("--usage-side", type=int, default=256,
                    help="centre crop of each usage photo, pixels (multiple of 16; 0: whole photo)")
    ap.add_argument("--kmeans-iters", type=int, default=50)
    ap.add_argument("--verify-images", type=int, default=3, help="training photos in the torch/onnxruntime check")
    ap.add_argument("--verify-sizes", type=parse_hw, nargs="*", default=[(32, 48), (512, 768)],
                    help="random images (HxW) in the torch/onnxruntime check")
    ap.add_argument("--no-golden", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.usage_side % 16:
        raise SystemExit("--usage-side must be a multiple of 16")
    set_threads(args.threads)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    name = args.name or os.path.basename(out.rstrip("/"))
    log = setup_logging(out, "taming_import.log")
    write_config(out, args, "import_config.json", keep_previous=False)
    t0 = time.time()
    rep: dict = {"source": "random-init" if args.random_init else os.path.abspath(args.ckpt), "config": TAMING_F16}
    if args.random_init:
        sd = random_state_dict(args.n_e, args.seed)
    else:
        sd, info = load_taming_state_dict(args.ckpt)
        rep.update(info, ckpt_sha256=sha256_file(args.ckpt))
        log.info(f"{args.ckpt}: step {info['global_step']}, ignored key groups {info['ignored_key_groups']}")
    vq = build_vqgan(sd)
    del sd
    n_e = vq.codebook.shape[0]
    if not 2 <= args.k <= n_e:
        log.error(f"--k {args.k} must be in 2..{n_e} (the checkpoint's codebook size)")
        return 2
    rep["params_encoder"] = sum(p.numel() for m in (vq.encoder, vq.quant_conv) for p in m.parameters())
    rep["params_decoder"] = sum(p.numel() for m in (vq.decoder, vq.post_quant_conv) for p in m.parameters())
    log.info(f"VQGAN f16: n_e={n_e}, encoder {rep['params_encoder'] / 1e6:.1f}M, decoder "
             f"{rep['params_decoder'] / 1e6:.1f}M parameters -> K={args.k}, {out}")

    photos = train_photos(args.data_root, log)
    files = spread(photos, args.usage_images)
    z = encoder_latents(vq, files, args.usage_side, log)
    reduced, rep["codebook"] = reduce_codebook(vq, z, args.k, args.kmeans_iters, args.seed, log)
    counts = torch.bincount(assign(z, reduced), minlength=args.k).numpy()
    rep["usage_images"] = [os.path.relpath(p, args.data_root) for p in files]

    tok = BundleTokenizer(vq, reduced)
    export_graphs(tok.enc, tok.dec, out)
    rep.update(write_unigram_prior(out, counts))
    write_manifest(out, name=name, version=args.version, k=args.k, levels=args.levels)
    enc_sess, dec_sess = ort_sessions(out, args.threads)
    rep["verify"] = verify(tok, enc_sess, dec_sess, args.data_root, log,
                           n_images=min(args.verify_images, len(photos)), sizes=args.verify_sizes)
    ok = agrees(rep["verify"], log)
    if not args.no_golden:
        rep["golden"] = write_golden(out, golden_input(), extra={"source": GOLDEN_SOURCE})
    rep["files"] = bundle_files_report(out)
    rep["import_seconds"] = time.time() - t0
    save_json_compat(os.path.join(out, "export_report.json"), rep)
    total = sum(v["bytes"] for v in rep["files"].values())
    log.info(f"bundle {out}: {total / 1e6:.1f} MB, K={args.k}, prior entropy {rep['prior_entropy_bits']:.3f} "
             f"bits/token from {rep['prior_tokens']} tokens, indices identical: {ok}, "
             f"{rep['import_seconds']:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
