"""Shared fixtures; tests run on the CPU with few threads so that the suite is repeatable."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
