"""Import TensorFlow and JAX without their native log lines on stderr.

TensorFlow's C++ code logs through absl on import, before absl's logging is initialized, and those
lines ignore `TF_CPP_MIN_LOG_LEVEL` (TensorFlow 2.21 prints "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR" and a oneDNN notice even at level 3). They
are written to file descriptor 2 directly, past `sys.stderr`, so `contextlib.redirect_stderr` does
not catch them; an executed chapter shows them as a cell's stderr, which `jupyter-book build -W`
fails on. `quiet_import` points descriptor 2 at /dev/null for the import only
(`mamlbook.memory.native_stderr_silenced`, which torch.profiler's native lines need too).
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

from ...memory import native_stderr_silenced


def quiet_import(name: str) -> ModuleType:
    """`import name` with native stderr silenced and import-time warnings ignored.

    Only the first import is silenced (a loaded module has nothing left to print). Errors are raised
    after stderr is restored, with their message, so a failed import still says why. It goes through
    `__import__`, as the `import` statement does, so whatever hooks that sees, this sees too.
    """
    if name in sys.modules:
        __import__(name)
    else:
        with native_stderr_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frameworks' own deprecations, raised while they load
            __import__(name)
    return sys.modules[name]
