"""Training data: prepare an in-RAM cache of the training photos and sample random crops.

    python -m uigc_models.data prepare      # -> ~/.cache/uigc/data/train_u8.pkl

Only ../shared/data/train/ is used for training. Kodak is evaluation only.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import pickle
import sys

import numpy as np

from .common import CACHE_ROOT, DATA_ROOT, setup_logging, write_config

TRAIN_SUBDIRS = ("bsds500", "sun-hays80", "urban100")
CACHE_FILE = os.path.join(CACHE_ROOT, "data", "train_u8.pkl")


def list_train_images(data_root: str = DATA_ROOT) -> list[str]:
    files = []
    for sub in TRAIN_SUBDIRS:
        d = os.path.join(data_root, "train", sub)
        if not os.path.isdir(d):
            raise FileNotFoundError(f"training folder {d} missing (expected ../shared/data/train/{sub})")
        files += sorted(glob.glob(os.path.join(d, "*.jpg")) + glob.glob(os.path.join(d, "*.png")))
    return files


def list_kodak(data_root: str = DATA_ROOT) -> list[str]:
    d = os.path.join(data_root, "kodak")
    files = sorted(glob.glob(os.path.join(d, "kodim*.png")))
    if len(files) != 24:
        raise FileNotFoundError(f"expected 24 Kodak PNGs in {d}, found {len(files)}")
    return files


def load_rgb(path: str) -> np.ndarray:
    from PIL import Image   # imported here: the GPU runner (gpu_pack) trains from this module without PIL
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def prepare(data_root: str = DATA_ROOT, out: str = CACHE_FILE, extra_scales=(0.75,), min_side_for_scale=700,
            log=None) -> str:
    """Decode all training photos once; large ones are also stored downscaled (Kodak-like scale)."""
    from PIL import Image
    files = list_train_images(data_root)
    images, names = [], []
    h = hashlib.sha256()
    for p in files:
        a = load_rgb(p)
        h.update(os.path.relpath(p, data_root).encode())
        images.append(a)
        names.append(os.path.relpath(p, data_root))
        if min(a.shape[:2]) >= min_side_for_scale:
            for s in extra_scales:
                im = Image.fromarray(a).resize((round(a.shape[1] * s), round(a.shape[0] * s)), Image.LANCZOS)
                images.append(np.asarray(im))
                names.append(names[-1] + f"@{s}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "wb") as f:
        pickle.dump({"images": images, "names": names, "files_sha256": h.hexdigest(),
                     "n_files": len(files)}, f, protocol=4)
    os.replace(out + ".tmp", out)
    px = sum(a.shape[0] * a.shape[1] for a in images)
    msg = f"prepared {len(files)} files -> {len(images)} arrays, {px / 1e6:.1f} Mpx, {out}"
    (log.info if log else print)(msg)
    return out


def load_cache(path: str = CACHE_FILE, data_root: str = DATA_ROOT) -> dict:
    if not os.path.exists(path):
        prepare(data_root, path)
    with open(path, "rb") as f:
        return pickle.load(f)


class CropSampler:
    """Random crops + horizontal flips from in-RAM uint8 images, area-weighted image choice."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0):
        self.images = [a for a in images if a.shape[0] >= crop and a.shape[1] >= crop]
        self.crop = crop
        area = np.array([a.shape[0] * a.shape[1] for a in self.images], np.float64)
        self.p = area / area.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> np.ndarray:
        c = self.crop
        out = np.empty((n, c, c, 3), np.uint8)
        ids = self.rng.choice(len(self.images), size=n, p=self.p)
        for i, j in enumerate(ids):
            a = self.images[j]
            y = self.rng.integers(0, a.shape[0] - c + 1)
            x = self.rng.integers(0, a.shape[1] - c + 1)
            crop = a[y:y + c, x:x + c]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = crop
        return out


def to_tensor_m11(batch_u8: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [-1, 1] (= (x/255 - 0.5)/0.5, the bundle normalisation)."""
    import torch
    t = torch.from_numpy(np.ascontiguousarray(batch_u8)).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data-root", default=DATA_ROOT)
    p.add_argument("--out", default=CACHE_FILE)
    args = ap.parse_args(argv)
    d = os.path.dirname(args.out)
    log = setup_logging(d, "prepare.log")
    write_config(d, args, "prepare_config.json")
    prepare(args.data_root, args.out, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
