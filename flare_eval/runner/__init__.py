"""Running submissions: one fresh container per case, resource sampling, efficiency tables.

:func:`run_submission` drives a backend (:class:`DockerBackend`, or :class:`LocalBackend`
for a folder run under bubblewrap) over every case and writes the official efficiency
outputs; :mod:`flare_eval.runner.efficiency` holds the pure measures. Importing this package
loads neither docker nor NVML: those are imported when a backend or sampler is used.
"""

from __future__ import annotations

from flare_eval.runner.docker_backend import (
    DockerBackend,
    DockerOptions,
    connect,
    load_image,
    remove_expired,
)
from flare_eval.runner.efficiency import (
    EFFICIENCY_COLUMNS,
    OFFICIAL_PERIOD_S,
    cpu_utilisation_percent,
    efficiency_row,
    max_memory,
    official_auc,
    tolerance_auc,
    trapezoid_auc,
)
from flare_eval.runner.execution import Backend, Execution
from flare_eval.runner.intake import DiskFullError, OutputLimits
from flare_eval.runner.local_backend import LocalBackend
from flare_eval.runner.run import (
    INPUT_SUFFIX,
    RUN_STATUSES,
    RUNS_COLUMNS,
    check_prediction,
    find_cases,
    run_submission,
)
from flare_eval.runner.sampler import (
    GpuUnavailableWarning,
    ResourceSampler,
    Samples,
    process_tree_pids,
)

__all__ = [
    "Backend",
    "DockerBackend",
    "DiskFullError",
    "DockerOptions",
    "EFFICIENCY_COLUMNS",
    "Execution",
    "GpuUnavailableWarning",
    "INPUT_SUFFIX",
    "LocalBackend",
    "OFFICIAL_PERIOD_S",
    "OutputLimits",
    "RUNS_COLUMNS",
    "RUN_STATUSES",
    "ResourceSampler",
    "Samples",
    "check_prediction",
    "connect",
    "cpu_utilisation_percent",
    "efficiency_row",
    "find_cases",
    "load_image",
    "max_memory",
    "official_auc",
    "process_tree_pids",
    "remove_expired",
    "run_submission",
    "tolerance_auc",
    "trapezoid_auc",
]
