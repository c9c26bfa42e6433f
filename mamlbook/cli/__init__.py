"""The `mamlbook` command: the application layer on top of the library, the benches and the studies."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
