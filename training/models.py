"""The masked autoencoder of MOFO pretraining (VideoMAE's architecture, the paper's §2.2).

- Encoder: a ViT over tubelet tokens (Conv3d patch embedding, ``tubelet`` frames × ``patch``²
  pixels), fixed sinusoidal positions, pre-norm blocks whose attention is torch's
  ``scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has them).
  It sees only the visible tokens.
- Decoder: a narrower ViT over the visible tokens' encodings plus a learned mask token at every
  hidden position (each with its sinusoidal position); it predicts the hidden tubelets' pixels.
- The loss belongs to the model: mean squared error on the hidden tokens, against their pixels
  normalised per tubelet and channel (mean 0, variance 1), as VideoMAE does.

Names say the architecture: ``vit_base_patch16_tubelet2`` is VideoMAE's ViT-B/16 (768 wide, 12
deep, 12 heads; decoder 384 wide, 4 deep, 6 heads) on 16 × 224² clips: 8 × 14 × 14 = 1568 tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from mofo.training.masking import TokenGrid

# Added to the per-tubelet standard deviation of the targets (flat tubelets stay finite).
TARGET_EPS = 1e-6


@dataclass(frozen=True)
class MAEConfig:
    """Everything that shapes the model; saved in checkpoints."""

    name: str
    grid: TokenGrid = field(default_factory=TokenGrid)
    width: int = 768
    depth: int = 12
    heads: int = 12
    decoder_width: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    channels: int = 3
    # Targets normalised per tubelet (VideoMAE's default); False: the input's pixels as they are.
    norm_targets: bool = True
    # The encoder's LayerNorm over every output token. VideoMAE's mean-pooling classifiers have
    # none (they normalise the pooled features instead, fc_norm): False builds that encoder.
    token_norm: bool = True

    def to_dict(self) -> dict:
        """The fields, ``token_norm`` only when off: configs saved before it existed stay equal
        to today's (a run folder's checkpoints are matched by their config)."""
        data = asdict(self)
        if self.token_norm:
            del data["token_norm"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> MAEConfig:
        data = dict(data)
        data["grid"] = TokenGrid(**data["grid"])
        return cls(**data)


CONFIGS = {
    c.name: c
    for c in (
        MAEConfig("vit_base_patch16_tubelet2"),
        MAEConfig(
            "vit_small_patch16_tubelet2", width=384, heads=6, decoder_width=192, decoder_heads=3
        ),
        # For tests and the CPU config: 4 frames of 32 x 32, 2 x 4 x 4 tokens.
        MAEConfig(
            "vit_tiny_patch8_tubelet2_32px",
            grid=TokenGrid(4, 32, 32, 8, 2),
            width=64,
            depth=2,
            heads=2,
            decoder_width=32,
            decoder_depth=1,
            decoder_heads=2,
        ),
        # The CPU experiments: 8 frames of 64 x 64, 4 x 8 x 8 tokens.
        MAEConfig(
            "vit_tiny_patch8_tubelet2_64px",
            grid=TokenGrid(8, 64, 64, 8, 2),
            width=96,
            depth=3,
            heads=3,
            decoder_width=48,
            decoder_depth=1,
            decoder_heads=3,
        ),
    )
}


def config(name: str, **changes) -> MAEConfig:
    try:
        return replace(CONFIGS[name], **changes)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(CONFIGS)}") from None


def sinusoid_positions(count: int, width: int) -> torch.Tensor:
    """Fixed positions (count, width): sin on even, cos on odd channels, Transformer-style;
    computed in float64 throughout, so the table is VideoMAE's to float32 rounding (its released
    weights were trained with it)."""
    position = torch.arange(count, dtype=torch.float64)[:, None]
    exponents = 2 * (torch.arange(width, dtype=torch.float64) // 2) / width
    rates = torch.pow(10_000.0, -exponents)
    angles = position * rates
    table = torch.where(torch.arange(width) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _blocks(width: int, depth: int, heads: int, mlp_ratio: float, drop_path: float):
    rates = torch.linspace(0, drop_path, depth).tolist()  # deeper blocks drop more
    return nn.ModuleList(Block(width, heads, mlp_ratio, r) for r in rates)


class VideoEncoder(nn.Module):
    """The ViT over tubelet tokens, shared by pretraining (visible tokens only) and finetuning
    (every token): ``forward_features(video, mask=None)`` → (B, N_kept, width)."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.grid
        kernel = (g.tubelet, g.patch, g.patch)
        self.patch_embed = nn.Conv3d(cfg.channels, cfg.width, kernel_size=kernel, stride=kernel)
        self.register_buffer("pos", sinusoid_positions(g.tokens, cfg.width), persistent=False)
        self.blocks = _blocks(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.drop_path)
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6) if cfg.token_norm else nn.Identity()
        self.apply(_init)

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) → (B, N, width) with positions."""
        x = self.patch_embed(video).flatten(2).transpose(1, 2)
        return x + self.pos.to(x.dtype)

    def forward_features(
        self, video: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encodings of every token, or of the visible ones when ``mask`` (B, N; True = hidden)
        is given; every sample must hide the same number (the masking makes sure of it)."""
        x = self.tokens(video)  # (B, N, D)
        if mask is not None:
            b, _, d = x.shape
            x = x[~mask].reshape(b, -1, d)  # (B, N_visible, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    forward = forward_features


class VideoMAE(nn.Module):
    """Encoder + decoder + loss; ``forward(video, mask)`` → (loss, predictions of hidden tokens)."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.grid
        self.encoder = VideoEncoder(cfg)
        self.to_decoder = nn.Linear(cfg.width, cfg.decoder_width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_width))
        self.register_buffer(
            "decoder_pos", sinusoid_positions(g.tokens, cfg.decoder_width), persistent=False
        )
        self.decoder_blocks = _blocks(
            cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads, cfg.mlp_ratio, 0.0
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_width, eps=1e-6)
        self.head = nn.Linear(cfg.decoder_width, self.pixels_per_token)
        self.apply(_init)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay besides biases and norms (timm's convention)."""
        return {"mask_token"}

    @property
    def pixels_per_token(self) -> int:
        g = self.cfg.grid
        return g.tubelet * g.patch * g.patch * self.cfg.channels

    def encode(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The visible tokens' encodings: (B, N_visible, width)."""
        return self.encoder.forward_features(video, mask)

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``video`` (B, C, T, H, W) normalised input, ``mask`` (B, N) bool (True = hidden) →
        (loss, predictions (B, N_hidden, pixels_per_token))."""
        if mask.shape != (video.shape[0], self.cfg.grid.tokens):
            raise ValueError(f"mask must be (B, {self.cfg.grid.tokens}), got {tuple(mask.shape)}")
        visible = self.encode(video, mask)
        b = video.shape[0]
        x = self.to_decoder(visible)
        pos = self.decoder_pos.to(x.dtype).expand(b, -1, -1)
        d = x.shape[-1]
        # Visible tokens first, then one mask token per hidden position, each with its position.
        shown = x + pos[~mask].reshape(b, -1, d)
        x = torch.cat([shown, self.mask_token.to(x.dtype) + pos[mask].reshape(b, -1, d)], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        hidden = mask.shape[1] - visible.shape[1]  # from shapes: no wait for the device
        pred = self.head(self.decoder_norm(x[:, -hidden:]))
        target = self.targets(video)[mask].reshape(b, hidden, -1)
        return F.mse_loss(pred.float(), target.float()), pred

    def targets(self, video: torch.Tensor) -> torch.Tensor:
        """Each token's pixels normalised over its tubelet per channel: (B, N, pixels_per_token).

        Per-tubelet normalisation ignores any per-channel scale and shift, so the normalised
        model input gives the same targets as raw pixels.
        """
        x = patchify(video.float(), self.cfg.grid)  # (B, N, pixels, C)
        if not self.cfg.norm_targets:
            return x.flatten(2)
        mean = x.mean(dim=-2, keepdim=True)
        std = x.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        return ((x - mean) / (std + TARGET_EPS)).flatten(2)


def patchify(video: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """Clips as tokens: (B, C, T, H, W) → (B, N, tubelet · patch², C); tokens in the order of the
    patch embedding (T', H', W'), pixels within one by tubelet frame, row, column."""
    b, c = video.shape[:2]
    t, h, w = grid.shape
    x = video.reshape(b, c, t, grid.tubelet, h, grid.patch, w, grid.patch)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, t * h * w, -1, c)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv3d):  # like a linear layer over the flattened tubelet
        nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
        nn.init.zeros_(module.bias)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
