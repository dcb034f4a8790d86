"""The baselines: servers that do the least possible work on the herd's traffic.

Each is a standalone script started as its own process (``python echo.py``, ``node echo.js``,
``python relay.py``, ``python fanout.py``) that prints its port on stdout once it listens.
"""

from pathlib import Path

__all__ = ["BASELINES"]

BASELINES = Path(__file__).resolve().parent
