"""`sagestack music train` / `evaluate`: train on the chorales, report NLL in nats/token.

Each epoch re-augments every training chorale (transpose +-3, stretch 0.95-1.05), encodes it with a
leading <S>, and concatenates the pieces into one stream (Transformer-XL's setting) that steps sample
random windows from. Validation and test streams are unaugmented and scored with half-overlapping
windows, so every scored token sees at least max_len/2 tokens of context. <S> itself is not scored.
Training checkpoints every --eval-every steps (model, optimizer, step, RNG) and `--resume` picks up
from the checkpoint; the best validation model is exported for serving.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from models.music_transformer import data
from models.music_transformer.model import Config, MusicTransformer, load, nll, save
from models.music_transformer.tokens import PAD, START, encode


def stream(pieces: list[list], rng: random.Random | None = None) -> torch.Tensor:
    """Pieces (note lists) -> one token stream, each piece starting with <S>; augmented when rng is given."""
    tokens: list[int] = []
    for notes in pieces:
        if rng is not None:
            notes = data.augment(notes, *data.random_augmentation(rng))
        tokens += encode(notes)
    return torch.tensor(tokens, dtype=torch.long)


def windows(tokens: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-overlapping windows of length+1 covering the stream, and where scoring starts in each."""
    starts = list(range(0, max(1, len(tokens) - length), length // 2))
    if starts[-1] + length + 1 < len(tokens):
        starts.append(len(tokens) - length - 1)
    rows, score_from = [], []
    scored_up_to = 0  # stream index of the last target already scored
    for s in starts:
        row = tokens[s : s + length + 1]
        row = torch.cat([row, torch.full((length + 1 - len(row),), PAD, dtype=torch.long)])
        rows.append(row)
        score_from.append(max(0, scored_up_to - s))
        scored_up_to = s + length
    return torch.stack(rows), torch.tensor(score_from)


@torch.no_grad()
def evaluate_stream(model: MusicTransformer, tokens: torch.Tensor, batch: int = 16) -> tuple[float, int]:
    """Mean NLL (nats/token) over the stream's event tokens, and how many were scored."""
    model.eval()
    rows, score_from = windows(tokens, model.cfg.max_len)
    rows = rows.clone()
    rows[:, 1:][rows[:, 1:] == START] = PAD  # <S> marks piece boundaries; it is not a musical event
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(rows), batch):
        loss, n = nll(model, rows[i : i + batch].to(device), score_from[i : i + batch])
        total, count = total + float(loss), count + n
    return total / max(count, 1), count


def split_pieces(limit: int | None, seed: int) -> dict[str, list[list]]:
    chorales = data.load_chorales(limit=limit)
    parts = data.split(list(chorales), seed=seed)
    return {k: [chorales[n] for n in names] for k, names in parts.items()}


def pick_device(name: str) -> torch.device:
    """`auto`: the GPU where one is lent, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.tiny() if args.config == "tiny" else Config()
    pieces = split_pieces(args.limit, args.seed)
    rng = random.Random(args.seed)
    device = pick_device(args.device)
    model = MusicTransformer(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    ckpt_path = args.out / "checkpoint.pt"
    step, best_val, history = 0, float("inf"), []
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, best_val, history = ckpt["step"], ckpt["best_val"], ckpt["history"]
        rng.setstate(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        print(f"[music] resumed at step {step} (best val NLL {best_val:.4f})", file=sys.stderr)
    val_stream = stream(pieces["validation"])
    train_tokens = stream(pieces["train"], rng)
    print(
        f"[music] {len(pieces['train'])}/{len(pieces['validation'])}/{len(pieces['test'])} chorales, "
        f"~{len(train_tokens)} train tokens an epoch, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params"
        f" on {device}",
        file=sys.stderr,
    )
    started, tokens_seen, length = time.monotonic(), 0, cfg.max_len
    next_augmentation = len(train_tokens)
    while step < args.steps:
        model.train()
        if tokens_seen >= next_augmentation:  # a fresh augmentation every epoch's worth of tokens
            train_tokens = stream(pieces["train"], rng)
            next_augmentation += len(train_tokens)
        offsets = [rng.randrange(0, max(1, len(train_tokens) - length - 1)) for _ in range(args.batch)]
        batch = torch.stack([train_tokens[o : o + length + 1] for o in offsets]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        loss, n = nll(model, batch)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += n
        if step % 10 == 0 or step == args.steps:
            rate = tokens_seen / (time.monotonic() - started)
            eta = (args.steps - step) * args.batch * length / rate
            print(
                f"\r[music] step {step}/{args.steps} loss {loss.item() / n:.3f} "
                f"{rate:,.0f} tok/s eta {eta / 60:.1f} min",
                end="",
                file=sys.stderr,
                flush=True,
            )
        if step % args.eval_every == 0 or step == args.steps:
            val, _ = evaluate_stream(model, val_stream)
            history.append({"step": step, "train_loss": loss.item() / n, "val_nll": val})
            print(f"\n[music] step {step}: val NLL {val:.4f} nats/token", file=sys.stderr)
            if val < best_val:
                best_val = val
                save(model, args.out / "best.pt", {"step": step, "seed": args.seed})
            args.out.mkdir(parents=True, exist_ok=True)
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best_val": best_val}
            state |= {"history": history, "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}
            torch.save(state, ckpt_path)
    best = load(args.out / "best.pt")
    save(best, args.export, {"seed": args.seed, "steps": args.steps, "command": " ".join(sys.argv)})
    metrics = evaluate(best, pieces)
    metrics["history"] = history
    metrics["config"] = asdict(cfg)
    (args.out / "train.json").write_text(json.dumps(metrics, indent=1))
    print(f"[music] exported {args.export}: {json.dumps({k: metrics[k] for k in ('val_nll', 'test_nll')})}")
    return metrics


def evaluate(model: MusicTransformer, pieces: dict[str, list[list]]) -> dict:
    val, n_val = evaluate_stream(model, stream(pieces["validation"]))
    test, n_test = evaluate_stream(model, stream(pieces["test"]))
    return {"val_nll": round(val, 4), "test_nll": round(test, 4), "n_val_tokens": n_val, "n_test_tokens": n_test}


def run_evaluate(weights: Path, out: Path, limit: int | None = None, seed: int = 0) -> dict:
    """Recompute the shipped model's NLL on the held-out chorales and write metrics.json."""
    metrics = evaluate(load(weights), split_pieces(limit, seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=1))
    return metrics
