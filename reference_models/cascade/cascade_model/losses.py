"""Dice + cross-entropy for partially labelled data (the heart of FLARE23 training).

A FLARE23 training case annotates only some classes; a voxel labelled 0 there means "background
or one of the classes nobody annotated".  So, per case, the channels of unannotated classes are
merged into background before the loss: the merged background probability is the sum of their
softmax probabilities (a log-sum-exp of log-probabilities), the marginal loss of Shi et al.,
"Marginal loss and exclusion loss for partially supervised multi-organ segmentation", MedIA
2021.  A prediction of an unannotated organ is then never punished as a background error.
"""

from __future__ import annotations

import torch

__all__ = ["merged_log_probabilities", "partial_dice_ce_loss"]


def merged_log_probabilities(logits: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Log-softmax with each case's unannotated channels merged into channel 0.

    Parameters
    ----------
    logits
        Network output, shape (B, C, X, Y, Z).
    annotated
        Boolean, shape (B, C): which classes each case annotates (channel 0 is ignored: the
        background is always merged with the unannotated classes).

    Returns
    -------
    torch.Tensor
        Shape (B, C): channel 0 holds ``log(p_0 + sum of unannotated p_c)``, unannotated
        channels hold ``-inf`` (probability 0), annotated channels their log-softmax.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    background = ~annotated.clone()
    background[:, 0] = True
    shape = (*annotated.shape, *([1] * (logits.dim() - 2)))
    background = background.view(shape)
    merged_bg = torch.logsumexp(log_p.masked_fill(~background, float("-inf")), dim=1, keepdim=True)
    merged = log_p.masked_fill(background, float("-inf"))
    return torch.cat([merged_bg, merged[:, 1:]], dim=1)


def partial_dice_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *, smooth: float = 1e-5
) -> torch.Tensor:
    """Cross-entropy plus (1 - soft Dice) on the merged probabilities.

    Parameters
    ----------
    logits
        Shape (B, C, X, Y, Z).
    target
        Integer labels, shape (B, X, Y, Z); a case's labels must be annotated classes or 0.
    annotated
        Boolean, shape (B, C).
    smooth
        Added to the Dice numerator and denominator.

    Returns
    -------
    torch.Tensor
        Scalar.

    Notes
    -----
    ``CE = mean over voxels of -log q_t`` with ``q`` the merged probabilities;
    ``Dice = mean over (case, foreground class c annotated and present in the case's target) of
    (2 sum q_c g_c + smooth) / (sum q_c + sum g_c + smooth)``, and the Dice term is 0 when no
    pair qualifies.  Absent classes are left to the cross-entropy: a per-case Dice of a class
    absent from a patch is ~0 for any false positive, a jumpy signal on small patches.

    Raises
    ------
    ValueError
        When a case's target holds a class it does not declare as annotated.
    """
    merged = merged_log_probabilities(logits, annotated)
    classes = logits.shape[1]
    present = torch.zeros_like(annotated)
    for b in range(target.shape[0]):
        present[b, torch.unique(target[b]).long()] = True
    if bool((present[:, 1:] & ~annotated[:, 1:]).any()):
        raise ValueError("target holds classes that are not declared annotated for their case")
    cross_entropy = torch.nn.functional.nll_loss(merged, target.long())
    probs = merged.exp()
    onehot = torch.nn.functional.one_hot(target.long(), classes).movedim(-1, 1).float()
    dims = tuple(range(2, logits.dim()))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    scored = annotated & present
    scored[:, 0] = False
    # indexing, not multiplying by a 0/1 weight: an unscored 0/0 (smooth=0) would poison the sum
    dice_loss = 1.0 - dice[scored].mean() if bool(scored.any()) else dice.new_zeros(())
    return cross_entropy + dice_loss
