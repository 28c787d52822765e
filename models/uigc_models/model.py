"""Tokenizer: f=16 conv encoder/decoder + l2-normalised EMA vector quantiser (+ optional PatchGAN)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4) if c >= 8 else 1, c, eps=1e-5)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.n1, self.c1 = gn(c), nn.Conv2d(c, c, 3, 1, 1)
        self.n2, self.c2 = gn(c), nn.Conv2d(c, c, 3, 1, 1)
        nn.init.zeros_(self.c2.bias)
        with torch.no_grad():
            self.c2.weight.mul_(0.2)

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        return x + self.c2(F.silu(self.n2(h)))


UP_MODES = ("nearest", "bilinear")


class Up(nn.Module):
    """2x upsampling + 3x3 conv. `nearest` (the 0.x bundles) copies each feature into a 2x2 block, which
    imprints the block grid of every stage (periods 16, 8, 4, 2 px at the output); `bilinear`
    (align_corners=False, ONNX Resize linear / half_pixel) interpolates instead. No parameters either
    way, so the same weights load into both."""

    def __init__(self, cin: int, cout: int, mode: str = "nearest", scale: int = 2):
        super().__init__()
        if mode not in UP_MODES:
            raise ValueError(f"up mode {mode!r} not in {UP_MODES}")
        self.mode, self.scale = mode, scale
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x):
        if self.scale == 1:     # the f=8 decoder's first stage: the same conv, no upsampling
            return self.conv(x)
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(x)


FACTORS = (16, 8)


class Encoder(nn.Module):
    """image [-1,1] -> z [N, D, H/f, W/f] (not normalised); f = `factor` (16, or 8: the last 2x2/2
    downsampling becomes a 3x3/1 conv, `f8_state` maps f=16 weights onto it)."""

    def __init__(self, ch=(64, 128, 192), code_dim=32, n_res=(1, 1, 2), factor: int = 16):
        super().__init__()
        if factor not in FACTORS:
            raise ValueError(f"factor {factor} not in {FACTORS}")
        c0, c1, c2 = ch
        layers = [nn.Conv2d(3, c0, 4, 4)]                       # H/4 patchify stem
        layers += [ResBlock(c0) for _ in range(n_res[0])]
        layers += [nn.Conv2d(c0, c1, 2, 2)]                     # H/8
        layers += [ResBlock(c1) for _ in range(n_res[1])]
        layers += [nn.Conv2d(c1, c2, 2, 2) if factor == 16 else nn.Conv2d(c1, c2, 3, 1, 1)]   # H/16 (H/8)
        layers += [ResBlock(c2) for _ in range(n_res[2])]
        layers += [gn(c2), nn.SiLU(), nn.Conv2d(c2, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """code [N, D, h, w] -> image [N, 3, f*h, f*w] in the normalised ([-1, 1]) space (f = `factor`:
    16, or 8 where the first stage keeps its conv and skips its upsampling)."""

    def __init__(self, ch=(192, 128, 96, 48, 24), code_dim=32, n_res=(2, 1, 1, 1, 0), up_mode: str = "nearest",
                 factor: int = 16):
        super().__init__()
        if factor not in FACTORS:
            raise ValueError(f"factor {factor} not in {FACTORS}")
        layers = [nn.Conv2d(code_dim, ch[0], 3, 1, 1)]
        for i, c in enumerate(ch):
            layers += [ResBlock(c) for _ in range(n_res[i])]
            if i + 1 < len(ch):
                layers += [Up(c, ch[i + 1], up_mode, scale=1 if (factor == 8 and i == 0) else 2)]
        layers += [gn(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, q):
        return self.net(q)


class EMAQuantizer(nn.Module):
    """Nearest-codeword quantiser on l2-normalised codes, EMA codebook, dead-code restarts."""

    def __init__(self, k: int = 1024, dim: int = 32, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.k, self.dim, self.decay, self.eps = k, dim, decay, eps
        e = F.normalize(torch.randn(k, dim), dim=1)
        self.register_buffer("embed", e)
        self.register_buffer("embed_avg", e.clone())
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("initted", torch.tensor(0, dtype=torch.uint8))
        self.ema_enabled = True

    @staticmethod
    def normalize(z):
        return F.normalize(z, dim=1, eps=1e-6)

    def nearest(self, flat):
        # both sides l2-normalised: argmin |z - c|^2 == argmax z.c ; keep the general form for ONNX parity
        d = (self.embed * self.embed).sum(1)[None] - 2.0 * flat @ self.embed.t()
        return d.argmin(1)

    @torch.no_grad()
    def init_codebook(self, flat: torch.Tensor, iters: int = 20, seed: int = 0) -> None:
        c = spherical_kmeans(flat, self.k, iters=iters, seed=seed)
        self.embed.copy_(c)
        self.embed_avg.copy_(c)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(1)

    def forward(self, z):
        """z: [N, D, h, w] normalised. Returns (q_straight_through, idx [N,h,w], commit_loss, stats)."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat.detach())
        q = self.embed[idx]
        if self.training and self.ema_enabled:
            with torch.no_grad():
                onehot = F.one_hot(idx, self.k).type(flat.dtype)
                counts = onehot.sum(0)
                esum = onehot.t() @ flat.detach()
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(esum, alpha=1 - self.decay)
                self.embed.copy_(F.normalize(self.embed_avg, dim=1))
        commit = F.mse_loss(flat, q.detach())
        q = q.view(n, h, w, d).permute(0, 3, 1, 2)
        q_st = z + (q - z).detach()
        return q_st, idx.view(n, h, w), commit

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, threshold: float, noise: float = 0.02) -> int:
        dead = (self.cluster_size < threshold).nonzero().flatten()
        if dead.numel() == 0 or flat.shape[0] == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        newv = F.normalize(flat[pick] + noise * torch.randn_like(flat[pick]), dim=1)
        self.embed[dead] = newv
        self.embed_avg[dead] = newv * threshold * 2
        self.cluster_size[dead] = threshold * 2
        return int(dead.numel())


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """k-means on the unit sphere (k-means++-style seeding). x: [N, D] normalised. Returns [k, D]."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = F.normalize(x.float(), dim=1)
    n = x.shape[0]
    w = torch.ones(n) if weights is None else weights.float().clamp_min(1e-8)
    if n <= k:
        extra = x[torch.randint(0, n, (k - n,), generator=g)] if k > n else x[:0]
        return F.normalize(torch.cat([x, extra + 0.01 * torch.randn(extra.shape, generator=g)]), dim=1)
    first = torch.multinomial(w, 1, generator=g)
    centers = [x[first[0]]]
    mind = (2 - 2 * x @ centers[0]).clamp_min(0)
    for _ in range(1, k):
        p = mind * w
        j = torch.multinomial(p / p.sum() if p.sum() > 0 else w / w.sum(), 1, generator=g)[0]
        centers.append(x[j])
        mind = torch.minimum(mind, (2 - 2 * x @ x[j]).clamp_min(0))
    c = torch.stack(centers)
    for _ in range(iters):
        a = (x @ c.t()).argmax(1)
        s = torch.zeros_like(c).index_add_(0, a, x * w[:, None])
        cnt = torch.zeros(k).index_add_(0, a, w)
        empty = cnt <= 0
        c_new = F.normalize(s, dim=1)
        if empty.any():
            c_new[empty] = x[torch.randint(0, n, (int(empty.sum()),), generator=g)]
        c = c_new
    return c


class Tokenizer(nn.Module):
    def __init__(self, k: int = 1024, code_dim: int = 32, enc_ch=(64, 128, 192), enc_res=(1, 1, 2),
                 dec_ch=(192, 128, 96, 48, 24), dec_res=(2, 1, 1, 1, 0), ema_decay: float = 0.99,
                 up_mode: str = "nearest", factor: int = 16):
        super().__init__()
        # checkpoints written before up_mode (factor) existed have no such key and load as "nearest" (16)
        self.hparams = dict(k=k, code_dim=code_dim, enc_ch=list(enc_ch), enc_res=list(enc_res),
                            dec_ch=list(dec_ch), dec_res=list(dec_res), ema_decay=ema_decay, up_mode=up_mode)
        if factor != 16:
            self.hparams["factor"] = factor
        self.factor = factor
        self.encoder = Encoder(enc_ch, code_dim, enc_res, factor)
        self.decoder = Decoder(dec_ch, code_dim, dec_res, up_mode, factor)
        self.quant = EMAQuantizer(k, code_dim, ema_decay)

    def encode_z(self, x):
        return self.quant.normalize(self.encoder(x))

    def forward(self, x, quantize: bool = True):
        z = self.encode_z(x)
        if quantize:
            q, idx, commit = self.quant(z)
        else:
            q, idx, commit = z, None, z.new_zeros(())
        return self.decoder(q), z, idx, commit

    @torch.no_grad()
    def encode_indices(self, x):
        z = self.encode_z(x)
        n, d, h, w = z.shape
        return self.quant.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(n, h, w)

    @torch.no_grad()
    def decode_indices(self, idx):
        q = self.quant.embed[idx].permute(0, 3, 1, 2)
        return self.decoder(q)


def f8_state(f16: Tokenizer) -> dict:
    """The f=16 tokenizer's state dict for an f=8 one of the same widths: the encoder's last 2x2/2 conv
    becomes a 3x3/1 conv with the 2x2 taps at its lower right (output j reads inputs j and j+1, as the
    strided conv's output j/2 read 2j' and 2j'+1); every other tensor, the codebook included, is kept."""
    state = {k: v.clone() for k, v in f16.state_dict().items()}
    convs = [i for i, m in enumerate(f16.encoder.net) if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    key = f"encoder.net.{convs[-1]}.weight"
    w = state[key]
    w3 = w.new_zeros(w.shape[0], w.shape[1], 3, 3)
    w3[..., 1:, 1:] = w
    state[key] = w3
    return state


class PatchDiscriminator(nn.Module):
    """Small PatchGAN (pix2pix style, spectral-norm-free, GroupNorm)."""

    def __init__(self, ch: int = 32, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, n_layers):
            c2 = min(ch * 2 ** i, 256)
            layers += [nn.Conv2d(c, c2, 4, 2, 1), gn(c2), nn.LeakyReLU(0.2)]
            c = c2
        layers += [nn.Conv2d(c, c, 4, 1, 1), gn(c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
