"""Static files the server ships: the web pages' JS and CSS (`/static`). A path no file can have (a NUL or
other control character) is a 404, not the 500 of the ValueError that `os.stat` raises for it."""

from __future__ import annotations

import os

from starlette.staticfiles import StaticFiles


class PackageFiles(StaticFiles):
    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if any(ord(character) < 32 for character in path):
            return "", None
        return super().lookup_path(path)
