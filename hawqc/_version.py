"""hawqc's version: here, not in the package root, so that a module can read it without importing
`hawqc/__init__.py` (which every module's import goes through anyway, but whose names resolve lazily)."""

__version__ = "0.1.0"
