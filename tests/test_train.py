"""The training loop: every method runs, EMA, exact resume, learning on digits, inference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import labelkit.ssl as ssl
from labelkit.config import TrainConfig
from labelkit.ssl.base import METHODS, Batch, Method, MethodOutput, Outputs
from labelkit.train import CHECKPOINT, TrainData, cosine_lr_factor, predict, train


@pytest.fixture(scope="module")
def tiny() -> TrainData:
    return TrainData.from_digits(labels_per_class=2, seed=0, image_size=8)


def _config(methods: tuple[str, ...] = ("supervised",), **overrides) -> TrainConfig:
    base = {
        "model": "cnn_small",
        "methods": list(methods),
        "steps": 3,
        "batch_size": 4,
        "mu": 2,
        "hflip": False,
        "log_every": 1,
        "eval_every": 0,
        "device": "cpu",
        "num_threads": 1,
    }
    return TrainConfig.from_dict({**base, **overrides})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_trains_with_finite_losses(name: str, tiny: TrainData) -> None:
    logged: list[dict[str, float]] = []
    result = train(_config((name,)), tiny, callback=lambda step, m: logged.append(m))
    assert result.step == 3 and not result.stopped
    assert len(logged) == 3
    for metrics in logged:
        for key in ("train/sup_loss", "train/unsup_loss", "train/loss", "train/lr", "train/imgs_per_s"):
            assert math.isfinite(metrics[key]), (key, metrics)
        assert 0 <= metrics["train/data_time_frac"] <= 1
    assert "eval/acc" in logged[-1]  # evaluated at the end even with eval_every = 0


def test_ema_model_moves_but_lags_the_student(tiny: TrainData) -> None:
    result = train(_config(steps=5), tiny)
    ema, student = dict(result.model.named_parameters()), dict(result.student.named_parameters())
    torch.manual_seed(0)
    from labelkit.models import build_model

    init = build_model("cnn_small", num_classes=10, in_channels=1, image_size=8).classifier.weight
    w = "classifier.weight"
    assert not torch.equal(ema[w], student[w])
    assert not torch.equal(ema[w], init)
    assert not ema[w].requires_grad


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny: TrainData) -> None:
    config = _config(("supervised",), steps=6, checkpoint_every=0)
    whole = train(config, tiny)

    polls = iter([False, False, False, True])  # polled before each step: stop before the 4th
    first = train(config, tiny, run_dir=tmp_path, stop=lambda: next(polls))
    assert first.stopped and first.step == 3
    assert (tmp_path / CHECKPOINT).exists()
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write leaves no temporary file

    resumed = train(config, tiny, run_dir=tmp_path)
    assert resumed.step == 6 and not resumed.stopped
    for (name, a), b in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    for a, b in zip(whole.student.parameters(), resumed.student.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert [s for s, _ in resumed.history] == [1, 2, 3, 4, 5, 6]


def test_resume_restores_generator_states_that_torch_load_moved_off_the_cpu(
    tmp_path, tiny: TrainData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU, ``torch.load(map_location=cuda)`` moves the saved states to the GPU, and
    ``set_state`` takes only a CPU ByteTensor. Without a GPU, the stand-in is a loader that hands
    the states back as some other tensor (int16 here); the resume must still equal a whole run."""
    config = _config(("supervised",), steps=4, checkpoint_every=0)
    whole = train(config, tiny)
    polls = iter([False, False, True])
    train(config, tiny, run_dir=tmp_path, stop=lambda: next(polls))

    real_load = torch.load
    seen: list[object] = []

    def load_elsewhere(*args, **kwargs):
        state = real_load(*args, **kwargs)
        seen.append(kwargs.get("map_location"))
        rng = state["rng"]
        rng["sampler"], rng["torch"] = rng["sampler"].to(torch.int16), rng["torch"].to(torch.int16)
        return state

    with pytest.raises(TypeError, match="ByteTensor"):  # what set_state does with such a state
        torch.Generator().set_state(torch.zeros(8, dtype=torch.int16))
    monkeypatch.setattr(torch, "load", load_elsewhere)
    resumed = train(config, tiny, run_dir=tmp_path)
    assert seen == [torch.device("cpu")] and resumed.step == 4
    for a, b in zip(whole.student.parameters(), resumed.student.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_resume_refuses_a_checkpoint_of_a_different_run(tmp_path, tiny: TrainData) -> None:
    train(_config(steps=2), tiny, run_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different \['lr'\]"):
        train(_config(steps=2, lr=0.1), tiny, run_dir=tmp_path)
    # more steps is a continuation, not a different run
    assert train(_config(steps=3), tiny, run_dir=tmp_path).step == 3


def test_supervised_learns_digits_well_above_chance() -> None:
    data = TrainData.from_digits(labels_per_class=20, seed=0, image_size=16)
    config = _config(steps=150, batch_size=32, log_every=50, eval_every=150)
    result = train(config, data)
    accuracy = result.history[-1][1]["eval/acc"]
    assert accuracy > 0.8  # chance is 0.1; ~0.97 when this was written


def test_predict_returns_distributions_and_unit_embeddings(tiny: TrainData) -> None:
    result = train(_config(steps=1), tiny)
    probs, emb = predict(result.model, tiny.x_test[:37], batch_size=16, device="cpu")
    assert probs.shape == (37, 10) and emb.shape == (37, result.model.embed_dim)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_cosine_schedule_matches_fixmatch() -> None:
    assert cosine_lr_factor(0, 100) == 1.0
    assert cosine_lr_factor(100, 100) == pytest.approx(math.cos(7 * math.pi / 16))  # ≈ 0.195


@dataclass(frozen=True)
class _NoOptions:
    pass


class _TermA(Method):
    name = "_test_term_a"
    Config = _NoOptions

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        return MethodOutput(terms={"extra": out.logits_lb.mean()}, weights={"extra": 1.0})


class _TermB(_TermA):
    name = "_test_term_b"


@pytest.fixture
def clashing_methods():
    for cls in (_TermA, _TermB):
        ssl.register(cls)
    yield
    for cls in (_TermA, _TermB):
        METHODS.pop(cls.name)


def test_two_methods_may_not_return_the_same_term(clashing_methods, tiny: TrainData) -> None:
    with pytest.raises(ValueError, match="_test_term_b: loss term 'extra'"):
        train(_config(("_test_term_a", "_test_term_b"), steps=1), tiny)


def test_workspace_items_become_training_arrays(store) -> None:
    from PIL import Image

    from labelkit.datasets import load_workspace
    from labelkit.store import NewItem

    # Three 20×10 images: a dark and a bright one labelled, a mid-grey one not; one broken file.
    items = []
    for i, value in enumerate((10, 250, 128)):
        Image.new("RGB", (20, 10), (value, value, value)).save(store.workspace.images / f"{i}.png")
        items.append(
            NewItem(f"{i:064x}", f"images/{i}.png", f"thumbs/{i}.png", f"{i}.png", "t", 20, 10, "PNG", "RGB")
        )
    (store.workspace.images / "bad.png").write_bytes(b"not an image")
    items.append(
        NewItem(f"{9:064x}", "images/bad.png", "thumbs/bad.png", "bad.png", "t", 20, 10, "PNG", "RGB")
    )
    ids = store.add_items(items)
    bright, dark = store.add_class("bright"), store.add_class("dark")
    store.label(ids[f"{0:064x}"], dark.id, annotator="ann")
    store.label(ids[f"{1:064x}"], bright.id, annotator="ann", source="pseudo_accepted")

    arrays = load_workspace(store, image_size=8, channels=1)
    assert arrays.class_names == ("bright", "dark")
    assert arrays.x_lb.shape == (2, 1, 8, 8) and arrays.x_lb.dtype == np.uint8
    assert dict(zip(arrays.lb_ids.tolist(), arrays.y_lb.tolist(), strict=True)) == {
        ids[f"{0:064x}"]: 1,
        ids[f"{1:064x}"]: 0,
    }
    by_id = dict(zip(arrays.lb_ids.tolist(), arrays.x_lb, strict=True))
    assert (by_id[ids[f"{0:064x}"]] == 10).all() and (by_id[ids[f"{1:064x}"]] == 250).all()
    assert arrays.ulb_ids.tolist() == [ids[f"{2:064x}"]] and (arrays.x_ulb == 128).all()
    assert [i for i, _ in arrays.unreadable] == [ids[f"{9:064x}"]]
    assert load_workspace(store, image_size=8, channels=3).x_ulb.shape == (1, 3, 8, 8)

    data = TrainData.from_workspace(arrays)
    assert len(data.x_ulb) == 3 and data.y_ulb.tolist()[-1] == -1 and data.num_classes == 2


def test_training_images_are_decoded_as_import_decodes_them(tmp_path) -> None:
    from PIL import Image

    from labelkit.datasets import read_image

    # A 12-bit scan in a 16-bit PNG: a plain 8-bit conversion would clip it to nearly all white.
    twelve_bit = np.full((8, 8), 1000, dtype=np.uint16)
    twelve_bit[:, 4:] = 4000
    Image.fromarray(twelve_bit).save(tmp_path / "scan.png")
    grey = read_image(tmp_path / "scan.png", image_size=8, channels=1)
    assert grey[0, :, :4].max() == 0 and grey[0, :, 4:].min() == 255
    # Transparent pixels are white, as viewers (and the Label page) show them, not black.
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (read_image(tmp_path / "clear.png", image_size=8, channels=3) == 255).all()


def test_init_warm_starts_student_and_ema_and_a_mismatched_head_keeps_its_own_weights(
    tiny: TrainData,
) -> None:
    from labelkit.models import build_model

    donor = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8)
    with torch.no_grad():
        for p in donor.parameters():
            p.fill_(0.5)
    # stop before the first step: what comes back is exactly the initialisation
    result = train(_config(steps=5), tiny, init=donor.state_dict(), stop=lambda: True)
    assert result.step == 0 and result.stopped
    for model in (result.student, result.model):
        body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
        assert all(bool((p == 0.5).all()) for p in body)
        # 3 classes in the donor, 10 here: the head is this run's own fresh one
        assert model.classifier.weight.shape == (10, model.feature_dim)
        assert not bool((model.classifier.weight == 0.5).all())


def test_benchmark_writes_one_row_per_method_run(tmp_path, capsys) -> None:
    from benchmarks.bench_ssl import COLUMNS, main

    out = tmp_path / "rows.json"
    argv = ["--dataset", "digits", "--labels-per-class", "2", "--method", "supervised,supervised+pseudolabel"]
    argv += ["--steps", "2", "--batch-size", "4", "--mu", "1", "--image-size", "8", "--json", str(out)]
    assert main(argv) == 0
    import json

    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["supervised", "supervised+pseudolabel"]
    assert all(set(r) == set(COLUMNS) and r["labels"] == 20 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert "supervised+pseudolabel" in capsys.readouterr().out  # the printed table


def test_benchmark_minutes_budget_sets_the_steps_from_a_calibration_run(tmp_path, monkeypatch) -> None:
    import benchmarks.bench_ssl as bench

    # Calibration says 0.5 s per step: a 0.5-minute budget is 60 steps.
    monkeypatch.setattr(bench, "_seconds_per_step", lambda *a: 0.5)
    out = tmp_path / "rows.json"
    argv = ["--dataset", "digits", "--labels-per-class", "2", "--method", "supervised", "--minutes", "0.5"]
    argv += ["--batch-size", "4", "--mu", "1", "--image-size", "8", "--json", str(out)]
    assert bench.main(argv) == 0
    import json

    assert json.loads(out.read_text())[0]["steps"] == 60


class _OneBN(nn.Module):
    """A BatchNorm layer behind the ``normalize`` a Classifier has: inputs scaled to 0–1."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2, momentum=0.25)
        self.other = nn.BatchNorm2d(2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.other(self.bn(x))


def test_recalibrate_bn_sets_the_cumulative_batch_statistics_and_nothing_else() -> None:
    from labelkit.train import recalibrate_bn

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (10, 2, 3, 3), generator=g, dtype=torch.uint8)
    model = _OneBN().eval()
    other_before = model.other.running_mean.clone()
    weight_before = model.bn.weight.clone()
    # batches of 4: images 0–3 and 4–7; the remainder (8, 9) is dropped
    assert recalibrate_bn(model, x, names={"bn"}, batch_size=4) == 8
    first, second = x[:4].float() / 255, x[4:8].float() / 255
    expected_mean = (first.mean(dim=(0, 2, 3)) + second.mean(dim=(0, 2, 3))) / 2
    unbiased = [b.transpose(0, 1).reshape(2, -1).var(dim=1) for b in (first, second)]
    torch.testing.assert_close(model.bn.running_mean, expected_mean)
    torch.testing.assert_close(model.bn.running_var, (unbiased[0] + unbiased[1]) / 2)
    assert model.bn.momentum == 0.25 and not model.training and not model.bn.training
    torch.testing.assert_close(model.other.running_mean, other_before)  # not named: untouched
    torch.testing.assert_close(model.bn.weight, weight_before)


def test_the_returned_ema_model_has_statistics_of_plain_images_not_the_students(tiny: TrainData) -> None:
    from labelkit.train import recalibrate_bn

    kept = train(_config(steps=4), tiny, bn_sample=0)
    ema, student = kept.model.state_dict(), kept.student.state_dict()
    means = [k for k in ema if k.endswith("running_mean")]
    assert means and all(torch.equal(ema[k], student[k]) for k in means)

    calibrated = train(_config(steps=4), tiny, bn_sample=64)
    again = {k: v.clone() for k, v in calibrated.model.state_dict().items()}
    assert not all(torch.equal(again[k], student[k]) for k in means)
    # what train did is recalibrate_bn on its fixed sample of 64 plain images: redo it by hand
    pick = torch.randperm(len(tiny.x_ulb), generator=torch.Generator().manual_seed(0))[:64]
    recalibrate_bn(calibrated.model, tiny.x_ulb[pick.numpy()])
    for k in means:
        torch.testing.assert_close(calibrated.model.state_dict()[k], again[k])
    with pytest.raises(ValueError, match="bn_sample"):
        train(_config(steps=1), tiny, bn_sample=-1)


@pytest.mark.parametrize(
    ("method", "per_step"), [("supervised", 4), ("fixmatch", 4 + 2 * 8), ("pseudolabel", 4 + 8)]
)
def test_imgs_per_s_counts_every_image_through_the_student(method, per_step, tiny, monkeypatch) -> None:
    import types

    import labelkit.train as train_module

    # A clock that advances one second per reading: the loop reads it three times a step (start,
    # after the data, at the end), so each step lasts 2 s and imgs_per_s = images per step / 2.
    ticks = iter(range(10**6))
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    logged: list[dict[str, float]] = []
    train(_config((method,), steps=2, batch_size=4, mu=2), tiny, callback=lambda s, m: logged.append(m))
    assert [m["train/imgs_per_s"] for m in logged] == [per_step / 2] * 2
