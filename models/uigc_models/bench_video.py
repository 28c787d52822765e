"""Rate-quality benchmark on a video clip (a folder of PNG frames): uigc packet streams (intra-only
and temporal/inter, from the Rust CLI `stream-encode`/`stream-decode`), x265 and AV1 (libaom) from
ffmpeg. One JSON schema per frame and per point, in the style of bench_codecs.

    python -m uigc_models.bench_video --clip /tmp/vtest --name vtest --fps 10 --every 1 \
        --uigc intra inter:t3 inter:t8 --x265-qp 41 46 51 --x265-keyint 0 10s --av1-crf 50 58 \
        --lpips-every 10 --work /tmp/vbench/vtest-10fps --out ~/.cache/uigc/runs/video-vtest-10fps

Frames: the clip's PNGs in name order, every --every-th (10 with --fps 1 turns a 10 fps clip into
1 fps), at most --limit. uigc points: `intra` (--keyframe-interval 1) and `inter[:tT][:rBPS][:mB]`
(--change-threshold T, --target-bitrate BPS, --max-frame-bytes B; the rest at the CLI's defaults,
colour auto). x265: `-preset slow`, constant qp, keyint 0 = one keyframe (-1 in x265), `Ns` = a
keyframe every N seconds, scenecut off. AV1: libaom `-crf Q -b:v 0 -cpu-used --av1-cpu-used`, one
keyframe. The ffmpeg codecs get the PNG frames losslessly as rgb24 rawvideo on stdin, converted by
ffmpeg to yuv420p (BT.601, limited range) for coding, and are decoded back to rgb24 (BT.601).

Bytes are real: for uigc the sum of the packets (each a datagram; the .uigcs file adds a 4-byte
length per packet), for x265 the raw Annex-B HEVC stream, for AV1 the raw OBU stream.
kbit/s = bytes * 8 / (frames / fps) / 1000.

Quality: PSNR (RGB, 8-bit) and the chroma error of bench_codecs on every scored frame, LPIPS-alex on
full frames every --lpips-every-th frame (0, k, 2k, ...; LPIPS costs seconds per 768x576 frame on
this CPU). An intra-only uigc stream is decoded and scored only on those frames (its packets are
independent: the sub-stream of packets 0, k, 2k, ... decodes to the same pictures), so its PSNR is
over those frames too (`psnr_frames` says how many). `--partial` scores what a still running or
cut-short uigc decode has written so far (frames_scored < frames in the record).

Every per-frame record: {"codec", "setting", "clip", "frame", "width", "height", "type", "bytes",
"bpp", "psnr", "chroma_err", ["lpips_alex"], ["enc_ms", "dec_ms"]}; every point (summary.json):
{"codec", "setting", "clip", "fps", "frames", "bytes", "bytes_per_frame", "kbps", "bpp", "psnr",
"psnr_frames", "lpips_alex", "lpips_frames", "lpips_every", "chroma_err", "seconds", timing means}.
Each point is cached in --work/<point>/ (rerun to add points; --report-only rebuilds the table,
the plot rd.png and the x265/AV1 bitrate at equal LPIPS of --match from the cached points).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import struct
import subprocess
import time

import numpy as np
import torch

from .bench_codecs import chroma_error, psnr
from .common import set_threads
from .data import load_rgb


def frame_list(clip: str, every: int, limit: int | None) -> list[str]:
    files = sorted(glob.glob(os.path.join(clip, "*.png")))
    if not files:
        raise SystemExit(f"{clip}: no PNG frames")
    return files[::every][:limit]


class Scorer:
    def __init__(self):
        from .lpips import LPIPS
        self.lp = LPIPS("alex")

    def __call__(self, ref: np.ndarray, rec: np.ndarray, with_lpips: bool) -> dict:
        if rec.shape != ref.shape:
            raise RuntimeError(f"decoded frame {rec.shape} != source {ref.shape}")
        r = {"psnr": psnr(ref, rec), "chroma_err": chroma_error(ref, rec)}
        if with_lpips:
            t = lambda a: torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
            with torch.no_grad():
                r["lpips_alex"] = float(self.lp(t(ref), t(rec))[0])
        return r


# --- uigc ----------------------------------------------------------------------------------------

def uigc_args(spec: str) -> tuple[str, list[str]]:
    """`intra` or `inter[:tT][:rBPS][:mB]` -> (point name, stream-encode arguments)."""
    parts = spec.split(":")
    if parts[0] == "intra":  # intra[:sK]: only every K-th frame is coded (intra packets are independent)
        return "uigc-intra" + (f"-{parts[1]}" if len(parts) > 1 else ""), ["--keyframe-interval", "1"]
    if parts[0] != "inter":
        raise SystemExit(f"uigc point {spec!r}: intra or inter[:tT][:rBPS][:mB]")
    args, name = [], "uigc-inter"
    flags = {"t": "--change-threshold", "r": "--target-bitrate", "m": "--max-frame-bytes",
             "f": "--refresh-frames", "k": "--keyframe-interval"}
    for p in parts[1:]:
        args += [flags[p[0]], p[1:]]
        name += "-" + p
    return name, args


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.startswith("{")]


def split_packets(path: str) -> list[bytes]:
    d, out, i = open(path, "rb").read(), [], 0
    while i < len(d):
        n = struct.unpack("<I", d[i:i + 4])[0]
        out.append(d[i + 4:i + 4 + n])
        i += 4 + n
    return out


def run_logged(cmd: list[str], stdout: str, stderr: str, desc: str, total: int):
    """Runs cmd (niced by the caller's nice), its JSON lines into stdout, a tqdm bar per line."""
    from tqdm import tqdm
    with open(stdout, "w") as out, open(stderr, "w") as err, tqdm(total=total, desc=desc, leave=False) as bar:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in p.stdout:
            out.write(line)
            out.flush()
            bar.update(1)
        if p.wait() != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed, see {stderr}")


def uigc_point(spec: str, frames: list[str], a, pdir: str):
    """Encodes (unless cached) and decodes; yields (index, bytes, type, enc_ms, dec_ms, picture)."""
    name, extra = uigc_args(spec)
    stream = os.path.join(pdir, "stream.uigcs")
    common = ["--threads", str(a.uigc_threads)] + (["--model", a.bundle] if a.bundle else [])
    enc = read_jsonl(os.path.join(pdir, "enc.jsonl"))
    sample = intra_sample(spec)
    if not (os.path.exists(stream) and len(enc) > 0):
        if os.path.exists(os.path.join(pdir, "records.json")):
            os.remove(os.path.join(pdir, "records.json"))
        run_logged([a.uigc, "stream-encode", *frames[::sample], "-o", stream, "--fps", str(a.fps), *extra, *common],
                   os.path.join(pdir, "enc.jsonl"), os.path.join(pdir, "enc.log"), f"{name} encode",
                   len(frames[::sample]))
        enc = read_jsonl(os.path.join(pdir, "enc.jsonl"))
    packets = split_packets(stream)
    index = {os.path.abspath(f): i for i, f in enumerate(frames)}
    pk_frame = [index[os.path.abspath(e["input"])] for e in enc]
    if len(packets) != len(enc) or sorted(set(pk_frame)) != pk_frame:
        raise RuntimeError(f"{pdir}: {len(packets)} packets, {len(enc)} encoder lines")
    if any(len(p) != e["bytes"] for p, e in zip(packets, enc)):
        raise RuntimeError(f"{pdir}: packet sizes differ from the encoder's lines")
    intra_only = all(e["type"] == "intra" for e in enc)
    sub = list(range(len(packets)))
    dec_dir, dec_stream = os.path.join(pdir, "dec"), stream
    if intra_only and a.lpips_every > 1:  # independent packets: decode only the scored frames
        sub = [k for k, f in enumerate(pk_frame) if f % a.lpips_every == 0]
    if len(sub) < len(packets):
        dec_stream = os.path.join(pdir, f"sub{a.lpips_every}.uigcs")
        dec_dir = os.path.join(pdir, f"dec{a.lpips_every}")
        with open(dec_stream, "wb") as f:
            for k in sub:
                f.write(struct.pack("<I", len(packets[k])) + packets[k])
    dec_log = dec_dir + ".jsonl"
    dec = read_jsonl(dec_log)
    if len(dec) < len(sub) and not a.partial:
        run_logged([a.uigc, "stream-decode", dec_stream, "-o", dec_dir, *common], dec_log,
                   dec_dir + ".log", f"{name} decode", len(sub))
        dec = read_jsonl(dec_log)
    if a.partial:  # a frame counts once the next one has started (or the decoder logged it)
        have = len(glob.glob(os.path.join(dec_dir, "frame_*.png")))
        done = len(dec) if len(dec) == len(sub) else max(0, min(have - 1, len(dec)))
        sub = sub[:done]
    bad = [d for d in dec[:len(sub)] if d.get("status") != "exact"]
    if bad:
        raise RuntimeError(f"{pdir}: {len(bad)} packets not decoded exactly: {bad[:3]}")
    for j, k in enumerate(sub):
        e = enc[k]
        pic = load_rgb(os.path.join(dec_dir, f"frame_{j:05d}.png"))
        dec_ms = dec[j]["decode_ms"] if j < len(dec) else None
        # the frames the encoder skipped (over budget) show the last picture: they follow packet k
        nxt = pk_frame[k + 1] if k + 1 < len(pk_frame) else len(frames)
        for f in range(pk_frame[k], nxt if not intra_only or (a.lpips_every <= 1 and sample == 1) else pk_frame[k] + 1):
            yield f, (e["bytes"] if f == pk_frame[k] else 0), (e["type"] if f == pk_frame[k] else "skipped"), \
                e["tokenizer_ms"] + e["coding_ms"], dec_ms, pic


def intra_sample(spec: str) -> int:
    p = spec.split(":")
    return int(p[1][1:]) if p[0] == "intra" and len(p) > 1 else 1


def uigc_bytes(pdir: str) -> tuple[int, int, dict]:
    enc = read_jsonl(os.path.join(pdir, "enc.jsonl"))
    types = {}
    for e in enc:
        types[e["type"]] = types.get(e["type"], 0) + 1
    return sum(e["bytes"] for e in enc), len(enc), types


# --- x265 / AV1 through ffmpeg -------------------------------------------------------------------

def ffmpeg_point(codec: str, q: int, keyint: str, frames: list[str], refs, a, pdir: str):
    h, w = refs(0).shape[:2]
    if codec == "x265":
        ki = -1 if keyint == "0" else int(round(float(keyint.rstrip("s")) * a.fps)) if keyint.endswith("s") else int(keyint)
        params = f"qp={q}:keyint={ki}:min-keyint={max(ki, 1)}:scenecut=0:pools={a.ff_threads}:frame-threads=1:log-level=error"
        cargs, ext = ["-c:v", "libx265", "-preset", "slow", "-x265-params", params, "-f", "hevc"], "hevc"
    else:
        cargs = ["-c:v", "libaom-av1", "-crf", str(q), "-b:v", "0", "-cpu-used", str(a.av1_cpu_used),
                 "-g", "100000", "-keyint_min", "100000", "-threads", str(a.ff_threads), "-row-mt", "0",
                 "-f", "obu"]
        ext = "obu"
    stream = os.path.join(pdir, f"stream.{ext}")
    enc_s = None
    if not os.path.exists(stream):
        if os.path.exists(os.path.join(pdir, "records.json")):
            os.remove(os.path.join(pdir, "records.json"))
        t = time.time()
        p = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                              "-s", f"{w}x{h}", "-r", str(a.fps), "-i", "-", "-vf",
                              "scale=out_color_matrix=bt601:out_range=tv,format=yuv420p", *cargs, stream + ".tmp"],
                             stdin=subprocess.PIPE)
        from tqdm import tqdm
        for i in tqdm(range(len(frames)), desc=f"{codec} q{q} encode", leave=False):
            p.stdin.write(refs(i).tobytes())
        p.stdin.close()
        if p.wait() != 0:
            raise RuntimeError(f"ffmpeg {codec} failed")
        os.replace(stream + ".tmp", stream)
        enc_s = time.time() - t
        json.dump({"encode_s": enc_s}, open(os.path.join(pdir, "time.json"), "w"))
    t = time.time()
    p = subprocess.Popen(["ffmpeg", "-v", "error", "-i", stream, "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-sws_flags", "bicubic+accurate_rnd+full_chroma_int", "-"], stdout=subprocess.PIPE)
    n = w * h * 3
    i = 0
    while True:
        buf = p.stdout.read(n)
        if len(buf) < n:
            break
        yield i, None, None, None, None, np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        i += 1
    p.wait()
    if i != len(frames):
        raise RuntimeError(f"{stream}: {i} frames decoded, {len(frames)} coded")


# --- one point, the report -----------------------------------------------------------------------

def measure(kind: str, spec, frames, refs, scorer, a) -> dict:
    if kind == "uigc":
        name, _ = uigc_args(spec)
        setting = name[len("uigc-"):]
    elif kind == "x265":
        q, ki = spec
        name = f"x265-qp{q}-key{'1' if ki == '0' else ki}"
        setting = f"slow qp{q} " + ("one keyframe" if ki == "0" else f"keyframe every {ki}")
    else:
        name, setting = f"av1-crf{spec}", f"libaom crf{spec} cpu-used {a.av1_cpu_used} one keyframe"
    pdir = os.path.join(a.work, name)
    os.makedirs(pdir, exist_ok=True)
    cached = os.path.join(pdir, "summary.json")
    if os.path.exists(cached) and not a.rescore:
        return json.load(open(cached))
    t0 = time.time()
    h, w = refs(0).shape[:2]
    if kind == "uigc":
        it = uigc_point(spec, frames, a, pdir)
    else:
        it = ffmpeg_point(kind, spec[0] if kind == "x265" else spec, spec[1] if kind == "x265" else "0",
                          frames, refs, a, pdir)
    from tqdm import tqdm
    recs = []
    # scores of an earlier (--partial) pass over the same stream are kept (records.json is removed
    # whenever a stream is coded anew)
    prev = {} if a.rescore or not os.path.exists(os.path.join(pdir, "records.json")) else \
        {r["frame"]: r for r in json.load(open(os.path.join(pdir, "records.json")))}
    for f, b, typ, enc_ms, dec_ms, pic in tqdm(it, total=len(frames), desc=f"{name} score", leave=False):
        r = {"codec": kind, "setting": setting, "clip": a.name, "frame": f, "width": w, "height": h}
        if b is not None:
            r |= {"type": typ, "bytes": b, "bpp": b * 8 / (w * h)}
            if typ != "skipped":
                r |= {"enc_ms": enc_ms, "dec_ms": dec_ms}
        p = prev.get(f)
        if p is not None and p.get("bytes") == r.get("bytes") and ("lpips_alex" in p) == (f % a.lpips_every == 0):
            r |= {k: p[k] for k in ("psnr", "chroma_err", "lpips_alex") if k in p}
        else:
            r |= scorer(refs(f), pic, f % a.lpips_every == 0)
        recs.append(r)
    if kind == "uigc":
        total, packets, types = uigc_bytes(pdir)
    else:
        total, packets, types = os.path.getsize(glob.glob(os.path.join(pdir, "stream.*"))[0]), len(frames), {}
    lp = [r["lpips_alex"] for r in recs if "lpips_alex" in r]
    sample = intra_sample(spec) if kind == "uigc" else 1
    if sample > 1:  # bytes of the coded sample, per frame, over every frame of the clip
        measured, total = total, total * len(frames) / packets
    s = {"codec": kind, "setting": setting, "point": name, "clip": a.name, "fps": a.fps, "every": a.every,
         "frames": len(frames), "packets": packets, "width": w, "height": h, "bytes": total,
         "bytes_per_frame": total / len(frames), "kbps": total * 8 / (len(frames) / a.fps) / 1e3,
         "bpp": total * 8 / (w * h * len(frames)),
         "psnr": float(np.mean([r["psnr"] for r in recs])), "psnr_frames": len(recs),
         "lpips_alex": float(np.mean(lp)) if lp else None, "lpips_frames": len(lp), "lpips_every": a.lpips_every,
         "chroma_err": float(np.mean([r["chroma_err"] for r in recs])), "frames_scored": len(recs),
         "seconds": time.time() - t0}
    if sample > 1:
        s |= {"sampled_every": sample, "bytes_measured": measured, "frames_coded": packets}
    if kind == "uigc":
        s["types"] = types
        for typ in ("intra", "inter"):
            rs = [r for r in recs if r.get("type") == typ]
            if rs:
                s[f"{typ}_bytes_mean"] = float(np.mean([r["bytes"] for r in rs]))
                s[f"{typ}_enc_ms"] = float(np.mean([r["enc_ms"] for r in rs]))
                ds = [r["dec_ms"] for r in rs if r["dec_ms"] is not None]
                s[f"{typ}_dec_ms"] = float(np.mean(ds)) if ds else None
        enc = read_jsonl(os.path.join(pdir, "enc.jsonl"))
        for typ in ("intra", "inter"):  # encoder timings over every coded frame, not only the scored
            es = [e["tokenizer_ms"] + e["coding_ms"] for e in enc if e["type"] == typ]
            if es:
                s[f"{typ}_enc_ms_all"] = float(np.mean(es))
    else:
        tj = os.path.join(pdir, "time.json")
        if os.path.exists(tj):
            s["encode_ms_per_frame"] = json.load(open(tj))["encode_s"] * 1e3 / len(frames)
    if s["frames_scored"] < len(frames) and not (kind == "uigc" and s.get("types", {}).keys() == {"intra"}):
        s["partial"] = True
    with open(os.path.join(pdir, "records.json"), "w") as f:
        json.dump(recs, f)
    json.dump(s, open(os.path.join(pdir, "summary_partial.json") if s.get("partial") else cached, "w"), indent=1)
    return s


def rate_at_lpips(points: list[dict], lpips: float) -> float | None:
    """Bitrate of a codec's curve at the given LPIPS: linear in log(kbit/s) between the two points
    that bracket it (None outside the measured range)."""
    pts = sorted((p["lpips_alex"], p["kbps"]) for p in points if p.get("lpips_alex") is not None)
    for (l0, r0), (l1, r1) in zip(pts, pts[1:]):
        if l0 <= lpips <= l1 and l1 > l0:
            u = (lpips - l0) / (l1 - l0)
            return math.exp(math.log(r0) + u * (math.log(r1) - math.log(r0)))
    return None


def series(summary: list[dict]) -> dict:
    out = {}
    for s in summary:
        if s["codec"] == "uigc":
            key = "uigc intra-only" if s["point"].startswith("uigc-intra") else "uigc inter"
        elif s["codec"] == "x265":
            key = "x265 slow, " + s["setting"].split(" ", 2)[2]
        else:
            key = "AV1 libaom, one keyframe"
        out.setdefault(key, []).append(s)
    return out


def report(summary: list[dict], a) -> dict:
    group = {k: i for i, k in enumerate(sorted(series(summary)))}
    summary = sorted(summary, key=lambda s: (group[next(k for k, v in series([s]).items())], s["kbps"]))
    print(f"\n{a.name}: {summary[0]['frames']} frames at {a.fps} fps (every {a.every})")
    print("| point | kbit/s | B/frame | LPIPS-alex | PSNR dB | LPIPS frames | PSNR frames |")
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        lp = f"{s['lpips_alex']:.4f}" if s["lpips_alex"] is not None else "-"
        print(f"| {s['codec']} {s['setting']} | {s['kbps']:.2f} | {s['bytes_per_frame']:.1f} | {lp} | "
              f"{s['psnr']:.2f} | {s['lpips_frames']} | {s['psnr_frames']} |" + (" partial" if s.get("partial") else ""))
    match = {}
    ser = series(summary)
    ref = next((s for s in summary if s["point"] == a.match), None)
    if ref is not None and ref["lpips_alex"] is not None:
        for key, pts in ser.items():
            if key.startswith("uigc"):
                continue
            r = rate_at_lpips(pts, ref["lpips_alex"])
            match[key] = {"kbps_at_equal_lpips": r, "uigc_kbps": ref["kbps"], "uigc_lpips": ref["lpips_alex"],
                          "ratio_uigc_over_it": ref["kbps"] / r if r else None}
            print(f"{a.match} ({ref['kbps']:.2f} kbit/s, LPIPS {ref['lpips_alex']:.4f}) vs {key}: "
                  + (f"{r:.2f} kbit/s at equal LPIPS, ratio {ref['kbps'] / r:.3f}" if r else "outside its measured range"))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        for key, pts in sorted(ser.items()):
            pts = sorted(pts, key=lambda s: s["kbps"])
            style = "s" if "intra-only" in key else "o-"
            for i, m in enumerate(("lpips_alex", "psnr")):
                q = [(s["kbps"], s[m]) for s in pts if s[m] is not None]
                ax[i].plot([x for x, _ in q], [y for _, y in q], style, label=key)
        for s in summary:
            if s["codec"] == "uigc" and not s["point"].startswith("uigc-intra"):
                ax[0].annotate(" " + s["setting"].replace("inter-", ""), (s["kbps"], s["lpips_alex"]), fontsize=7)
        title = f"{a.name}, {summary[0]['frames']} frames at {a.fps:g} fps"
        ax[0].set(xscale="log", xlabel="kbit/s (real bytes)", ylabel="mean LPIPS-alex (lower is better)",
                  title=title + (f", LPIPS every {a.lpips_every}th" if a.lpips_every > 1 else ""))
        ax[1].set(xscale="log", xlabel="kbit/s (real bytes)", ylabel="mean PSNR dB (RGB)", title=title)
        from matplotlib.ticker import FuncFormatter
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        for x in ax:
            x.grid(True, which="both", alpha=0.3)
            x.xaxis.set_major_formatter(fmt)
            x.xaxis.set_minor_formatter(fmt)
            x.tick_params(axis="x", which="minor", labelsize=7)
        ax[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "rd.png"), dpi=110)
        if a.plot:
            fig.savefig(a.plot, dpi=110)
    except Exception as e:  # the numbers are the product; the plot is a convenience
        print(f"plot skipped: {e}")
    return match


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="folder of PNG frames")
    ap.add_argument("--name", default=None)
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate after --every")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--uigc-bin", dest="uigc", default=os.path.join(os.path.dirname(__file__), "../../target/release/uigc"))
    ap.add_argument("--bundle", default=None, help="model bundle (default: the CLI's)")
    ap.add_argument("--uigc", dest="uigc_points", nargs="*", default=["intra", "inter:t3"])
    ap.add_argument("--x265-qp", type=int, nargs="*", default=[])
    ap.add_argument("--x265-keyint", nargs="*", default=["0"], help="0: one keyframe; Ns: every N seconds")
    ap.add_argument("--av1-crf", type=int, nargs="*", default=[])
    ap.add_argument("--av1-cpu-used", type=int, default=6)
    ap.add_argument("--lpips-every", type=int, default=1)
    ap.add_argument("--match", default="uigc-inter-t3", help="point whose bitrate is matched at equal LPIPS")
    ap.add_argument("--work", required=True, help="cache of streams and decoded frames, one folder per point")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None, help="also save the RD plot here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (LPIPS)")
    ap.add_argument("--uigc-threads", type=int, default=1)
    ap.add_argument("--ff-threads", type=int, default=1)
    ap.add_argument("--partial", action="store_true", help="score what a uigc decode has written so far")
    ap.add_argument("--rescore", action="store_true", help="ignore cached summaries (not the streams)")
    ap.add_argument("--report-only", action="store_true", help="table, plot and match from --work's cached points")
    a = ap.parse_args(argv)
    a.name = a.name or os.path.basename(os.path.normpath(a.clip))
    a.clip = os.path.abspath(a.clip)
    a.uigc = os.path.abspath(a.uigc)
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    set_threads(a.threads)
    frames = frame_list(a.clip, a.every, a.limit)
    summary = []
    if not a.report_only:
        cache = {}

        def refs(i):
            if i not in cache:
                cache[i] = load_rgb(frames[i])
            return cache[i]
        scorer = Scorer()
        jobs = [("uigc", p) for p in a.uigc_points] + [("x265", (q, k)) for k in a.x265_keyint for q in a.x265_qp] \
            + [("av1", q) for q in a.av1_crf]
        from tqdm import tqdm
        for kind, spec in tqdm(jobs, desc="points"):
            s = measure(kind, spec, frames, refs, scorer, a)
            tqdm.write(json.dumps(s))
    recs, summary = [], []
    for d in sorted(glob.glob(os.path.join(a.work, "*"))):
        f = os.path.join(d, "summary.json")
        if not os.path.exists(f) and a.partial:
            f = os.path.join(d, "summary_partial.json")
        if os.path.exists(f):
            s = json.load(open(f))
            if s["frames"] == len(frames):
                summary.append(s)
                recs += json.load(open(os.path.join(d, "records.json")))
    if not summary:
        print("no finished points")
        return 1
    with open(os.path.join(a.out, "records.json"), "w") as f:
        json.dump(recs, f)
    match = report(summary, a)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"points": summary, "match": match}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
