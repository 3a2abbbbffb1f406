"""YOLOv4 (CSPDarknet53 with Mish, SPP, PAN, three YOLO heads) in PyTorch, built from a Darknet cfg.

`yolov4_cfg()` writes the network as Darknet's yolov4.cfg lays it out (162 layers, the same order
of [convolutional] blocks), so `Darknet` modules built from it take the published .weights through
models/yolov4/darknet.py. `width` scales every channel count (except the heads' outputs) for the
reduced configurations that tests and quick benchmarks use; the layer structure stays the same.

The forward pass returns decoded detections, [batch, boxes, 4 + 1 + classes]: x1, y1, x2, y2 in
input pixels, objectness, and per-class probabilities; `Candidates` (what is served) reduces each box to its
best class and score. Thresholds and NMS happen outside (boxes.py).
"""

from __future__ import annotations

import torch
from torch import nn

from models.yolov4 import darknet

ANCHORS = [(12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401)]
HEADS = [((0, 1, 2), 1.2), ((3, 4, 5), 1.1), ((6, 7, 8), 1.05)]  # anchor masks and scale_x_y per head


class _Cfg:
    """Appends Darknet blocks and returns their absolute layer index; routes are written relative."""

    def __init__(self, width: float, classes: int, size: int) -> None:
        self.width, self.classes = width, classes
        self.lines = [f"[net]\nwidth={size}\nheight={size}\nchannels=3\n"]
        self.count = 0

    def _add(self, text: str) -> int:
        self.lines.append(text)
        self.count += 1
        return self.count - 1

    def conv(self, filters: int, size: int, stride: int = 1, act: str = "mish", scale: bool = True) -> int:
        n = max(8, round(filters * self.width)) if scale else filters
        return self._add(
            f"[convolutional]\nbatch_normalize=1\nfilters={n}\nsize={size}\nstride={stride}\npad=1\nactivation={act}\n"
        )

    def head(self) -> int:
        n = 3 * (5 + self.classes)
        return self._add(f"[convolutional]\nsize=1\nstride=1\npad=1\nfilters={n}\nactivation=linear\n")

    def route(self, *layers: int) -> int:
        here = self.count
        return self._add("[route]\nlayers=" + ",".join(str(x - here) for x in layers) + "\n")

    def shortcut(self, frm: int) -> int:
        return self._add(f"[shortcut]\nfrom={frm - self.count}\nactivation=linear\n")

    def maxpool(self, size: int) -> int:
        return self._add(f"[maxpool]\nstride=1\nsize={size}\n")

    def upsample(self) -> int:
        return self._add("[upsample]\nstride=2\n")

    def yolo(self, mask: tuple[int, ...], scale_xy: float) -> int:
        anchors = ", ".join(f"{w},{h}" for w, h in ANCHORS)
        return self._add(
            f"[yolo]\nmask={','.join(map(str, mask))}\nanchors={anchors}\nclasses={self.classes}\n"
            f"num=9\nscale_x_y={scale_xy}\n"
        )

    def csp_stage(self, filters: int, blocks: int, first: bool) -> int:
        """A CSPDarknet53 stage: downsample, split, residual blocks on one half, merge."""
        half = filters if first else filters // 2
        self.conv(filters, 3, 2)
        part_a = self.conv(half, 1)
        self.route(part_a - 1)
        x = self.conv(half, 1)
        for _ in range(blocks):
            self.conv(filters // 2 if first else half, 1)
            self.conv(half, 3)
            x = self.shortcut(x)
        x = self.conv(half, 1)
        self.route(x, part_a)
        return self.conv(filters, 1)

    def text(self) -> str:
        return "\n".join(self.lines)


def yolov4_cfg(classes: int = 80, width: float = 1.0, size: int = 416) -> str:
    c = _Cfg(width, classes, size)
    c.conv(32, 3)
    c.csp_stage(64, 1, first=True)
    c.csp_stage(128, 2, first=False)
    p3 = c.csp_stage(256, 8, first=False)
    p4 = c.csp_stage(512, 8, first=False)
    c.csp_stage(1024, 4, first=False)
    c.conv(512, 1, act="leaky")
    c.conv(1024, 3, act="leaky")
    spp_in = c.conv(512, 1, act="leaky")
    m5 = c.maxpool(5)
    c.route(spp_in)
    m9 = c.maxpool(9)
    c.route(spp_in)
    m13 = c.maxpool(13)
    c.route(m13, m9, m5, spp_in)
    c.conv(512, 1, act="leaky")
    c.conv(1024, 3, act="leaky")
    n5 = c.conv(512, 1, act="leaky")
    n4 = _up_merge(c, 256, p4)  # top-down path (PAN)
    n3 = _up_merge(c, 128, p3)
    _detect(c, 256, 0)  # stride 8
    n4 = _down_merge(c, n3, 256, n4)  # bottom-up path
    _detect(c, 512, 1)  # stride 16
    _down_merge(c, n4, 512, n5)
    _detect(c, 1024, 2)  # stride 32
    return c.text()


def _up_merge(c: _Cfg, filters: int, skip: int) -> int:
    """Upsample, merge with the backbone's lateral branch (Darknet's order: lateral first), five convs."""
    c.conv(filters, 1, act="leaky")
    up = c.upsample()
    c.route(skip)
    lateral = c.conv(filters, 1, act="leaky")
    c.route(lateral, up)
    return _five(c, filters)


def _down_merge(c: _Cfg, source: int, filters: int, lateral: int) -> int:
    """Downsample `source` with a strided conv, merge with the top-down feature, five convs."""
    c.route(source)
    down = c.conv(filters, 3, 2, act="leaky")
    c.route(down, lateral)
    return _five(c, filters)


def _detect(c: _Cfg, filters: int, head: int) -> None:
    c.conv(filters, 3, act="leaky")
    c.head()
    c.yolo(*HEADS[head])


def _five(c: _Cfg, filters: int) -> int:
    """The PAN's 1x1 / 3x3 / 1x1 / 3x3 / 1x1 stack; returns the last layer."""
    for _ in range(2):
        c.conv(filters, 1, act="leaky")
        c.conv(filters * 2, 3, act="leaky")
    return c.conv(filters, 1, act="leaky")


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(nn.functional.softplus(x))


class YoloLayer(nn.Module):
    def __init__(self, anchors: list[tuple[float, float]], classes: int, scale_xy: float, input_size: int) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(1, -1, 1, 1, 2))
        self.classes, self.scale_xy, self.input_size = classes, scale_xy, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = self.anchors.shape[1]
        p = x.view(b, n, 5 + self.classes, h, w).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        stride = self.input_size / w
        xy = torch.sigmoid(p[..., 0:2]) * self.scale_xy - 0.5 * (self.scale_xy - 1)
        cx = (xy[..., 0] + gx) * stride
        cy = (xy[..., 1] + gy) * stride
        wh = torch.exp(p[..., 2:4]) * self.anchors
        boxes = torch.stack([cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], -1)
        scores = torch.sigmoid(p[..., 4:])
        return torch.cat([boxes, scores], -1).reshape(b, -1, 5 + self.classes)


class Darknet(nn.Module):
    """A network from Darknet cfg sections; convolutions in cfg order (for .weights)."""

    def __init__(self, cfg_text: str) -> None:
        super().__init__()
        sections = darknet.parse_cfg(cfg_text)
        net = sections[0]
        self.input_size = int(net.get("width", 416))
        self.specs = darknet.conv_specs(sections)
        self.blocks = sections[1:]
        specs = iter(self.specs)
        layers = []
        for block in self.blocks:
            kind = block["type"]
            if kind == "convolutional":
                spec = next(specs)
                stride = int(block.get("stride", 1))
                pad = spec.size // 2 if block.get("pad") == "1" else 0
                seq = nn.Sequential()
                seq.add_module("conv", nn.Conv2d(spec.in_channels, spec.filters, spec.size, stride, pad,
                                                 groups=spec.groups, bias=not spec.batch_normalize))  # fmt: skip
                if spec.batch_normalize:
                    seq.add_module("bn", nn.BatchNorm2d(spec.filters, eps=1e-5, momentum=0.01))
                act = block.get("activation", "linear")
                if act == "mish":
                    seq.add_module("act", Mish())
                elif act == "leaky":
                    seq.add_module("act", nn.LeakyReLU(0.1))
                layers.append(seq)
            elif kind == "maxpool":
                size = int(block["size"])
                layers.append(nn.MaxPool2d(size, int(block.get("stride", 1)), (size - 1) // 2))
            elif kind == "upsample":
                layers.append(nn.Upsample(scale_factor=int(block["stride"]), mode="nearest"))
            elif kind == "yolo":
                mask = [int(v) for v in block["mask"].split(",")]
                flat = [float(v) for v in block["anchors"].split(",")]
                pairs = [(flat[2 * i], flat[2 * i + 1]) for i in mask]
                layers.append(
                    YoloLayer(pairs, int(block["classes"]), float(block.get("scale_x_y", 1)), self.input_size)
                )
            else:
                layers.append(nn.Identity())
        self.layers = nn.ModuleList(layers)
        self.routes = [
            [int(v) if int(v) >= 0 else i + int(v) for v in b["layers"].split(",")] if b["type"] == "route" else []
            for i, b in enumerate(self.blocks)
        ]
        # A route with groups=G, group_id=K passes on the K-th of G channel slices (yolov4-tiny's CSP splits).
        self.route_groups = [(int(b.get("groups", 1)), int(b.get("group_id", 0))) for b in self.blocks]
        self.shortcuts = [i + int(b["from"]) if b["type"] == "shortcut" else -1 for i, b in enumerate(self.blocks)]
        self.kinds = [b["type"] for b in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        detections = []
        for i, layer in enumerate(self.layers):
            kind = self.kinds[i]
            if kind == "route":
                x = torch.cat([outputs[j] for j in self.routes[i]], 1)
                groups, group_id = self.route_groups[i]
                if groups > 1:
                    x = x.chunk(groups, 1)[group_id]
            elif kind == "shortcut":
                x = x + outputs[self.shortcuts[i]]
            elif kind == "yolo":
                detections.append(layer(x))
            else:
                x = layer(x)
            outputs.append(x)
        return torch.cat(detections, 1)

    def load_darknet(self, blocks: list[dict]) -> None:
        """Copy .weights blocks (darknet.read_weights) into the convolutions, in cfg order."""
        convs = [m for m in self.layers if isinstance(m, nn.Sequential)]
        if len(blocks) != len(convs):
            raise darknet.DarknetError(f"{len(blocks)} weight blocks for {len(convs)} convolutions")
        with torch.no_grad():
            for seq, block in zip(convs, blocks, strict=True):
                seq.conv.weight.copy_(torch.from_numpy(block["weights"]))
                if hasattr(seq, "bn"):
                    seq.bn.bias.copy_(torch.from_numpy(block["bias"]))
                    seq.bn.weight.copy_(torch.from_numpy(block["scale"]))
                    seq.bn.running_mean.copy_(torch.from_numpy(block["mean"]))
                    seq.bn.running_var.copy_(torch.from_numpy(block["var"]))
                else:
                    seq.conv.bias.copy_(torch.from_numpy(block["bias"]))

    def darknet_blocks(self) -> list[dict]:
        """The inverse of load_darknet, for writing .weights."""
        blocks = []
        for seq in (m for m in self.layers if isinstance(m, nn.Sequential)):
            block = {"weights": seq.conv.weight.detach().numpy()}
            if hasattr(seq, "bn"):
                block |= {
                    "bias": seq.bn.bias.detach().numpy(),
                    "scale": seq.bn.weight.detach().numpy(),
                    "mean": seq.bn.running_mean.numpy(),
                    "var": seq.bn.running_var.numpy(),
                }
            else:
                block["bias"] = seq.conv.bias.detach().numpy()
            blocks.append(block)
        return blocks


def yolov4_tiny_cfg(classes: int = 80, size: int = 416) -> str:
    """Darknet's yolov4-tiny.cfg: 21 convolutions, CSP splits by grouped routes, heads at strides 32 and 16."""

    def conv(filters: int, size_: int = 3, stride: int = 1) -> str:
        shape = f"filters={filters}\nsize={size_}\nstride={stride}\npad=1"
        return f"[convolutional]\nbatch_normalize=1\n{shape}\nactivation=leaky\n"

    def csp(filters: int) -> list[str]:
        half = filters // 2
        return [conv(filters), "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", conv(half), conv(half),
                "[route]\nlayers=-1,-2\n", conv(filters, 1), "[route]\nlayers=-6,-1\n",
                "[maxpool]\nsize=2\nstride=2\n"]  # fmt: skip

    head = f"[convolutional]\nsize=1\nstride=1\npad=1\nfilters={3 * (5 + classes)}\nactivation=linear\n"
    anchors = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"
    yolo = f"[yolo]\nmask={{}}\nanchors={anchors}\nclasses={classes}\nnum=6\nscale_x_y=1.05\n"
    blocks = [f"[net]\nwidth={size}\nheight={size}\nchannels=3\n", conv(32, stride=2), conv(64, stride=2)]
    blocks += [*csp(64), *csp(128), *csp(256), conv(512), conv(256, 1), conv(512), head, yolo.format("3,4,5")]
    blocks += ["[route]\nlayers=-4\n", conv(128, 1), "[upsample]\nstride=2\n", "[route]\nlayers=-1,23\n", conv(256)]
    blocks += [head, yolo.format("1,2,3")]
    return "\n".join(blocks)


ARCHS = {"yolov4": yolov4_cfg, "yolov4-tiny": yolov4_tiny_cfg}


def build(classes: int = 80, width: float = 1.0, size: int = 416, seed: int = 0, arch: str = "yolov4") -> Darknet:
    """YOLOv4 (or yolov4-tiny, whose widths are fixed) with fixed-seed random weights (none can be downloaded)."""
    torch.manual_seed(seed)
    cfg = yolov4_cfg(classes, width, size) if arch == "yolov4" else ARCHS[arch](classes, size)
    return Darknet(cfg).eval()


class Candidates(nn.Module):
    """The served graph: the network, then each box's best class and its score (objectness x class
    probability), so a runtime returns [batch, boxes, 6] = x1, y1, x2, y2, score, class instead of
    [batch, boxes, 85]: 14x fewer floats over gRPC and no per-class arrays in the handler. The rows keep the
    network's order, so every backend's output lines up row by row with the reference (a top-k would let
    tied scores come out in a backend-chosen order). Thresholds and NMS stay in the handler."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        prob, cls = out[..., 5:].max(-1)
        return torch.cat([out[..., :4], (out[..., 4] * prob)[..., None], cls[..., None].to(out.dtype)], -1)
