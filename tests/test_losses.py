"""Each loss against numbers worked out by hand on 1-3 rows, and where gradient may and may not flow."""

from __future__ import annotations

import math

import pytest
import torch

from labelkit.ssl import losses as L

LN3 = math.log(3.0)


def close(actual: torch.Tensor | float, expected: float | list, tol: float = 1e-6) -> None:
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float32), torch.tensor(expected), atol=tol, rtol=0
    )


def test_soft_cross_entropy_matches_hand_values() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4]; one-hot [1, 0] → −ln(1/4) = ln 4;
    # [1/2, 1/2] → −½ ln(1/4) − ½ ln(3/4) = ½ (ln 4 + ln 4/3)
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    close(L.soft_cross_entropy(logits, target), [math.log(4), 0.5 * (math.log(4) + math.log(4 / 3))])


def test_pseudo_label_accuracy_counts_only_known_and_masked_items() -> None:
    pseudo = torch.tensor([0, 1, 1, 2])
    y = torch.tensor([0, 0, -1, 2])  # item 2 unknown
    close(L.pseudo_label_accuracy(pseudo, y), 2 / 3)  # items 0, 1, 3 known; 0 and 3 right
    close(L.pseudo_label_accuracy(pseudo, y, torch.tensor([0.0, 1.0, 1.0, 0.0])), 0.0)  # only item 1
    assert torch.isnan(L.pseudo_label_accuracy(pseudo, torch.full((4,), -1)))
    assert torch.isnan(L.pseudo_label_accuracy(pseudo, None))


def test_pseudo_label_loss_uses_argmax_targets_and_their_cross_entropy() -> None:
    # row 1: p = [3/4, 1/4], y' = 0 → −ln 3/4; row 2: p = [1/5, 4/5], y' = 1 → −ln 4/5
    logits = torch.tensor([[LN3, 0.0], [0.0, math.log(4)]], requires_grad=True)
    loss, pseudo = L.pseudo_label_loss(logits)
    close(loss, (-math.log(0.75) - math.log(0.8)) / 2)
    assert pseudo.tolist() == [0, 1]
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.0), (9, 0.0), (10, 0.0), (20, 1.5), (29, 2.85), (30, 3.0), (99, 3.0)]
)
def test_pseudo_label_weight_is_lee_eq16(step: int, expected: float) -> None:
    # T1 = 10, T2 = 30, α_f = 3: α(20) = 3 · 10/20 = 1.5, α(29) = 3 · 19/20 = 2.85
    assert L.pseudo_label_weight(step, t1=10, t2=30, alpha_f=3.0) == pytest.approx(expected)


def test_consistency_mse_sums_squares_over_classes_and_averages_items() -> None:
    # row 1: student [1/4, 3/4], teacher [1/2, 1/2] → (1/4)² + (1/4)² = 1/8; row 2 identical → 0
    student = torch.tensor([[0.0, LN3], [1.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    close(L.consistency_mse(student, teacher), 1 / 16)


def test_consistency_kl_is_kl_teacher_to_student() -> None:
    # q = [1/2, 1/2], p = [1/4, 3/4]: ½ ln(½/¼) + ½ ln(½/¾) = ½ ln(4/3)
    close(L.consistency_kl(torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])), 0.5 * math.log(4 / 3))


def test_consistency_losses_send_no_gradient_to_the_teacher() -> None:
    student = torch.tensor([[0.0, LN3]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0]], requires_grad=True)
    for fn in (L.consistency_mse, L.consistency_kl):
        student.grad = None
        fn(student, teacher).backward()
        assert teacher.grad is None
        assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("step", "length", "expected"),
    [(0, 100, math.exp(-5)), (50, 100, math.exp(-1.25)), (100, 100, 1.0), (500, 100, 1.0), (0, 0, 1.0)],
)
def test_sigmoid_rampup(step: int, length: int, expected: float) -> None:
    assert L.sigmoid_rampup(step, length) == pytest.approx(expected)


def test_fixmatch_loss_averages_over_all_items_not_only_confident_ones() -> None:
    # weak row 1: softmax([ln 99, 0]) = [0.99, 0.01] ≥ 0.95 → kept, label 0; row 2: [½, ½] → masked.
    # strong row 1: [1/4, 3/4] → CE(label 0) = ln 4. Loss = (ln 4 + 0) / 2 = ln 2.
    logits_w = torch.tensor([[math.log(99), 0.0], [0.0, 0.0]], requires_grad=True)
    logits_s = torch.tensor([[0.0, LN3], [5.0, -5.0]], requires_grad=True)
    loss, mask, pseudo = L.fixmatch_loss(logits_w, logits_s, threshold=0.95)
    close(loss, math.log(2))
    assert mask.tolist() == [1.0, 0.0]
    assert pseudo.tolist() == [0, 0]
    loss.backward()
    assert logits_w.grad is None  # the pseudo-label is a constant
    assert logits_s.grad is not None
    assert logits_s.grad[0].abs().sum() > 0 and logits_s.grad[1].abs().sum() == 0  # masked row: none


def test_similarity_distribution_is_softmax_of_cosine_over_temperature() -> None:
    # z·k = [1, 0], / t = 0.5 → [2, 0] → [e²/(e²+1), 1/(e²+1)]
    q = L.similarity_distribution(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.5)
    e2 = math.exp(2)
    close(q, [[e2 / (e2 + 1), 1 / (e2 + 1)]])


def test_simmatch_unfold_scales_bank_entries_by_their_class_probability() -> None:
    # q = [.5, .25, .25], bank labels [0, 1, 1], p = [.2, .8] → q·p_unfold = [.1, .2, .2] / .5
    q = torch.tensor([[0.5, 0.25, 0.25]])
    close(L.simmatch_unfold(q, torch.tensor([[0.2, 0.8]]), torch.tensor([0, 1, 1])), [[0.2, 0.4, 0.4]])


def test_simmatch_aggregate_smooths_p_with_class_sums_of_q() -> None:
    # q^agg = [.5, .25 + .25] = [.5, .5]; p̂ = .9·[.2, .8] + .1·[.5, .5] = [.23, .77]
    q = torch.tensor([[0.5, 0.25, 0.25]])
    p_hat = L.simmatch_aggregate(q, torch.tensor([[0.2, 0.8]]), torch.tensor([0, 1, 1]), alpha=0.9)
    close(p_hat, [[0.23, 0.77]])


def test_distribution_alignment_divides_out_the_model_bias() -> None:
    # p = [.5, .5], model mean [.8, .2], target [.5, .5] → [.3125, 1.25] / 1.5625 = [.2, .8]
    aligned = L.distribution_alignment(
        torch.tensor([[0.5, 0.5]]), torch.tensor([0.8, 0.2]), torch.tensor([0.5, 0.5])
    )
    close(aligned, [[0.2, 0.8]])


def test_masked_soft_cross_entropy_keeps_confident_soft_targets() -> None:
    # target row 1 max .96 ≥ .95, p^s = [½, ½] → H = ln 2; row 2 max .6 masked → (ln 2 + 0)/2
    target = torch.tensor([[0.96, 0.04], [0.6, 0.4]], requires_grad=True)
    logits_s = torch.tensor([[0.0, 0.0], [3.0, 0.0]], requires_grad=True)
    loss, mask = L.masked_soft_cross_entropy(target, logits_s, threshold=0.95)
    close(loss, math.log(2) / 2)
    assert mask.tolist() == [1.0, 0.0]
    loss.backward()
    assert target.grad is None and logits_s.grad is not None


def test_simmatch_in_loss_hand_value_and_no_gradient_into_bank_or_target() -> None:
    # q^s = softmax([1, 0] / 0.5) = [e²/(e²+1), 1/(e²+1)]; target [1, 0] → ln(1 + e^−2)
    emb_s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    q_hat = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = L.simmatch_in_loss(q_hat, emb_s, bank, 0.5)
    close(loss, math.log(1 + math.exp(-2)))
    loss.backward()
    assert bank.grad is None and q_hat.grad is None
    assert emb_s.grad is not None and emb_s.grad.abs().sum() > 0


def test_walk_probabilities_is_a_row_softmax_of_dot_products() -> None:
    # a = [ln3, 0] against b = [e1, e2]: M = [[ln 3, 0]] → [3/4, 1/4]; a second row on e2 → [1/4, 3/4]
    p = L.walk_probabilities(torch.tensor([[LN3, 0.0], [0.0, LN3]]), torch.eye(2))
    close(p, [[0.75, 0.25], [0.25, 0.75]])


def test_association_probabilities_hand_values() -> None:
    # A = I, B = ln3·I → M = ln3·I; P^{ab} = P^{ba} = [[3/4, 1/4], [1/4, 3/4]];
    # P^{aba} = [[9/16 + 1/16, 3/16 + 3/16], ...] = [[5/8, 3/8], [3/8, 5/8]]
    p_ab, p_ba, p_aba = L.association_probabilities(torch.eye(2), LN3 * torch.eye(2))
    close(p_ab, [[0.75, 0.25], [0.25, 0.75]])
    close(p_ba, [[0.75, 0.25], [0.25, 0.75]])
    close(p_aba, [[5 / 8, 3 / 8], [3 / 8, 5 / 8]])
    # 1 labelled, 2 unlabelled: M = [[ln 3, 0]]; each unlabelled row of P^{ba} has one entry → 1
    p_ab, p_ba, p_aba = L.association_probabilities(
        torch.tensor([[1.0, 0.0]]), torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    )
    close(p_ab, [[0.75, 0.25]])
    close(p_ba, [[1.0], [1.0]])
    close(p_aba, [[1.0]])


def test_walker_loss_targets_uniform_over_same_class_items() -> None:
    p_aba = torch.tensor([[5 / 8, 3 / 8], [3 / 8, 5 / 8]])
    # classes [0, 1]: T = I → −ln(5/8) per row
    close(L.walker_loss(p_aba, torch.tensor([0, 1])), -math.log(5 / 8))
    # classes [0, 0]: T = ½ everywhere → −½ ln(5/8) − ½ ln(3/8) per row
    close(L.walker_loss(p_aba, torch.tensor([0, 0])), -0.5 * (math.log(5 / 8) + math.log(3 / 8)))


def test_visit_loss_is_cross_entropy_of_uniform_against_mean_visit() -> None:
    # both rows of P^{ab} = [3/4, 1/4] → P^{visit} = [3/4, 1/4] → −½ ln ¾ − ½ ln ¼
    p_ab = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
    close(L.visit_loss(p_ab), -0.5 * (math.log(0.75) + math.log(0.25)))
    close(L.visit_loss(torch.full((3, 4), 0.25)), math.log(4))  # uniform visits: the minimum, ln M


def test_walker_loss_gradient_reaches_both_labelled_and_unlabelled_embeddings() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(5, 3, requires_grad=True)
    _, _, p_aba = L.association_probabilities(a, b)
    L.walker_loss(p_aba, torch.tensor([0, 0, 1, 1])).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_round_trip_by_class_aggregates_rows_by_start_and_end_class() -> None:
    # labels [0, 0, 1]; per-row mass ending at class 0 / 1: [.8, .2], [.7, .3], [.8, .2]
    # class 0 = mean of rows 0, 1 = [.75, .25]; class 1 = row 2 = [.8, .2]; class 2 has no item → NaN
    p_aba = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    rt = L.round_trip_by_class(p_aba, torch.tensor([0, 0, 1]), 3)
    close(rt[:2, :2], [[0.75, 0.25], [0.8, 0.2]])
    close(rt[:2, 2], [0.0, 0.0])
    assert torch.isnan(rt[2]).all()


def test_round_trip_by_class_is_near_identity_for_separated_classes_and_not_for_mixed() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[8.0, 0.0], [0.0, 8.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    a = centres[labels] + 0.3 * torch.randn(6, 2, generator=g)
    b = centres[torch.tensor([0, 1] * 10)] + 0.3 * torch.randn(20, 2, generator=g)
    rt = L.round_trip_by_class(L.association_probabilities(a, b)[2], labels, 2)
    close(rt, [[1.0, 0.0], [0.0, 1.0]], tol=1e-3)
    close(rt.sum(dim=1), [1.0, 1.0])

    mixed = L.round_trip_by_class(
        L.association_probabilities(torch.ones(6, 2), torch.ones(20, 2))[2], labels, 2
    )
    close(mixed, [[0.5, 0.5], [0.5, 0.5]])  # identical embeddings: a walk forgets where it started
