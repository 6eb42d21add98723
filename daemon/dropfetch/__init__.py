"""dropfetch: a daemon that turns a directory into a download queue."""

from __future__ import annotations

__version__ = "0.1.0"
