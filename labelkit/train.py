"""The one training loop. Only this file calls backward and steps the optimiser.

Per step: sample B labelled and μB unlabelled images (with replacement, seeded), build the views
the methods ask for, run the student once on all of them, add the supervised cross-entropy and each
method's weighted terms, step SGD (Nesterov, FixMatch's cosine schedule), update the EMA model and
the methods' state; log, evaluate the EMA model and checkpoint on schedule. The loop reads top to
bottom; ``train`` is the place to look for what happens in what order.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelkit.atomic import write_atomically
from labelkit.augment import Augmenter, channel_stats
from labelkit.config import TrainConfig
from labelkit.datasets import WorkspaceArrays
from labelkit.models import Classifier, build_model, load_matching
from labelkit.ssl import Batch, MethodContext, Outputs, build_methods

CHECKPOINT = "checkpoint.pt"
BN_SAMPLE = 2048  # plain unlabelled images the EMA model's BatchNorm statistics are re-estimated on
# Changing these between a checkpoint and its resumption does not change what the run computes.
RESUMABLE_CHANGES = frozenset(
    {"steps", "eval_every", "checkpoint_every", "log_every", "num_threads", "device"}
)


@dataclass
class TrainData:
    """Images as uint8 (N, C, H, W) arrays; labels as int64 class indices."""

    x_lb: np.ndarray
    y_lb: np.ndarray
    x_ulb: np.ndarray
    y_ulb: np.ndarray | None = None  # true classes of the unlabelled images, -1 unknown; statistics only
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(int(self.y_lb.max()) + 1))
        k = len(self.class_names)
        pairs: list[tuple[str, np.ndarray | None, str, np.ndarray | None]] = [
            ("x_lb", self.x_lb, "y_lb", self.y_lb),
            ("x_ulb", self.x_ulb, "y_ulb", self.y_ulb),
            ("x_test", self.x_test, "y_test", self.y_test),
        ]
        for x_name, x, y_name, y in pairs:
            if x is None:
                if y is not None:
                    raise ValueError(f"{y_name} given without {x_name}")
                continue
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != self.x_lb.shape[1:]:
                raise ValueError(f"{x_name} must be uint8 (N, C, H, W) like x_lb {self.x_lb.shape[1:]}")
            if y is not None and (y.shape != (len(x),) or y.min(initial=0) < -1 or y.max(initial=0) >= k):
                raise ValueError(f"{y_name} must hold {len(x)} class indices in [0, {k}) (-1 unknown)")
        if len(self.x_lb) == 0 or (self.y_lb < 0).any():
            raise ValueError("need at least one labelled image, every one with a class")
        if len(self.x_ulb) == 0:
            raise ValueError("need at least one unlabelled image (the labelled ones may be reused)")
        if self.x_test is not None and self.y_test is None:
            raise ValueError("x_test given without y_test")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.x_lb.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_lb.shape[-1])

    @classmethod
    def from_digits(
        cls, *, labels_per_class: int, seed: int, image_size: int = 16, test_size: int = 500
    ) -> TrainData:
        """scikit-learn digits: a fixed stratified split (1,297 train / 500 test), ``labels_per_class``
        labels drawn by ``seed``, every train image unlabelled too (the standard SSL protocol)."""
        from sklearn.model_selection import train_test_split

        from labelkit.datasets import load_digits

        x, y = load_digits(size=image_size)
        train_idx, test_idx = train_test_split(
            np.arange(len(y)), test_size=test_size, stratify=y, random_state=0
        )
        return cls._protocol(x[train_idx], y[train_idx], x[test_idx], y[test_idx], labels_per_class, seed)

    @classmethod
    def from_mnist(cls, root: str | Path, *, labels_per_class: int, seed: int) -> TrainData:
        """MNIST (60,000 train / 10,000 test) under the same protocol."""
        from labelkit.datasets import load_mnist

        x, y = load_mnist(root, train=True)
        x_test, y_test = load_mnist(root, train=False)
        return cls._protocol(x, y, x_test, y_test, labels_per_class, seed)

    @classmethod
    def from_workspace(cls, arrays: WorkspaceArrays) -> TrainData:
        """A workspace's items: its labelled ones, and every item (labelled too) as unlabelled."""
        if len(arrays.x_lb) == 0:
            raise ValueError("the workspace has no labelled images yet; label a few per class first")
        x_ulb = np.concatenate([arrays.x_lb, arrays.x_ulb])
        y_ulb = np.concatenate([arrays.y_lb, np.full(len(arrays.x_ulb), -1, np.int64)])
        return cls(arrays.x_lb, arrays.y_lb, x_ulb, y_ulb, class_names=arrays.class_names)

    @classmethod
    def _protocol(
        cls, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, per_class: int, seed: int
    ) -> TrainData:
        from labelkit.datasets import balanced_subset

        picked = balanced_subset(y, per_class, seed=seed)
        names = tuple(str(c) for c in range(int(y.max()) + 1))
        return cls(x[picked], y[picked], x, y, x_test, y_test, names)


@dataclass
class TrainResult:
    model: Classifier  # the EMA model: what evaluation, inference and export use
    student: Classifier
    step: int  # optimiser steps completed
    stopped: bool  # True when ``stop`` ended the run early
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DeviceOptions(NamedTuple):
    autocast: bool  # bf16 autocast of the forward pass and the losses
    channels_last: bool  # student weights and its input batch in NHWC
    compile: bool  # torch.compile the student


def device_options(device: torch.device, config: TrainConfig) -> DeviceOptions:
    """Which of ``config``'s speed-ups apply on ``device``: each pays off on CUDA only (on a CPU
    bf16 autocast and NHWC slow small convolutions down, and compiling costs more than it saves)."""
    on_cuda = device.type == "cuda"
    return DeviceOptions(on_cuda and config.amp, on_cuda and config.channels_last, on_cuda and config.compile)


def cosine_lr_factor(step: int, total: int) -> float:
    """FixMatch (Sohn et al. 2020, §3.2 / App. B.1): lr · cos(7πk / 16K) at step k of K."""
    return math.cos(7 * math.pi * step / (16 * total))


def param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, with weight decay on weight matrices and filters but not on biases or
    normalisation scales (the usual choice; FixMatch's TF code decays only conv/dense kernels)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:  # a method may hold the student as a submodule
                seen.add(id(p))
                (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(ema: nn.Module, student: nn.Module, decay: float) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ; buffers (BN statistics) are copied from the student."""
    for e, s in zip(ema.parameters(), student.parameters(), strict=True):
        e.lerp_(s.detach(), 1.0 - decay)
    for e_buf, s_buf in zip(ema.buffers(), student.buffers(), strict=True):
        e_buf.copy_(s_buf)


@torch.no_grad()
def recalibrate_bn(
    model: Classifier,
    x_uint8: np.ndarray | Tensor,
    *,
    names: set[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> int:
    """Re-estimate the BatchNorm statistics of ``model`` on uint8 images (N, C, H, W); return the
    number of images used.

    The EMA model averages the student's weights over ~1/(1 − decay) steps but would otherwise carry
    the student's latest running statistics, measured on the student's own (augmented) batches:
    statistics that fit neither its averaged weights nor plain images. So each BatchNorm layer
    (those in ``names``, default all) is reset and forwarded over ``x_uint8`` in train mode with
    ``momentum=None``, i.e. a cumulative average over equal batches; no gradient, no weight changes,
    other layers (dropout) stay in eval mode.
    """
    layers = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and (names is None or n in names)
    ]
    n = len(x_uint8)
    if not layers or n == 0:
        return 0
    # Equal batches: the cumulative average weighs batches, not images, and a batch of one would
    # have no variance. A remainder is dropped when at least one full batch exists.
    size = min(batch_size, n)
    used = n - n % size
    device = torch.device(device)
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for start in range(0, used, size):
            chunk = torch.as_tensor(x_uint8[start : start + size]).to(device)
            model(model.normalize(chunk))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


@torch.no_grad()
def predict(
    model: Classifier,
    x_uint8: np.ndarray | Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) and unit embeddings (N, D) for uint8 images (N, C, H, W)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    probs, embeddings = [], []
    try:
        for start in range(0, len(x_uint8), batch_size):
            chunk = torch.as_tensor(x_uint8[start : start + batch_size]).to(device)
            out = model(model.normalize(chunk))
            probs.append(out.logits.float().softmax(1).cpu())
            embeddings.append(out.embedding.float().cpu())
    finally:
        model.train(was_training)
    k, d = model.num_classes, model.embed_dim
    return (
        torch.cat(probs).numpy() if probs else np.zeros((0, k), np.float32),
        torch.cat(embeddings).numpy() if embeddings else np.zeros((0, d), np.float32),
    )


def evaluate(
    model: Classifier,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy (higher is better) of ``model`` on uint8 images ``x`` with classes ``y``."""
    probs, _ = predict(model, x, batch_size=batch_size, device=device)
    return float((probs.argmax(1) == y).mean())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash leaves either the previous checkpoint or the new one, never half."""
    write_atomically(path, lambda handle: torch.save(state, handle), durable=True)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    return {
        "sampler": gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
    }


def _cpu_bytes(saved: torch.Tensor) -> torch.Tensor:
    """A saved generator state as the CPU ByteTensor ``set_state`` takes: ``torch.load`` with
    ``map_location=cuda`` moves it to the GPU along with the weights."""
    return saved.detach().to(device="cpu", dtype=torch.uint8)


def _set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(_cpu_bytes(state["sampler"]))
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_cpu_bytes(t) for t in state["cuda"]])
    np.random.set_state(state["numpy"])


def train(
    config: TrainConfig,
    data: TrainData,
    *,
    run_dir: str | Path | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    resume: bool = True,
    stop: Callable[[], bool] | None = None,
    progress: bool = False,
    init: Mapping[str, Tensor] | None = None,
    bn_sample: int = BN_SAMPLE,
) -> TrainResult:
    """Train ``config.methods`` on ``data``; see the module docstring for the order of events.

    ``callback(step, metrics)`` receives metrics averaged over the last ``config.log_every`` steps
    (and when the EMA model is evaluated), under stable names: ``train/sup_loss``, ``train/loss``,
    ``train/unsup_loss`` (Σ weight·term over all method terms), ``train/<term>`` (each method term
    unweighted, except one named ``unsup_loss``, which that sum already shows), ``train/<stat>``
    (``mask_rate``, ``pseudo_acc``…; a second method's same-named stat as ``<method>_<stat>``),
    ``train/lr``, ``train/imgs_per_s`` (images through the student's forward and backward: B
    plus μB per unlabelled view it sees, B + 2μB for FixMatch; a teacher's own forward, such as
    Mean Teacher's second weak view, is not counted), ``train/data_time_frac`` (sampling + augmentation ÷ step time) and ``eval/acc`` (EMA
    model, test set; at ``eval_every`` and at the end). ``stop()`` is polled between steps; when it
    returns True the run checkpoints (if ``run_dir``) and returns with ``stopped=True``. With
    ``resume`` and a checkpoint in ``run_dir``, training continues from it. ``init`` (a model state
    dict) warm-starts the student and its EMA copy: every tensor whose name and shape match is
    loaded, input statistics included; a resumed checkpoint takes precedence. Before every
    evaluation and before returning, the EMA model's BatchNorm statistics are re-estimated on
    ``bn_sample`` plain unlabelled images (a fixed random sample; 0 keeps the student's statistics).
    """
    config.validate()
    if bn_sample < 0:
        raise ValueError(f"bn_sample must be ≥ 0 (0 = keep the student's statistics), got {bn_sample}")
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"
    options = device_options(device, config)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)

    # ---- data on the device, as uint8 (augmentation runs there too)
    x_lb = torch.from_numpy(data.x_lb).to(device)
    y_lb = torch.from_numpy(data.y_lb).long().to(device)
    x_ulb = torch.from_numpy(data.x_ulb).to(device)
    y_ulb = torch.from_numpy(data.y_ulb).long().to(device) if data.y_ulb is not None else None
    # The unlabelled pool (which usually holds the labelled images too) sets the input statistics.
    mean, std = channel_stats(torch.from_numpy(data.x_ulb))

    # ---- model, EMA copy, methods, optimiser — all seeded
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    gen = torch.Generator().manual_seed(config.seed)  # batches and augmentation
    student = build_model(
        config.model,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        mean=mean,
        std=std,
    ).to(device)
    if init is not None:
        load_matching(student, {k: v.to(device) for k, v in init.items()})
    if options.channels_last:
        student = student.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(student).requires_grad_(False).eval()
    ctx = MethodContext(
        num_classes=data.num_classes,
        num_labeled=len(data.x_lb),
        labeled_targets=y_lb,
        total_steps=config.steps,
        feature_dim=student.feature_dim,
        embed_dim=student.embed_dim,
    )
    methods = build_methods(config.methods, config.method_options, ctx, student)
    for m in methods:
        m.to(device)
    views = frozenset().union(*(m.views for m in methods))
    optimizer = torch.optim.SGD(
        param_groups([student, *methods], config.weight_decay),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
    forward = torch.compile(student) if options.compile else student
    augment = Augmenter(hflip=config.hflip, group_size=config.aug_group)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.autocast)

    # ---- resume
    start, history = 0, []
    ckpt_path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved, now = state["config"], config.to_dict()
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise ValueError(f"{ckpt_path} was trained with different {changed}; start a new run folder")
        student.load_state_dict(state["student"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        for m, m_state in zip(methods, state["methods"], strict=True):
            m.load_state_dict(m_state)
        _set_rng_state(gen, state["rng"])
        start, history = state["step"], state["history"]

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        save_checkpoint(
            ckpt_path,
            {
                "config": config.to_dict(),
                "step": step,
                "student": student.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "methods": [m.state_dict() for m in methods],
                "rng": _rng_state(gen),
                "history": history,
            },
        )

    def log(step: int, metrics: dict[str, float]) -> None:
        history.append((step, metrics))
        if callback is not None:
            callback(step, metrics)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start, unit="step")

    # ---- the loop
    student.train()
    # Re-estimate only the BatchNorm layers the student trains (a frozen part kept in eval mode
    # keeps its statistics), on a fixed sample drawn apart from ``gen`` so the batches don't change.
    bn_names = {
        n for n, m in student.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    }
    bn_pick = torch.randperm(len(x_ulb), generator=torch.Generator().manual_seed(config.seed))[:bn_sample]
    bn_images = x_ulb[bn_pick.to(device)]
    calibrated_at = -1

    def calibrate(step: int) -> None:
        nonlocal calibrated_at
        if bn_sample and calibrated_at != step:
            recalibrate_bn(ema, bn_images, names=bn_names, device=device)
            calibrated_at = step

    sums: dict[str, Any] = {}  # per-metric running sums and counts of this logging window
    counts: dict[str, Any] = {}
    data_time = window_time = 0.0
    window_images = 0
    stopped = False
    step = start
    while step < config.steps:
        if stop is not None and stop():
            stopped = True
            break
        t0 = time.perf_counter()

        # sample indices (with replacement) and build the views
        i_lb = torch.randint(len(x_lb), (config.batch_size,), generator=gen).to(device)
        batch = Batch(x_lb=student.normalize(augment.weak(x_lb[i_lb], gen)), y_lb=y_lb[i_lb], idx_lb=i_lb)
        if views:
            i_ulb = torch.randint(len(x_ulb), (config.batch_size * config.mu,), generator=gen).to(device)
            raw = x_ulb[i_ulb]
            if "ulb_w" in views:
                batch.x_ulb_w = student.normalize(augment.weak(raw, gen))
            if "ulb_s" in views:
                batch.x_ulb_s = student.normalize(augment.strong(raw, gen))
            if "ulb_w2" in views:
                batch.x_ulb_w2 = student.normalize(augment.weak(raw, gen))
            batch.y_ulb = y_ulb[i_ulb] if y_ulb is not None else torch.full_like(i_ulb, -1)
        t_data = time.perf_counter() - t0

        # one student forward over every view it sees
        parts = [batch.x_lb] + [v for v in (batch.x_ulb_w, batch.x_ulb_s) if v is not None]
        x = torch.cat(parts)
        window_images += len(x)
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits, emb, feat = forward(x)
            logits, feat = logits.float(), feat.float()
            split = [len(p) for p in parts]
            logits_s, emb_s, feat_s = logits.split(split), emb.split(split), feat.split(split)
            out = Outputs(logits_lb=logits_s[0], emb_lb=emb_s[0], feat_lb=feat_s[0])
            k = 1
            if batch.x_ulb_w is not None:
                out.logits_ulb_w, out.emb_ulb_w, out.feat_ulb_w = logits_s[k], emb_s[k], feat_s[k]
                k += 1
            if batch.x_ulb_s is not None:
                out.logits_ulb_s, out.emb_ulb_s, out.feat_ulb_s = logits_s[k], emb_s[k], feat_s[k]

            sup_loss = F.cross_entropy(out.logits_lb, batch.y_lb)
            loss = sup_loss
            unsup_loss = torch.zeros((), device=device)
            terms: dict[str, Tensor] = {}
            stats: dict[str, Tensor] = {}
            for m in methods:
                result = m.step(batch, out, step, student)
                for name, term in result.terms.items():
                    if name in terms or name == "sup_loss":
                        raise ValueError(
                            f"{m.name}: loss term {name!r} is already produced by another method"
                        )
                    terms[name] = term.detach()
                    unsup_loss = unsup_loss + result.weights[name] * term
                for name, value in result.stats.items():
                    stats[name if name not in stats else f"{m.name}_{name}"] = value
            loss = sup_loss + unsup_loss

        lr = config.lr * cosine_lr_factor(step, config.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], config.clip_grad_norm
            )
        optimizer.step()
        # Early on the average would still be mostly the random initialisation; warm the decay up
        # as tf.train.ExponentialMovingAverage(num_updates=k) does: min(d, (1 + k) / (10 + k)).
        ema_update(ema, student, min(config.ema_decay, (1 + step) / (10 + step)))
        for m in methods:
            m.after_step(student)
        step += 1

        # bookkeeping: accumulate on the device, read (one GPU sync) only when logging
        window = {"sup_loss": sup_loss, "unsup_loss": unsup_loss, "loss": loss}
        window.update({n: t for n, t in terms.items() if n != "unsup_loss"})
        window.update(stats)
        for name, value in window.items():
            value = value.detach().float()
            defined = ~torch.isnan(value)  # NaN: undefined this step (pseudo_acc without ground truth)
            sums[name] = sums.get(name, 0.0) + torch.where(defined, value, 0.0)
            counts[name] = counts.get(name, 0.0) + defined.float()
        data_time += t_data
        if bar is not None:
            bar.update(1)
        is_eval = data.x_test is not None and (
            (config.eval_every > 0 and step % config.eval_every == 0) or step == config.steps
        )
        if step % config.log_every == 0 or step == config.steps or is_eval:
            if on_cuda:
                torch.cuda.synchronize()
            window_time += time.perf_counter() - t0
            metrics = {f"train/{n}": float(sums[n] / counts[n]) for n in sums if float(counts[n]) > 0}
            metrics["train/lr"] = lr
            metrics["train/imgs_per_s"] = window_images / max(window_time, 1e-9)
            metrics["train/data_time_frac"] = data_time / max(window_time, 1e-9)
            if is_eval and data.x_test is not None and data.y_test is not None:
                calibrate(step)
                metrics["eval/acc"] = evaluate(ema, data.x_test, data.y_test, device=device)
            log(step, metrics)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            sums, counts, data_time, window_time, window_images = {}, {}, 0.0, 0.0, 0
        else:
            window_time += time.perf_counter() - t0
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            checkpoint(step)

    if bar is not None:
        bar.close()
    checkpoint(step)  # the training state as it is; the EMA statistics are re-estimated after
    calibrate(step)
    return TrainResult(
        model=ema,
        student=student,
        step=step,
        stopped=stopped,
        history=history,
        config=config.to_dict(),
        checkpoint=ckpt_path,
    )
