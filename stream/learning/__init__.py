"""The learning loop: `retrain` turns feedback into a challenger and compares it with the
champion, `registry` keeps models on the `models` topic (hot swap), `recall` estimates each
version's recall from audits, fed by `watcher`.

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.errors import RegistryError, RetrainError
    from sluice.stream.learning.recall import (
        RecallEstimate,
        RecallTally,
        estimate_recall,
        poisson_interval,
    )
    from sluice.stream.learning.registry import (
        ACTIVE_KEY,
        Activation,
        ModelWatcher,
        Registry,
        RegistryEntry,
        activate,
        publish_model,
        read_registry,
    )
    from sluice.stream.learning.retrain import (
        Comparison,
        Label,
        RetrainResult,
        compare,
        evaluate,
        read_feedback,
        read_outcomes,
        retrain,
        time_split,
        training_labels,
        write_report,
    )
    from sluice.stream.learning.watcher import OutcomeWatcher

__all__ = [
    "ACTIVE_KEY",
    "Activation",
    "Comparison",
    "Label",
    "ModelWatcher",
    "OutcomeWatcher",
    "RecallEstimate",
    "RecallTally",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "RetrainError",
    "RetrainResult",
    "activate",
    "compare",
    "estimate_recall",
    "evaluate",
    "poisson_interval",
    "publish_model",
    "read_feedback",
    "read_outcomes",
    "read_registry",
    "retrain",
    "time_split",
    "training_labels",
    "write_report",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.learning.retrain": [
            "Comparison",
            "Label",
            "RetrainError",
            "RetrainResult",
            "compare",
            "evaluate",
            "read_feedback",
            "read_outcomes",
            "retrain",
            "time_split",
            "training_labels",
            "write_report",
        ],
        "sluice.stream.learning.registry": [
            "ACTIVE_KEY",
            "Activation",
            "ModelWatcher",
            "Registry",
            "RegistryEntry",
            "RegistryError",
            "activate",
            "publish_model",
            "read_registry",
        ],
        "sluice.stream.learning.recall": [
            "RecallEstimate",
            "RecallTally",
            "estimate_recall",
            "poisson_interval",
        ],
        "sluice.stream.learning.watcher": ["OutcomeWatcher"],
    },
)
