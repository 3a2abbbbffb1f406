"""A decoder-only transformer over the 310-token event vocabulary, with relative positions and a KV cache.

Positions enter only through rotary embeddings (RoPE) on queries and keys, so an attention score
depends on the distance between two tokens, not on where they sit: the relative-position property
Music Transformer and Transformer-XL are built on. That is also what lets generation keep a sliding
KV cache: dropping the oldest cached keys changes nothing for the ones kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.music_transformer.tokens import PAD, VOCAB_SIZE

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Config:
    vocab_size: int = VOCAB_SIZE
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 256  # the training window (~14 s of a chorale); generation slides a cache of this length
    dropout: float = 0.1

    @classmethod
    def tiny(cls) -> Config:
        """For tests: trains and generates in seconds."""
        return cls(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64, dropout=0.0)


def rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels by angles proportional to position.

    x is [B, H, T, D]; positions is [T] (every row alike) or [B, T] (a batch of sequences at different points).
    """
    half = x.shape[-1] // 2
    inv_freq = 10_000 ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = positions.to(torch.float32)[..., None] * inv_freq
    if angles.dim() == 3:
        angles = angles[:, None]  # [B, 1, T, half]: the same angles for every head
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, positions), rotary(k, positions)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # with a cache, the new queries are the last t positions: causal within them, all of the past
        causal = t > 1
        if causal and past is not None:
            offset = k.shape[2] - t
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, t, d)), (k, v)

    def step(self, x: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """One new token per row (x [B, 1, d]) at its own position [B], written into the rows' caches.

        keys/values are [B, H, W, D] views of a SlotCache layer; row b attends to its first positions[b] + 1 slots.
        """
        b, _, d = x.shape
        q, k, v = self.qkv(x).view(b, 1, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, positions[:, None]), rotary(k, positions[:, None])
        rows = torch.arange(b)
        keys[rows, :, positions] = k[:, :, 0]
        values[rows, :, positions] = v[:, :, 0]
        span = int(positions.max()) + 1
        mask = torch.arange(span)[None, :] <= positions[:, None]
        y = F.scaled_dot_product_attention(q, keys[:, :, :span], values[:, :, :span], attn_mask=mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(b, 1, d))


class Block(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, positions, past):
        a, kv = self.attn(self.norm1(x), positions, past)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm2(x))), kv

    def step(self, x, positions, keys, values):
        x = x + self.attn.step(self.norm1(x), positions, keys, values)
        return x + self.ff(self.norm2(x))


class MusicTransformer(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied input/output embeddings
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self, tokens: torch.Tensor, start: int = 0, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits for every position of tokens [B, T] that begin at absolute position `start`."""
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, positions, cache[i] if cache else None)
            new_cache.append(kv)
        return self.head(self.norm(x)), new_cache


class SlotCache:
    """Keys and values of up to `slots` sequences side by side, so one forward moves them all a token on.

    Rows 0..n-1 hold the n active sequences (a finished one's row is refilled by moving the last row
    into it), so every step works on views and never gathers. lengths[r] is how many positions row r holds.
    """

    def __init__(self, cfg: Config, slots: int) -> None:
        shape = (slots, cfg.n_heads, cfg.max_len, cfg.d_model // cfg.n_heads)
        self.keys = [torch.zeros(shape) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(shape) for _ in range(cfg.n_layers)]
        self.lengths = torch.zeros(slots, dtype=torch.long)

    def put(self, row: int, cache: KVCache) -> None:
        """Row `row` takes the cache of one sequence from a prefill (MusicTransformer.forward, batch of 1)."""
        n = cache[0][0].shape[2]
        for layer, (k, v) in enumerate(cache):
            self.keys[layer][row, :, :n] = k[0]
            self.values[layer][row, :, :n] = v[0]
        self.lengths[row] = n

    def move(self, source: int, target: int) -> None:
        n = int(self.lengths[source])
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :n] = keys[source, :, :n]
            values[target, :, :n] = values[source, :, :n]
        self.lengths[target] = n


def step_rows(model: MusicTransformer, tokens: torch.Tensor, cache: SlotCache) -> torch.Tensor:
    """Logits [n, V] after feeding tokens [n] to rows 0..n-1 of the cache, each at its own next position."""
    n = tokens.shape[0]
    positions = cache.lengths[:n].clone()
    x = model.embed(tokens[:, None]) * math.sqrt(model.cfg.d_model)
    for layer, block in enumerate(model.blocks):
        x = block.step(x, positions, cache.keys[layer][:n], cache.values[layer][:n])
    cache.lengths[:n] += 1
    return model.head(model.norm(x))[:, 0]


def nll(
    model: MusicTransformer, batch: torch.Tensor, score_from: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL (nats) of batch [B, T], and the count of targets scored.

    PAD targets are skipped, and so are the first score_from[b] targets of row b (context only).
    """
    logits, _ = model(batch[:, :-1])
    targets = batch[:, 1:]
    if score_from is not None:
        positions = torch.arange(targets.shape[1], device=targets.device)
        context = positions[None, :] < score_from[:, None].to(targets.device)
        targets = targets.masked_fill(context, PAD)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD, reduction="sum")
    return loss, int((targets != PAD).sum())


def save(model: MusicTransformer, path: Path, extra: dict | None = None) -> None:
    """Weights + config in one file (torch.save of plain tensors and a dict)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k != "head.weight"}
    torch.save({"config": asdict(model.cfg), "state": state, **(extra or {})}, path)


def load(path: Path) -> MusicTransformer:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = MusicTransformer(Config(**blob["config"]))
    missing, unexpected = model.load_state_dict(blob["state"], strict=False)
    if unexpected or set(missing) != {"head.weight"}:  # the head is tied to the embedding, so it is not stored
        raise ValueError(f"{path}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
    return model.eval()
