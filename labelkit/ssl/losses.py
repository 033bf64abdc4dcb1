"""The semi-supervised losses as pure functions of tensors, one per paper equation.

Shapes: ``B`` items, ``C`` classes, ``K`` memory-bank entries, ``D`` embedding width. Logits are
unnormalised scores; probabilities are rows that sum to 1. Every target that the papers treat as a
constant (a pseudo-label, a teacher's output, a memory bank) is detached here, so a caller cannot
leak gradient into it by mistake.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Guards log(0) where a probability is built by averaging or multiplying (the association paper's
# reference code adds the same 1e-8).
_EPS = 1e-8


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """H(target, softmax(logits)) = −Σ_c target_c log p_c for each row: (B, C), (B, C) → (B,)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1)


def pseudo_label_accuracy(pseudo_labels: Tensor, y_true: Tensor | None, mask: Tensor | None = None) -> Tensor:
    """Share of pseudo-labels that match the known true class, over items with ``y_true >= 0`` (and mask).

    A statistic, not a loss: 0-d and detached, NaN when no item qualifies. Computed as a ratio of
    sums so that it costs no device synchronisation.
    """
    if y_true is None:
        return torch.tensor(float("nan"), device=pseudo_labels.device)
    known = y_true >= 0
    if mask is not None:
        known = known & (mask > 0)
    correct = ((pseudo_labels == y_true) & known).sum()
    return (correct.float() / known.sum().float()).detach()


# --- Pseudo-Label (Lee 2013) --------------------------------------------------------------------


def pseudo_label_loss(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Lee 2013, Eq. 15 (unlabelled term): cross-entropy against y' = argmax of the detached logits.

    Returns (loss averaged over the B items, pseudo-labels (B,)).
    """
    pseudo = logits.detach().argmax(dim=1)
    return F.cross_entropy(logits, pseudo), pseudo


def pseudo_label_weight(step: int, *, t1: float, t2: float, alpha_f: float) -> float:
    """Lee 2013, Eq. 16: α(t) = 0 for t < T1, α_f (t − T1)/(T2 − T1) for T1 ≤ t < T2, α_f after."""
    if step < t1:
        return 0.0
    if step < t2:
        return alpha_f * (step - t1) / (t2 - t1)
    return alpha_f


# --- Mean Teacher (Tarvainen & Valpola 2017) / Π-model (Laine & Aila 2017) -------------------------


def consistency_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Tarvainen & Valpola 2017, Eq. 2 (J = E‖f(x, θ') − f(x, θ)‖²) on softmax outputs.

    Normalisation: squared Euclidean distance summed over the C classes, averaged over the B items.
    (Their code also divides by C; we do not, so the term does not shrink as classes are added.)
    """
    p = F.softmax(student_logits, dim=1)
    q = F.softmax(teacher_logits.detach(), dim=1)
    return ((p - q) ** 2).sum(dim=1).mean()


def consistency_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher ‖ student) = Σ_c q_c (log q_c − log p_c), averaged over items (Tarvainen & Valpola 2017, §3)."""
    log_q = F.log_softmax(teacher_logits.detach(), dim=1)
    log_p = F.log_softmax(student_logits, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()


def sigmoid_rampup(step: int, length: int) -> float:
    """Laine & Aila 2017, §3.1 (used by Mean Teacher): exp(−5 (1 − t)²), t = step/length clipped to [0, 1]."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


# --- FixMatch (Sohn et al. 2020) ------------------------------------------------------------------


def fixmatch_loss(logits_w: Tensor, logits_s: Tensor, *, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Sohn et al. 2020, Eq. 4: (1/μB) Σ_b 1[max q_b ≥ τ] H(q̂_b, p_m(y | A(u_b))), q_b = softmax(weak logits).

    The mean runs over all μB items, masked ones counting as zero. Returns (loss, mask (μB,) float
    0/1, pseudo-labels q̂ = argmax q (μB,)).
    """
    q = F.softmax(logits_w.detach(), dim=1)
    confidence, pseudo = q.max(dim=1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()
    return loss, mask, pseudo


def _wide(t: Tensor) -> Tensor:
    """float32, or float64 where it already is (callers that ask for double keep it)."""
    return t if t.dtype == torch.float64 else t.float()


def _full_precision(like: Tensor) -> torch.autocast:
    """Autocast off for the block (a no-op outside autocast): matmuls run in float32."""
    return torch.autocast(device_type=like.device.type, enabled=False)


# --- SimMatch (Zheng et al. CVPR 2022) --------------------------------------------------------------
# Equation numbers follow the project's reading of the paper (§3, "label propagation"); the maths
# was checked against the authors' released code as ported in USB (semilearn/algorithms/simmatch).


def similarity_distribution(emb: Tensor, bank: Tensor, t: float) -> Tensor:
    """Zheng et al. 2022, Eq. 2: q_i = exp(z·k_i / t) / Σ_j exp(z·k_j / t) over the K bank entries.

    ``emb`` (B, D) and ``bank`` (K, D) are L2-normalised, so z·k is the cosine similarity. → (B, K).
    In float32 even under bf16 autocast: at t = 0.1 bf16's 8-bit mantissa blurs the similarities.
    """
    with _full_precision(emb):
        return F.softmax(_wide(emb) @ _wide(bank).T / t, dim=1)


def simmatch_unfold(q: Tensor, p: Tensor, bank_labels: Tensor) -> Tensor:
    """Zheng et al. 2022, "unfolding" (Eq. 6-7): q̂_i = q_i p_{class(k_i)} / Σ_j q_j p_{class(k_j)}.

    Scales the instance similarity q (B, K) by the class prediction p (B, C) read at each bank
    entry's label, so bank entries of classes the classifier rules out lose weight. → (B, K).
    """
    scaled = q * p[:, bank_labels]
    return scaled / scaled.sum(dim=1, keepdim=True)


def simmatch_aggregate(q: Tensor, p: Tensor, bank_labels: Tensor, *, alpha: float) -> Tensor:
    """Zheng et al. 2022, "aggregation" (Eq. 5-6): p̂ = α p + (1 − α) q^agg, q^agg_c = Σ_{i: class(k_i) = c} q_i.

    The smoothing form with α (0.9) is the one in the authors' released code and in USB. → (B, C).
    """
    q_agg = torch.zeros_like(p).index_add_(1, bank_labels, q.to(p.dtype))
    return alpha * p + (1.0 - alpha) * q_agg


def distribution_alignment(p: Tensor, p_model: Tensor, p_target: Tensor) -> Tensor:
    """Berthelot et al. 2020 (ReMixMatch), §3.2, used by SimMatch on p^w: p̃ = Normalize(p · p_target / p_model).

    ``p_model`` (C,) is the running mean of the model's predictions on unlabelled data, ``p_target``
    (C,) the class distribution it should have.
    """
    aligned = p * (p_target / p_model)
    return aligned / aligned.sum(dim=1, keepdim=True)


def masked_soft_cross_entropy(
    target_probs: Tensor, logits_s: Tensor, *, threshold: float
) -> tuple[Tensor, Tensor]:
    """Zheng et al. 2022, §3.3: FixMatch's L_u with p̂ as the target, (1/μB) Σ_b 1[max p̂_b ≥ τ] H(p̂_b, p^s_b).

    FixMatch's masked loss with the soft label-propagated target in place of the one-hot argmax.
    Returns (loss, mask (μB,) float 0/1).
    """
    target = target_probs.detach()
    mask = (target.max(dim=1).values >= threshold).float()
    return (soft_cross_entropy(logits_s, target) * mask).mean(), mask


def simmatch_in_loss(q_hat_w: Tensor, emb_s: Tensor, bank: Tensor, t: float) -> Tensor:
    """Zheng et al. 2022, Eq. 9: L_in = H(q̂^w, q^s), averaged over items.

    q^s is the strong view's similarity distribution (Eq. 2) over the same bank. Only ``emb_s``
    receives gradient: the target and the bank are constants.
    """
    log_q_s = F.log_softmax(emb_s @ bank.detach().T / t, dim=1)
    return -(q_hat_w.detach() * log_q_s).sum(dim=1).mean()


# --- Learning by Association (Haeusser, Mordvintsev & Cremers, CVPR 2017) ------------------------------


def walk_probabilities(a: Tensor, b: Tensor) -> Tensor:
    """Haeusser et al. 2017, Eq. 1-2: M = A Bᵀ, P^{ab} = softmax_rows(M): one step of the walk from
    each row of ``a`` (N, D) to the rows of ``b`` (M, D). → (N, M), every row a distribution.
    In float32 even under bf16 autocast (the walk's products of probabilities underflow in bf16)."""
    with _full_precision(a):
        return F.softmax(_wide(a) @ _wide(b).T, dim=1)


def association_probabilities(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Haeusser et al. 2017, Eq. 1-3: P^{ab}, P^{ba} (``walk_probabilities`` both ways) and the round
    trip P^{aba} = P^{ab} P^{ba}.

    ``a`` (N, D) labelled and ``b`` (M, D) unlabelled embeddings. → (N, M), (M, N), (N, N); every row
    is a probability distribution (a random walk's transition probabilities).
    """
    p_ab = walk_probabilities(a, b)
    p_ba = walk_probabilities(b, a)
    return p_ab, p_ba, p_ab @ p_ba


def walker_loss(p_aba: Tensor, labels_a: Tensor) -> Tensor:
    """Haeusser et al. 2017, Eq. 4: H(T, P^{aba}), T_ij = 1[class_i = class_j] / |class_i|, averaged over rows.

    A round trip a → b → a should end at any item of the class it started from, uniformly.
    """
    same = (labels_a[:, None] == labels_a[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return -(target * torch.log(p_aba + _EPS)).sum(dim=1).mean()


def visit_loss(p_ab: Tensor) -> Tensor:
    """Haeusser et al. 2017, Eq. 5-6: H(V, P^{visit}), P^{visit}_j = mean_i P^{ab}_ij, V_j = 1/M.

    Asks every unlabelled item to be visited, so the walker cannot use only a few easy ones.
    """
    p_visit = p_ab.mean(dim=0)
    return -torch.log(p_visit + _EPS).mean()


def round_trip_by_class(p_aba: Tensor, labels_a: Tensor, num_classes: int) -> Tensor:
    """Class-to-class round-trip matrix: (i, j) = mean over labelled x of class i of Σ_{y of class j} P^{aba}_xy.

    Rows sum to 1; close to the identity when the embedding separates the classes through the
    unlabelled data. A class with no labelled item gets a row of NaN. → (num_classes, num_classes).
    """
    onehot = F.one_hot(labels_a, num_classes).to(p_aba.dtype)  # (N, C)
    to_class = p_aba @ onehot  # (N, C): probability of ending at each class, per start item
    return (onehot.T @ to_class) / onehot.sum(dim=0)[:, None]
