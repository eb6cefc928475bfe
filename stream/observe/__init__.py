"""Observing Sluice: Prometheus `metrics`, the `status` page with each alert's service `graph`,
the terminal view (`render`), and `logs` that say a repeated warning once per interval.

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.observe.graph import ROLE_COLOUR, service_graph_svg
    from sluice.stream.observe.logs import RepeatFilter, install_repeat_filter
    from sluice.stream.observe.metrics import CONTENT_TYPE, PipelineMetrics, WorkerProbes, summary
    from sluice.stream.observe.render import (
        SEVERITY_STYLE,
        alert_view,
        is_slow,
        latency_text,
        service_tree,
    )
    from sluice.stream.observe.status import (
        CONTENT_SECURITY_POLICY,
        STATUS_PATH,
        AlertBoard,
        Figures,
        StatusPage,
    )

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CONTENT_TYPE",
    "ROLE_COLOUR",
    "SEVERITY_STYLE",
    "STATUS_PATH",
    "AlertBoard",
    "Figures",
    "PipelineMetrics",
    "RepeatFilter",
    "StatusPage",
    "WorkerProbes",
    "alert_view",
    "install_repeat_filter",
    "is_slow",
    "latency_text",
    "service_graph_svg",
    "service_tree",
    "summary",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.observe.metrics": [
            "CONTENT_TYPE",
            "PipelineMetrics",
            "WorkerProbes",
            "summary",
        ],
        "sluice.stream.observe.status": [
            "CONTENT_SECURITY_POLICY",
            "STATUS_PATH",
            "AlertBoard",
            "Figures",
            "StatusPage",
        ],
        "sluice.stream.observe.graph": ["ROLE_COLOUR", "service_graph_svg"],
        "sluice.stream.observe.render": [
            "SEVERITY_STYLE",
            "alert_view",
            "is_slow",
            "latency_text",
            "service_tree",
        ],
        "sluice.stream.observe.logs": ["RepeatFilter", "install_repeat_filter"],
    },
)
