"""How a component's own process ends: quickly, without the interpreter's teardown.

A component run as `python -m` imports torch, mlflow and matplotlib (torch
alone: 300,000 objects) and keeps all of it until the exit. The garbage
collector's full passes would re-scan it a few times a run, and the
interpreter's teardown spends 0.7-1.5 s collecting it at the end; neither
frees anything a finished process needs.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import Callable


def run_as_process(run: Callable[[], int]) -> int:
    """Call `run` (returning the exit code) as the whole life of this process, then end it fast.

    What is imported by now is frozen out of the garbage collector, and the
    exit code is handed to an exit handler that ends the process without
    teardown (_end_process). On an exception `run` raises, the freeze is undone
    and nothing is registered: the process exits the ordinary way after the traceback.
    """
    gc.freeze()
    try:
        code = run()
    except BaseException:
        gc.unfreeze()
        raise
    atexit.register(_end_process, code)
    return code


def _end_process(code: int) -> None:
    """Run the other exit handlers, flush, and end the process without tearing the interpreter down.

    Registered last, so it is the first exit handler to run; every other one
    (logging, DataLoader workers, temporary folders, coverage) still runs, once,
    here.
    """
    atexit.unregister(_end_process)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # C-level stdio buffers of extension libraries
    except Exception:
        pass
    os._exit(code)
