"""Every registered SSL method, driven the way ``labelkit.train`` drives it, on a tiny model."""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelkit.models import ModelOutput
from labelkit.ssl import (
    METHODS,
    Batch,
    Method,
    MethodContext,
    MethodOutput,
    Outputs,
    build_methods,
    method_config,
)
from labelkit.ssl.ema import EMATeacher
from labelkit.ssl.losses import association_probabilities, visit_loss, walker_loss

NUM_CLASSES, NUM_LABELED, FEAT_DIM = 3, 6, 8
# An untrained 3-class model is never 95% sure, so thresholded methods would mask everything and
# their term would be 0 for a reason that says nothing about the code; 0.3 < 1/3 keeps every item.
STEP_OPTIONS: dict[str, dict[str, Any]] = {"fixmatch": {"threshold": 0.3}, "simmatch": {"threshold": 0.3}}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16, FEAT_DIM),
        )
        self.fc = nn.Linear(FEAT_DIM, NUM_CLASSES)

    def forward(self, x: Tensor) -> ModelOutput:
        feat = self.body(x)
        return ModelOutput(self.fc(feat), F.normalize(feat, dim=1), feat)


def make_ctx(total_steps: int = 100) -> MethodContext:
    return MethodContext(
        num_classes=NUM_CLASSES,
        num_labeled=NUM_LABELED,
        labeled_targets=torch.tensor([0, 1, 2, 0, 1, 2]),
        total_steps=total_steps,
        feature_dim=FEAT_DIM,
        embed_dim=FEAT_DIM,
    )


def make_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx_lb = torch.tensor([0, 1, 2, 3])
    return Batch(
        x_lb=torch.randn(4, 1, 6, 6, generator=g),
        y_lb=make_ctx().labeled_targets[idx_lb],
        idx_lb=idx_lb,
        x_ulb_w=torch.randn(8, 1, 6, 6, generator=g),
        x_ulb_s=torch.randn(8, 1, 6, 6, generator=g),
        x_ulb_w2=torch.randn(8, 1, 6, 6, generator=g),
        y_ulb=torch.tensor([0, 1, 2, -1, 0, 1, 2, -1]),
    )


def forward(student: nn.Module, batch: Batch, views: frozenset[str]) -> Outputs:
    """The loop's single student forward over the labelled batch and the views asked for."""
    parts = [batch.x_lb] + [x for v, x in (("ulb_w", batch.x_ulb_w), ("ulb_s", batch.x_ulb_s)) if v in views]
    logits, emb, feat = (t.split([len(p) for p in parts]) for t in student(torch.cat(parts)))
    out = Outputs(logits_lb=logits[0], emb_lb=emb[0], feat_lb=feat[0])
    k = 1
    if "ulb_w" in views:
        out.logits_ulb_w, out.emb_ulb_w, out.feat_ulb_w = logits[k], emb[k], feat[k]
        k += 1
    if "ulb_s" in views:
        out.logits_ulb_s, out.emb_ulb_s, out.feat_ulb_s = logits[k], emb[k], feat[k]
    return out


def train_step(
    method: Method, student: nn.Module, batch: Batch, step: int, opt: torch.optim.Optimizer
) -> MethodOutput:
    """One iteration of the loop: forward, supervised + weighted terms, backward, step, after_step."""
    out = forward(student, batch, method.views)
    result = method.step(batch, out, step, student)
    loss = F.cross_entropy(out.logits_lb, batch.y_lb) + sum(
        (result.weights[k] * t for k, t in result.terms.items()), torch.zeros(())
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    method.after_step(student)
    return result


def build(name: str, **options: Any) -> tuple[Method, TinyNet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    student = TinyNet()
    method = build_methods([name], {name: options}, make_ctx(), student)[0]
    trainable = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    return method, student, torch.optim.SGD(trainable, lr=0.1)


def frozen_state(method: Method) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_steps_with_finite_nonzero_terms_that_train_the_student(name: str) -> None:
    method, student, opt = build(name, **STEP_OPTIONS.get(name, {}))
    assert method.views <= {"ulb_w", "ulb_s", "ulb_w2"}
    batch = make_batch()
    # Step 0 fills whatever a method accumulates (SimMatch's bank); step 1 is checked.
    first = train_step(method, student, batch, 0, opt)
    assert set(first.weights) == set(first.terms)

    result = method.step(batch, forward(student, batch, method.views), 1, student)
    assert set(result.weights) == set(result.terms)
    for term_name, term in result.terms.items():
        assert term.ndim == 0 and torch.isfinite(term), term_name
        assert term.item() != 0.0, f"{name}: {term_name} is exactly 0"
        assert isinstance(result.weights[term_name], float)
        grads = torch.autograd.grad(term, list(student.parameters()), retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), (
            f"{name}: {term_name} does not train the student"
        )
    for stat_name, stat in result.stats.items():
        assert stat.ndim == 0 and not stat.requires_grad, stat_name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_teachers_are_frozen_and_follow_the_student_after_each_step(name: str) -> None:
    method, student, opt = build(name, **STEP_OPTIONS.get(name, {}))
    teachers = [m for m in method.modules() if isinstance(m, EMATeacher)]
    for teacher in teachers:
        assert not any(p.requires_grad for p in teacher.parameters())
    before = [copy.deepcopy(list(t.parameters())) for t in teachers]
    train_step(method, student, make_batch(), 0, opt)
    train_step(method, student, make_batch(1), 1, opt)
    for teacher, old in zip(teachers, before, strict=True):
        assert any(not torch.equal(p, q) for p, q in zip(teacher.parameters(), old, strict=True))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_dict_round_trips(name: str) -> None:
    method, student, opt = build(name, **STEP_OPTIONS.get(name, {}))
    train_step(method, student, make_batch(), 0, opt)
    saved = frozen_state(method)
    fresh, _, _ = build(name, **STEP_OPTIONS.get(name, {}))
    fresh.load_state_dict(saved)
    assert fresh.state_dict().keys() == saved.keys()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_registry_holds_the_five_methods_and_the_baseline() -> None:
    assert set(METHODS) == {"supervised", "pseudolabel", "meanteacher", "fixmatch", "simmatch", "association"}


def test_unknown_option_fails_naming_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"fixmatch: unknown option\(s\) \['thresh'\]; valid: \['threshold', 'weight'\]"
    ):
        build_methods(["fixmatch"], {"fixmatch": {"thresh": 0.9}}, make_ctx(), TinyNet())
    with pytest.raises(ValueError, match="unknown SSL method 'mixmatch'; valid: association, fixmatch"):
        build_methods(["mixmatch"], {}, make_ctx(), TinyNet())


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fixmatch", {"threshold": 0.0}, "threshold must be in"),
        ("fixmatch", {"threshold": 1.5}, "threshold must be in"),
        ("fixmatch", {"weight": -1.0}, "weight must be >= 0"),
        ("pseudolabel", {"t1": 0.7, "t2": 0.6}, "t1 < t2"),
        ("pseudolabel", {"alpha_f": -1.0}, "alpha_f"),
        ("meanteacher", {"ema_decay": 1.0}, "ema_decay"),
        ("meanteacher", {"consistency": "l1"}, r"valid: \['kl', 'mse'\]"),
        ("meanteacher", {"rampup": 2.0}, "rampup"),
        ("simmatch", {"threshold": 0.0}, "threshold must be in"),
        ("simmatch", {"temperature": 0.0}, "temperature must be > 0"),
        ("simmatch", {"alpha": 1.5}, "alpha must be in"),
        ("simmatch", {"da_len": 0}, "da_len must be >= 1"),
        ("association", {"embedding": "raw"}, r"valid: \['features', 'normalized'\]"),
        ("association", {"visit_weight": -0.5}, "weights must be >= 0"),
        ("association", {"scale": 0.0}, "scale must be > 0"),
    ],
)
def test_config_rejects_values_outside_their_range(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        method_config(name, options)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_default_config_is_valid_and_frozen(name: str) -> None:
    config = method_config(name)
    for f in fields(config):
        with pytest.raises(AttributeError):
            setattr(config, f.name, getattr(config, f.name))


# --- method-specific behaviour ------------------------------------------------------------------


def test_pseudolabel_weight_ramps_over_the_run() -> None:
    method, student, _ = build("pseudolabel")  # t1 = 0.1, t2 = 0.6 of 100 steps, α_f = 3
    batch = make_batch()
    weights = [
        method.step(batch, forward(student, batch, method.views), s, student).weights["unsup_loss"]
        for s in (5, 35, 60, 99)
    ]
    assert weights == pytest.approx([0.0, 1.5, 3.0, 3.0])  # α(35) = 3 · (35 − 10)/(60 − 10)


def test_meanteacher_consistency_is_nonzero_when_teacher_and_student_see_different_views() -> None:
    # Regression for USB's bug (teacher compared with itself, term always 0): at construction the
    # teacher equals the student, so only the second weak view can make the term non-zero.
    method, student, _ = build("meanteacher")
    batch = make_batch()
    out = forward(student, batch, method.views)
    term = method.step(batch, out, 0, student).terms["unsup_loss"]
    assert term.item() > 1e-6
    batch.x_ulb_w2 = batch.x_ulb_w  # same view, same weights: nothing to match
    assert method.step(batch, out, 0, student).terms["unsup_loss"].item() == pytest.approx(0.0, abs=1e-10)


def test_meanteacher_term_is_nonzero_when_only_the_weights_differ() -> None:
    method, student, opt = build("meanteacher")
    batch = make_batch()
    train_step(method, student, batch, 0, opt)
    train_step(method, student, make_batch(1), 1, opt)  # teacher now lags the student
    batch.x_ulb_w2 = batch.x_ulb_w
    assert (
        method.step(batch, forward(student, batch, method.views), 2, student).terms["unsup_loss"].item()
        > 1e-8
    )


def test_meanteacher_requires_the_second_weak_view() -> None:
    method, student, _ = build("meanteacher")
    batch = make_batch()
    batch.x_ulb_w2 = None
    with pytest.raises(ValueError, match="x_ulb_w2"):
        method.step(batch, forward(student, batch, method.views), 0, student)


def test_fixmatch_reports_mask_rate_and_accuracy_over_masked_items() -> None:
    method, student, _ = build("fixmatch", threshold=0.3)
    batch = make_batch()
    out = forward(student, batch, method.views)
    stats = method.step(batch, out, 0, student).stats
    assert stats["mask_rate"].item() == 1.0  # every 3-class max probability is ≥ 1/3 > 0.3
    pseudo = out.logits_ulb_w.argmax(dim=1)
    known = batch.y_ulb >= 0
    assert stats["pseudo_acc"].item() == pytest.approx(
        (pseudo[known] == batch.y_ulb[known]).float().mean().item()
    )
    strict = build("fixmatch", threshold=1.0)[0].step(batch, out, 0, student)
    assert strict.stats["mask_rate"].item() == 0.0 and strict.terms["unsup_loss"].item() == 0.0
    assert torch.isnan(strict.stats["pseudo_acc"])


def test_simmatch_bank_holds_the_teachers_unit_embeddings_of_the_labelled_batch() -> None:
    method, student, opt = build("simmatch", threshold=0.3)
    batch = make_batch()
    with torch.no_grad():
        expected = F.normalize(method.teacher_head(method.teacher(batch.x_lb).features), dim=1)
    train_step(method, student, batch, 0, opt)
    torch.testing.assert_close(method.bank[batch.idx_lb], expected)
    assert method.bank_filled.tolist() == [True, True, True, True, False, False]
    assert method.bank[4:].abs().sum() == 0  # rows of labelled items not yet seen stay unwritten
    assert method.bank_labels.tolist() == make_ctx().labeled_targets.tolist()


def test_simmatch_in_loss_is_zero_until_the_bank_has_entries() -> None:
    method, student, _ = build("simmatch", threshold=0.3)
    batch = make_batch()
    first = method.step(batch, forward(student, batch, method.views), 0, student)
    assert first.terms["in_loss"].item() == 0.0  # empty bank: no instance similarity to match
    second = method.step(batch, forward(student, batch, method.views), 1, student)
    assert second.terms["in_loss"].item() > 0.0


def test_simmatch_trains_its_head_but_no_gradient_reaches_teacher_or_bank() -> None:
    method, student, opt = build("simmatch", threshold=0.3)
    batch = make_batch()
    train_step(method, student, batch, 0, opt)
    out = forward(student, batch, method.views)
    result = method.step(batch, out, 1, student)
    (result.terms["unsup_loss"] + result.terms["in_loss"]).backward()
    assert all(p.requires_grad for p in method.head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.head.parameters())
    assert all(p.grad is None for t in (method.teacher, method.teacher_head) for p in t.parameters())
    assert not method.bank.requires_grad and method.bank.grad is None


def test_simmatch_distribution_alignment_history_is_a_ring_of_batch_means() -> None:
    method, student, _ = build("simmatch", da_len=2)
    batch = make_batch()
    out = forward(student, batch, method.views)
    mean_p = F.softmax(out.logits_ulb_w, dim=1).mean(dim=0).detach()
    for _ in range(3):
        method.step(batch, out, 0, student)
    assert method.p_model_next.item() == 1  # 3 writes into 2 slots: slot 0 written twice
    torch.testing.assert_close(method.p_model_history, torch.stack([mean_p, mean_p]))


@pytest.mark.parametrize("embedding", ["normalized", "features"])
def test_association_walks_on_the_embeddings_it_is_configured_for(embedding: str) -> None:
    # "normalized" (the default): unit embeddings, the labelled side scaled by the inverse
    # temperature; "features": the raw pooled features as they are
    method, student, _ = build("association", embedding=embedding, scale=3.0)
    batch = make_batch()
    out = forward(student, batch, method.views)
    result = method.step(batch, out, 0, student)
    if embedding == "normalized":
        a, b = 3.0 * out.emb_lb, out.emb_ulb_w
    else:
        a, b = out.feat_lb, out.feat_ulb_w
    p_ab, _, p_aba = association_probabilities(a, b)
    torch.testing.assert_close(result.terms["walker_loss"], walker_loss(p_aba, batch.y_lb))
    torch.testing.assert_close(result.terms["visit_loss"], visit_loss(p_ab))
    assert 0.0 <= result.stats["pseudo_acc"].item() <= 1.0


def test_ema_teacher_tracks_the_student_closely_at_first_then_averages() -> None:
    student = nn.Linear(1, 1, bias=False)
    teacher = EMATeacher(student, decay=0.9)
    with torch.no_grad():
        student.weight.fill_(2.0)
    teacher.update(student)  # update 0: α = min(1 − 1/1, 0.9) = 0 → copy
    assert teacher.model.weight.item() == pytest.approx(2.0)
    with torch.no_grad():
        student.weight.fill_(4.0)
    teacher.update(student)  # update 1: α = min(1 − 1/2, 0.9) = 0.5 → ½·2 + ½·4
    assert teacher.model.weight.item() == pytest.approx(3.0)
    for _ in range(20):
        teacher.update(student)  # α reaches 0.9: 3 → 4 geometrically, never past it
    assert 3.9 < teacher.model.weight.item() < 4.0


def test_ema_teacher_normalises_with_its_own_batch_statistics_even_in_eval() -> None:
    # Running statistics copied from the student do not fit averaged weights; the teacher must
    # normalise each batch by itself (its BN has weight 1, bias 0: output mean 0, variance 1).
    student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(student, decay=0.9)
    teacher.eval()
    out = teacher(torch.randn(64, 2) * 5 + 3)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(2), atol=1e-5, rtol=0)
    assert not out.requires_grad
