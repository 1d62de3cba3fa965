"""The FLARE23 reference cascade: a small ROI network and a 15-class organ/lesion network.

Standalone on purpose: a participant's container depends on numpy, scipy, nibabel and torch
only, never on ``flare_eval``.  Modules: :mod:`.network` (the 3D U-Net), :mod:`.plans`
(preprocessing parameters stored with the weights), :mod:`.volume` (orientation, resampling,
NIfTI I/O), :mod:`.inference` (the two-stage predictor), :mod:`.losses` (partial-label
Dice + cross-entropy), :mod:`.data` and :mod:`.training` (training on an nnU-Net-style folder).
"""

from __future__ import annotations

__all__: list[str] = []
