"""``python -m trainer.serve``: the model server's entry point, kept where Vertex AI containers call it.

The server is the ``serving`` package; see ``serving.cli`` for its routes and flags.
"""

from __future__ import annotations

import sys

from serving.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
