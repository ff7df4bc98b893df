"""Knowledge distillation of the compressed model from the float model (needs PyTorch).

Optional: nothing else in the project imports this module unless PyTorch is installed.

The student is the float model with every convolution's weight ``gain[o] * centroids[index]``
(the indices are fixed, so the sparsity pattern and the sharing stay those of the weight image)
and its own bias, and with every activation fake-quantised exactly like the integer model
(``round half up`` to the calibrated scale, clamped to ``0..top``, straight-through gradients).
:func:`distill` trains the shared centroids, the per-channel gains and the biases to match the
float model's class distribution (KL divergence at a temperature) on augmented calibration
images: random resized crops, flips, mild colour changes and mixes of two images, none of which
needs a label. Labels are never used, so the calibration images cannot leak into the result
through them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hw.config import AccelConfig

from .compress import LayerPlan, _act_scales, _steps
from .ir import Graph
from .preprocess import MEAN_BGR, resize_rgb

__all__ = ["TorchChain", "distill", "batch_logits", "augmented_batch", "DEFAULTS"]

DEFAULTS = {
    "steps": 150,
    "batch": 8,
    "lr": 1e-3,
    "temperature": 2.0,
    "mix": 0.5,
    "crop_scale": (0.35, 1.0),
    "train_centroids": True,
    "train_gain": True,
    "train_bias": True,
}


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, s, top):
        ctx.save_for_backward(y)
        ctx.hi = top * s
        return torch.clamp(torch.floor(y / s + 0.5), 0, top) * s

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * ((y >= 0) & (y <= ctx.hi)).to(g.dtype), None, None


class TorchChain(torch.nn.Module):
    """A lowered chain in PyTorch, batched (``[N, C, H, W]`` in, ``[N, classes]`` logits out).

    With ``plans`` the convolutions are the compressed student's (trainable centroids, gains,
    biases); without, the graph's own float weights (the teacher). ``act_scales`` (conv name ->
    (scale, top)) switches on the integer model's activation rounding.
    """

    def __init__(self, graph: Graph, plans: list[LayerPlan] | None = None,
                 act_scales: dict | None = None):
        super().__init__()
        self.steps = _steps(graph)
        self.act_scales = act_scales or {}
        self.cent = torch.nn.ParameterDict()
        self.gain = torch.nn.ParameterDict()
        self.bias = torch.nn.ParameterDict()
        self.fixed = {}
        self.index = {}
        self.key = {}
        by = {p.name: p for p in plans} if plans is not None else {}
        for _, convs in self.steps:
            for c in convs:
                key = c.name.replace("/", "__")
                self.key[c.name] = key
                if plans is None:
                    self.fixed[c.name] = (torch.from_numpy(np.asarray(c.params["W"], np.float32)),
                                          torch.from_numpy(np.asarray(c.params["B"], np.float32)))
                else:
                    p = by[c.name]
                    self.cent[key] = torch.nn.Parameter(
                        torch.tensor(p.centroids[1:], dtype=torch.float32))
                    self.gain[key] = torch.nn.Parameter(
                        torch.tensor(np.log(np.maximum(p.gain, 1e-12)), dtype=torch.float32))
                    self.bias[key] = torch.nn.Parameter(torch.tensor(p.bias, dtype=torch.float32))
                    self.index[c.name] = torch.from_numpy(p.indices.astype(np.int64))

    def weight(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name in self.fixed:
            return self.fixed[name]
        key = self.key[name]
        cb = torch.cat([torch.zeros(1), self.cent[key]])
        w = cb[self.index[name]] * torch.exp(self.gain[key])[:, None, None, None]
        return w, self.bias[key]

    def _conv(self, c, x):
        w, b = self.weight(c.name)
        t, left, bt, r = c.attrs["pads"]
        if (t, left) == (bt, r):
            y = F.conv2d(x, w, b, c.attrs["stride"], (t, left))
        else:
            y = F.conv2d(F.pad(x, (left, r, t, bt)), w, b, c.attrs["stride"])
        y = F.relu(y)
        if c.name in self.act_scales:
            s, top = self.act_scales[c.name]
            y = _FakeQuant.apply(y, float(s), float(top))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n, convs in self.steps:
            if n.op == "Conv":
                x = self._conv(n, x)
            elif n.op == "Fire":
                s = self._conv(convs[0], x)
                x = torch.cat([self._conv(convs[1], s), self._conv(convs[2], s)], 1)
            elif n.op == "MaxPool":
                k, st = n.attrs["kernel"], n.attrs["stride"]
                t, left, b, r = n.attrs["pads"]
                if any((t, left, b, r)):
                    x = F.pad(x, (left, r, t, b), value=-math.inf)
                x = F.max_pool2d(x, k, st, ceil_mode=bool(n.attrs["ceil_mode"]))
            elif n.op == "GlobalAveragePool":
                x = x.mean(dim=(2, 3))
        return x

    def to_plans(self, plans: list[LayerPlan]) -> list[LayerPlan]:
        """Copies of ``plans`` with the trained centroids, gains and biases."""
        out = []
        for p in plans:
            p = copy.copy(p)
            key = self.key[p.name]
            p.centroids = np.concatenate([[0.0], self.cent[key].detach().double().numpy()])
            p.gain = np.exp(self.gain[key].detach().double().numpy())
            p.bias = self.bias[key].detach().double().numpy()
            out.append(p)
        return out


def batch_logits(net: torch.nn.Module, images: Sequence[np.ndarray], batch: int = 25
                 ) -> np.ndarray:
    """Logits ``[N, classes]`` of preprocessed integer images ``[3, H, W]``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[i:i + batch]).astype(np.float32))
            out.append(net(x).numpy())
    return np.concatenate(out)


def _load_rgb(files: Sequence[Path], short: int = 320) -> list[np.ndarray]:
    out = []
    for f in files:
        img = Image.open(f)
        img = img.convert("RGB")
        w, h = img.size
        s = short / min(w, h)
        if s < 1:
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))),
                             Image.Resampling.BILINEAR)
        out.append(np.asarray(img, np.uint8))
    return out


def augmented_batch(rgbs: list[np.ndarray], rng: np.random.Generator, n: int,
                    size: tuple[int, int], crop_scale=(0.35, 1.0), mix: float = 0.5
                    ) -> np.ndarray:
    """``n`` augmented network inputs ``[n, 3, H, W]`` (float32, Caffe preprocessing):
    random resized crop, horizontal flip, brightness/contrast jitter, and with probability
    ``mix`` a blend with a second image."""

    def one():
        a = rgbs[int(rng.integers(len(rgbs)))]
        h, w = a.shape[:2]
        area = h * w * rng.uniform(*crop_scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch = int(min(h, round(math.sqrt(area / ratio))))
        cw = int(min(w, round(math.sqrt(area * ratio))))
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        crop = resize_rgb(Image.fromarray(a[y0:y0 + ch, x0:x0 + cw]), size).astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = (crop - crop.mean()) * rng.uniform(0.8, 1.2) + crop.mean() * rng.uniform(0.8, 1.2)
        return np.clip(crop, 0, 255)

    out = np.empty((n, 3, *size), np.float32)
    mean = np.array(MEAN_BGR, np.float32)[:, None, None]
    for i in range(n):
        img = one()
        if rng.random() < mix:
            lam = rng.uniform(0.3, 0.7)
            img = lam * img + (1 - lam) * one()
        # quantise to 8-bit pixels like a real image, then Caffe preprocessing
        img = np.floor(img + 0.5)
        out[i] = img[:, :, ::-1].transpose(2, 0, 1) - mean
    return out


def distill(graph: Graph, plans: list[LayerPlan], files: Sequence[Path], ranges: dict,
            cfg: AccelConfig, seed: int = 0, progress: bool = False, **opts
            ) -> tuple[list[LayerPlan], list[dict]]:
    """Fine-tune the plans' centroids, gains and biases by distillation (see the module doc).

    ``opts`` override :data:`DEFAULTS`. Returns ``(new plans, history)``; ``history`` is the
    loss every 25 steps. Deterministic for a given ``seed`` on a given machine.
    """
    o = dict(DEFAULTS, **opts)
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown distillation options {sorted(unknown)}; expected "
                         f"{sorted(DEFAULTS)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    teacher = TorchChain(graph).eval()
    student = TorchChain(graph, plans, _act_scales(graph, ranges, cfg))
    groups = []
    if o["train_centroids"]:
        groups.append({"params": list(student.cent.parameters()), "lr": o["lr"]})
    if o["train_gain"]:
        groups.append({"params": list(student.gain.parameters()), "lr": o["lr"]})
    if o["train_bias"]:
        groups.append({"params": list(student.bias.parameters()), "lr": o["lr"]})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, o["steps"]) / o["steps"])))
    rgbs = _load_rgb(files)
    size = tuple(graph.input_shape[1:])
    temp = float(o["temperature"])
    history = []
    run = 0.0
    for step in range(o["steps"]):
        x = torch.from_numpy(augmented_batch(rgbs, rng, o["batch"], size, o["crop_scale"],
                                             o["mix"]))
        with torch.no_grad():
            t = F.log_softmax(teacher(x) / temp, 1)
        s = F.log_softmax(student(x) / temp, 1)
        loss = F.kl_div(s, t, reduction="batchmean", log_target=True) * temp * temp
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run += loss.item()
        if (step + 1) % 25 == 0:
            history.append({"step": step + 1, "loss": run / 25})
            if progress:
                print(f"distill step {step + 1}/{o['steps']}: loss {run / 25:.4f}", flush=True)
            run = 0.0
    return student.to_plans(plans), history
