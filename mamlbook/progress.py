"""Progress bars: widget bars in a notebook that has ipywidgets, text bars everywhere else.

`tqdm.auto` chooses between them, but in a notebook without ipywidgets it warns on import
("IProgress not found"), and that warning lands in the first output of every chapter that imports
the package. The text bar it falls back to serves as well, so the import is made quietly here.
"""

from __future__ import annotations

import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
