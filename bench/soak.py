"""`sagestack bench soak --minutes N`: a mixed load over every model for N minutes, memory sampled each second.

The stack runs at SageMaker's defaults over the model directory (`make models`). Client threads cycle through
a mix: JSON and CSV batches, small and large images to yolov4 and anomaly, MIDI extensions, and bad inputs (malformed
JSON, truncated images, image bombs, garbage MIDI). A sampler records RSS (and PSS where readable) of every
stack process once a second. The report gives each process's growth from the end of warm-up (the first fifth,
at least a minute) to the end, as medians over a minute, and the status codes seen; JSON and a PNG of memory
over time go to --out.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

from bench import payloads
from bench.procstats import sample
from bench.stack import start_stack

WINDOW_S = 60.0


def request_mix(model_dir: Path) -> list[tuple[str, bytes, dict[str, str]]]:
    """(name, body, headers) for every kind of request the soak sends, good and bad (to the models there)."""
    from PIL import Image

    def attrs(model: str, extra: str = "") -> dict[str, str]:
        return {"X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name={model}{extra}"}

    big = io.BytesIO()
    ramp = np.linspace(0, 200, 4000, dtype=np.float32)[None, :, None] + np.zeros((3000, 1, 3), np.float32)
    noisy = ramp + np.random.default_rng(0).normal(0, 8, ramp.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(big, format="JPEG", quality=80)  # 12 Mpx, < 6 MB
    served = [n for n in payloads.PAYLOADS if (model_dir / n).is_dir()]
    mix = [(name, p.body, p.headers) for name, p in ((n, payloads.payload(n)) for n in served)]
    music = payloads.payload("music_transformer")
    mix[[m[0] for m in mix].index("music_transformer")] = (
        "music_transformer", music.body,
        {**music.headers, **attrs("music_transformer", ",extension_duration=2")},
    )  # fmt: skip
    from models.credit_risk.data import load

    csv_batch = load().drop(columns=["risk"]).head(200).to_csv(index=False).encode()
    mix += [
        ("yolov4_12mpx", big.getvalue(), {"Content-Type": "image/jpeg", **attrs("yolov4")}),
        ("credit_risk_batch", csv_batch, {"Content-Type": "text/csv", **attrs("credit_risk")}),
        ("bad_json", b'{"instances": [1.0,', {"Content-Type": "application/json", **attrs("half_plus_three")}),
        ("bad_image", payloads.payload("anomaly").body[:300], {"Content-Type": "image/png", **attrs("anomaly")}),
        ("image_bomb", payloads.image_bomb(30000, 30000), {"Content-Type": "image/png", **attrs("yolov4")}),
        ("bad_midi", b"MThd\x00\x00\x00\x06junk", {"Content-Type": "audio/midi", **attrs("music_transformer")}),
    ]
    return mix


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    seconds = args.minutes * 60
    warmup = max(seconds / 5, WINDOW_S)
    mix = request_mix(args.model_dir)
    stack = start_stack(args.model_dir, Path(tempfile.mkdtemp(prefix="sagestack-soak-")),
                        SAGESTACK_ACCESS_LOG="off")  # fmt: skip
    root = psutil.Process(stack.proc.pid)
    stop = threading.Event()
    codes: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []

    def client(offset: int) -> None:
        session = requests.Session()
        for name, body, headers in itertools.islice(itertools.cycle(mix), offset, None):
            if stop.is_set():
                return
            try:
                r = session.post(stack.url + "/invocations", data=body, headers=headers, timeout=120)
                codes[f"{name} {r.status_code}"] += 1
            except requests.RequestException as exc:
                codes[f"{name} {type(exc).__name__}"] += 1

    threads = [threading.Thread(target=client, args=(i * 3,), daemon=True) for i in range(args.clients)]
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        columns = (TextColumn("soak"), BarColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn())
        with Progress(*columns) as progress:
            task = progress.add_task("soak", total=seconds, status="")
            while (elapsed := time.monotonic() - started) < seconds:
                samples.append({"t": round(elapsed, 1), "processes": sample(root)})
                total = sum(p["rss_mb"] for p in samples[-1]["processes"].values())
                progress.update(task, completed=elapsed, status=f"{sum(codes.values())} requests, RSS {total:.0f} MB")
                time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
        stack.stop()
    report = summarize(samples, codes, warmup, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({"growth_percent": report["growth_percent"], "five_xx": report["five_xx"]}, indent=1))
    return 0


def summarize(samples: list[dict[str, Any]], codes: Counter[str], warmup: float, args: argparse.Namespace) -> dict:
    names = sorted({name for s in samples for name in s["processes"]})

    def window(name: str, lo: float, hi: float) -> float | None:
        values = [s["processes"][name]["rss_mb"] for s in samples if lo <= s["t"] < hi and name in s["processes"]]
        return statistics.median(values) if values else None

    end = samples[-1]["t"] if samples else 0.0
    growth = {}
    for name in names:
        after_warmup, last = window(name, warmup, warmup + WINDOW_S), window(name, end - WINDOW_S, end + 1)
        if after_warmup and last:
            growth[name] = round(100 * (last - after_warmup) / after_warmup, 2)
    five_xx = {k: v for k, v in codes.items() if k.rsplit(" ", 1)[1].startswith("5")}
    return {
        "settings": {
            "minutes": args.minutes,
            "clients": args.clients,
            "warmup_s": warmup,
            "window_s": WINDOW_S,
            "stack": "SageMaker defaults (1 gevent worker, 1 instance a model), access log off",
        },
        "requests": dict(sorted(codes.items())),
        "five_xx": five_xx,
        "growth_percent": growth,
        "samples": samples,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    samples = report["samples"]
    for name in sorted(report["growth_percent"]):
        points = [(s["t"] / 60, s["processes"][name]["rss_mb"]) for s in samples if name in s["processes"]]
        ax.plot(*zip(*points, strict=True), label=f"{name} ({report['growth_percent'][name]:+.1f}%)", lw=1)
    ax.axvline(report["settings"]["warmup_s"] / 60, color="grey", ls=":", lw=1)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MB")
    ax.set_yscale("log")
    ax.set_title(f"soak: RSS per process (growth after warm-up), {sum(report['requests'].values())} requests")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
