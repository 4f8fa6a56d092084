"""The `atlas` command line: `main` (atlas/cli/app.py) and one module per command group; what they share is in
atlas/cli/common.py."""

from atlas.cli.app import main

__all__ = ["main"]
