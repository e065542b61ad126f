"""`aeopt report`: reads studies, checkpoints and stage outputs and renders figures and one HTML page."""

from __future__ import annotations

from aeopt.report.build import build_report

__all__ = ["build_report"]
