"""Train on a borrowed GPU for a few minutes: pack here, run there, unpack here (issue 12, item 3).

The GPU machine (an H200 with PyTorch, no network) takes at most 64 MiB of inputs, returns files of at
most 16 MiB and runs ~10 minutes at a time. The project's device tool counts the repository's working
tree (tracked and untracked-not-ignored files, ~38 MiB today: the shipped bundles) in those 64 MiB, so
`--total-mib auto` (the default) sizes the pack to what is left beside it (put the pack in an ignored
folder of the checkout the tool sends, e.g. models/gpu/pack/, and `carry` it). So:

    # here (CPU): a folder with everything the run needs, <= 64 MiB in all
    python -m uigc_models.gpu_pack pack --ckpt tok-k256-bil --out gpu-pack [--train-args "..."]
    # there: `bash gpu-pack/run.sh` with $OUT set (models/gpu/train_on_device.sh is the same script);
    #   ~9 minutes of bf16 training (train.py --bf16 --init-from the packed checkpoint), then
    #   $OUT/gpu_ckpt.pt (<= 16 MiB), $OUT/train.log, $OUT/metrics.jsonl, $OUT/status.json
    # here again: a train.py-compatible checkpoint (for --init-from, spot_check, export)
    python -m uigc_models.gpu_pack unpack --base tok-k256-bil --got OUT/gpu_ckpt.pt --out ~/.cache/uigc/runs/gpu-1.pt

The pack holds: a copy of uigc_models/ (the code that trains, so the run does not depend on the
checkout there), ckpt.pt (args + weights, no optimiser: the encoder and codebook fp32, so the tokens
are exact; the decoder fp16 with --decoder-fp16, the default, since it is trained further anyway),
lpips_alex.pt (fp16), train_jpeg.pkl (a seeded random subset of ../shared/data/train/ as JPEG bytes,
decoded there with PIL or torchvision: the original files, or with --max-side / --quality re-encoded
smaller so that more photos fit; as many as fit: <= --max-data-mib and the total), pack.json (the
training flags and the sizes) and run.sh.
`DRY_RUN=1 bash run.sh` (or `run --dry-run`) trains 3 steps on tiny crops on the CPU: the CI test.

The returned checkpoint has the whole model when it fits in 16 MiB, else (with --freeze-encoder)
the decoder and codebook only, and `unpack` puts the frozen encoder back from --base.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import pickle
import shlex
import shutil
import sys
import time

import numpy as np

MiB = 1024 * 1024
INPUT_LIMIT = 64 * MiB
RETURN_LIMIT = 16 * MiB
PKG_DIR = os.path.dirname(os.path.abspath(__file__))
RUN_SH = os.path.join(os.path.dirname(PKG_DIR), "gpu", "train_on_device.sh")
DEFAULT_TRAIN_ARGS = ("--freeze-encoder --warmup-frac 0 --crop 256 --batch 16 --w-chroma 2 --lr 1e-4 --lpips-shift 16 --w-grid 1000 --grid-scope crop "
                      "--colour-loop 32:4 --colour-loop-frac 0.75 --w-lpips 3 --w-l1 0.5 --w-mse 0.5 "
                      "--ckpt-every-min 3 --log-every 50")
# flags the runner sets itself
RUNNER_FLAGS = ("--run", "--runs-root", "--data-cache", "--init-from", "--resume-from", "--max-minutes",
                "--total-minutes", "--device", "--threads", "--bf16", "--max-steps")


def _slim_state(ck: dict) -> dict:
    keep = ("model", "step", "train_seconds", "args", "hparams", "imported")
    return {k: ck[k] for k in keep if k in ck}


def _dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def travelling_tree_bytes(repo: str) -> int:
    """Bytes of the files the device tool sends with a checkout: tracked + untracked-not-ignored."""
    import subprocess
    r = subprocess.run(["git", "-C", repo, "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"git ls-files failed in {repo}: {r.stderr.decode().strip()}")
    total = 0
    for f in r.stdout.split(b"\0"):
        p = os.path.join(repo, f.decode())
        if f and os.path.isfile(p) and not os.path.islink(p):
            total += os.path.getsize(p)
    return total


def _jpeg_bytes(path: str, max_side: int, quality: int) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if not max_side and not quality:
        return raw
    from PIL import Image
    im = Image.open(io.BytesIO(raw)).convert("RGB")
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS)
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality or 95, subsampling=0)
    return b.getvalue()


def pack(ckpt: str, out: str, data_root: str, train_args: str, max_data_mib: float = 60.0, minutes: float = 8.0,
         lpips_weights: str | None = None, seed: int = 0, log=print, total_mib: float = 64.0,
         decoder_fp16: bool = True, max_side: int = 0, quality: int = 0, min_side: int = 256) -> dict:
    import torch

    from .data import list_train_images
    from .export import resolve_ckpt
    from .lpips import weights_path
    for f in shlex.split(train_args):
        if f.split("=")[0] in RUNNER_FLAGS:
            raise ValueError(f"{f} is set by the runner; leave it out of --train-args")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    # code
    shutil.copytree(PKG_DIR, os.path.join(out, "uigc_models"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(RUN_SH, os.path.join(out, "run.sh"))
    # checkpoint (weights fp32, no optimiser)
    src = resolve_ckpt(ckpt)
    ck = torch.load(src, map_location="cpu", weights_only=False)
    slim = _slim_state(ck)
    if decoder_fp16:
        slim["model"] = {k: (v.half() if k.startswith("decoder.") and v.is_floating_point() else v)
                         for k, v in slim["model"].items()}
    torch.save(slim, os.path.join(out, "ckpt.pt"))
    # LPIPS-alex in fp16 (loaded into the fp32 module there)
    lw = lpips_weights or weights_path("alex")
    sd = torch.load(lw, map_location="cpu", weights_only=True)
    os.makedirs(os.path.join(out, "lpips"))
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
               os.path.join(out, "lpips", "lpips_alex.pt"))
    # data: whole JPEG files, in a seeded random order, while they fit
    fixed = _dir_bytes(out) + 64 * 1024   # + pack.json and slack
    budget = min(int(max_data_mib * MiB), int(total_mib * MiB) - fixed - MiB)
    if budget <= 0:
        raise ValueError(f"no room for data: code + checkpoint + LPIPS take {fixed / MiB:.1f} MiB")
    files = list_train_images(data_root)
    order = np.random.default_rng(seed).permutation(len(files))
    chosen, blobs, used = [], [], 0
    skipped = 0
    for i in order:
        if used + 20 * 1024 > budget:
            break
        b = _jpeg_bytes(files[i], max_side, quality)
        if used + len(b) + 200 > budget:
            continue
        if max_side and min_side:
            from PIL import Image
            if min(Image.open(io.BytesIO(b)).size) < min_side:   # too small for the training crops
                skipped += 1
                continue
        blobs.append(b)
        chosen.append(os.path.relpath(files[i], data_root))
        used += len(b) + 200
    with open(os.path.join(out, "train_jpeg.pkl"), "wb") as f:
        pickle.dump({"names": chosen, "files": blobs}, f, protocol=4)
    meta = {"ckpt": src, "ckpt_step": ck.get("step"), "ckpt_train_minutes": ck.get("train_seconds", 0) / 60,
            "hparams": ck.get("hparams"), "train_args": train_args, "minutes": minutes,
            "data_files": len(chosen), "data_of": len(files), "data_mib": used / MiB, "total_limit_mib": total_mib,
            "decoder_fp16": decoder_fp16, "max_side": max_side, "quality": quality,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(out, "pack.json"), "w") as f:
        json.dump(meta, f, indent=1)
    meta["total_mib"] = _dir_bytes(out) / MiB
    if meta["total_mib"] > total_mib:
        raise RuntimeError(f"pack is {meta['total_mib']:.1f} MiB > {total_mib:.1f} MiB")
    log(f"packed {out}: {meta['total_mib']:.1f} MiB of {total_mib:.1f} ({len(chosen)}/{len(files)} training JPEGs, "
        f"{used / MiB:.1f} MiB; checkpoint step {meta['ckpt_step']})")
    return meta


def _decode_jpegs(blobs: list[bytes]) -> list[np.ndarray]:
    try:
        from PIL import Image
        return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8) for b in blobs]
    except ImportError:
        import torch
        from torchvision.io import ImageReadMode, decode_image
        return [decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)
                .permute(1, 2, 0).numpy() for b in blobs]


def run(pack_dir: str, out: str, dry_run: bool = False, minutes: float | None = None, work: str | None = None) -> int:
    """Train from the pack (on the GPU machine) and write the slim checkpoint + logs to `out`."""
    import tempfile
    pack_dir = os.path.abspath(pack_dir)
    os.environ.setdefault("UIGC_LPIPS_DIR", os.path.join(pack_dir, "lpips"))
    import torch

    from . import train
    meta = json.load(open(os.path.join(pack_dir, "pack.json")))
    os.makedirs(out, exist_ok=True)
    work = work or tempfile.mkdtemp(prefix="uigc-gpu-")
    t0 = time.time()
    d = pickle.load(open(os.path.join(pack_dir, "train_jpeg.pkl"), "rb"))
    images = _decode_jpegs(d["files"])
    cache = os.path.join(work, "train_u8.pkl")
    with open(cache, "wb") as f:
        pickle.dump({"images": images, "names": d["names"], "n_files": len(images)}, f, protocol=4)
    cuda = torch.cuda.is_available()
    print(f"[gpu_pack] {len(images)} training images decoded in {time.time() - t0:.1f}s; "
          f"device {'cuda: ' + torch.cuda.get_device_name(0) if cuda else 'cpu'}; torch {torch.__version__}",
          flush=True)
    m = minutes if minutes is not None else meta["minutes"]
    argv = shlex.split(meta["train_args"]) + [
        "--run", "gpu", "--runs-root", work, "--data-cache", cache,
        "--init-from", os.path.join(pack_dir, "ckpt.pt"), "--max-minutes", str(m), "--total-minutes", str(m)]
    if dry_run:
        # tiny and short, on the CPU: exercises packing, decoding, bf16 autocast, saving, slimming
        argv += ["--device", "cpu", "--threads", "1", "--max-steps", "3", "--crop", "64", "--batch", "2",
                 "--log-every", "1", "--bf16"]
    else:
        argv += ["--device", "auto", "--threads", str(min(8, os.cpu_count() or 1))]
        if cuda:
            argv += ["--bf16"]
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    print("[gpu_pack] train.py " + " ".join(argv), flush=True)
    rc = train.main(argv)
    rdir = os.path.join(work, "gpu")
    for f in ("train.log", "metrics.jsonl", "status.json", "config.json"):
        if os.path.exists(os.path.join(rdir, f)):
            shutil.copy(os.path.join(rdir, f), os.path.join(out, f))
    last = os.path.join(rdir, "last.pt")
    if not os.path.exists(last):
        print("[gpu_pack] no checkpoint written", file=sys.stderr)
        return rc or 1
    ck = _slim_state(torch.load(last, map_location="cpu", weights_only=False))
    ck["gpu_run"] = {"pack": meta, "device": torch.cuda.get_device_name(0) if cuda and not dry_run else "cpu",
                     "dry_run": dry_run, "wall_s": time.time() - t0}
    dst = os.path.join(out, "gpu_ckpt.pt")
    torch.save(ck, dst)
    if os.path.getsize(dst) > RETURN_LIMIT:
        if not ck["args"].get("freeze_encoder"):
            print(f"[gpu_pack] error: {dst} is {os.path.getsize(dst) / MiB:.1f} MiB > 16 MiB", file=sys.stderr)
            return 1
        ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("encoder.")}
        ck["partial"] = "decoder+quant (encoder frozen: take it from the packed checkpoint)"
        torch.save(ck, dst)
    print(f"[gpu_pack] wrote {dst} ({os.path.getsize(dst) / MiB:.2f} MiB, step {ck['step']}, "
          f"{ck['train_seconds'] / 60:.1f} train min{', partial' if 'partial' in ck else ''})", flush=True)
    return rc


def unpack(base: str, got: str, out: str) -> dict:
    import torch

    from .export import resolve_ckpt
    ck = torch.load(got, map_location="cpu", weights_only=False)
    if "partial" in ck:
        b = torch.load(resolve_ckpt(base), map_location="cpu", weights_only=False)
        model = dict(b["model"])
        for k, v in ck["model"].items():
            model[k] = v
        missing_enc = [k for k in model if k.startswith("encoder.") and k not in b["model"]]
        assert not missing_enc
        ck["model"] = model
        ck["partial_from"] = resolve_ckpt(base)
    for key in ("disc", "d_opt"):
        ck.setdefault(key, None)
    torch.save(ck, out)
    return ck


def main(argv=None) -> int:
    from .common import DATA_ROOT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--ckpt", required=True, help="checkpoint file or run name")
    p.add_argument("--out", required=True, help="pack folder (replaced)")
    p.add_argument("--data-root", default=DATA_ROOT)
    p.add_argument("--train-args", default=DEFAULT_TRAIN_ARGS, help="train.py flags (not those the runner sets)")
    p.add_argument("--max-data-mib", type=float, default=60.0)
    p.add_argument("--minutes", type=float, default=8.0, help="training minutes there (+ ~1 min of start-up and saving: fits a 10-minute command)")
    p.add_argument("--lpips-weights", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-mib", default="auto",
                   help="size limit of the pack: a number, or auto = 64 MiB minus the files that travel with the "
                        "checkout named by --repo (the device tool sends both)")
    p.add_argument("--repo", default=os.path.dirname(os.path.dirname(PKG_DIR)),
                   help="checkout the device tool sends (for --total-mib auto)")
    p.add_argument("--decoder-fp32", action="store_true", help="pack the decoder in fp32 (default fp16)")
    p.add_argument("--max-side", type=int, default=0, help="re-encode training photos to this longest side")
    p.add_argument("--quality", type=int, default=0, help="re-encode training photos at this JPEG quality")
    r = sub.add_parser("run")
    r.add_argument("--pack", default=os.path.dirname(PKG_DIR))
    r.add_argument("--out", default=os.environ.get("OUT"))
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--minutes", type=float, default=None)
    u = sub.add_parser("unpack")
    u.add_argument("--base", required=True, help="the packed checkpoint (file or run name)")
    u.add_argument("--got", required=True, help="gpu_ckpt.pt from the run")
    u.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        if a.total_mib == "auto":
            tree = travelling_tree_bytes(a.repo)
            total = (INPUT_LIMIT - tree) / MiB
            print(f"--total-mib auto: 64 MiB - {tree / MiB:.1f} MiB of files travelling with {a.repo} = {total:.1f} MiB")
        else:
            total = float(a.total_mib)
        pack(a.ckpt, a.out, a.data_root, a.train_args, a.max_data_mib, a.minutes, a.lpips_weights, a.seed,
             total_mib=total, decoder_fp16=not a.decoder_fp32, max_side=a.max_side, quality=a.quality)
        return 0
    if a.cmd == "run":
        if not a.out:
            print("error: --out or $OUT needed", file=sys.stderr)
            return 2
        return run(a.pack, a.out, a.dry_run, a.minutes)
    ck = unpack(a.base, a.got, a.out)
    print(f"wrote {a.out} (step {ck['step']}, {ck['train_seconds'] / 60:.1f} train min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
