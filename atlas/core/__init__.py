"""Core, dependency-light building blocks of the atlas."""
