"""flare-eval: score, time and rank FLARE-style abdominal CT segmentation challenges.

Importing this package is cheap: it loads neither torch, docker, matplotlib nor dask.
Subpackages: :mod:`flare_eval.metrics` (DSC, NSD, HD95, lesions), :mod:`flare_eval.scoring`
(folders of cases), :mod:`flare_eval.runner` (containers and efficiency),
:mod:`flare_eval.ranking`, :mod:`flare_eval.report`, :mod:`flare_eval.cli`.
"""

from __future__ import annotations

from flare_eval.presets import FLARE23, Preset, get_preset

__all__ = ["FLARE23", "Preset", "get_preset", "__version__"]
__version__ = "0.1.0"
