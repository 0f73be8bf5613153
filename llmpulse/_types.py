"""Array aliases shared across llmpulse, defined once so every module means the same type.

The shape is left open (``npt.NDArray``): the columns, matrices and grids of the pipeline
all use these names, and numpy's own functions return arrays of unknown shape anyway.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["BoolArray", "FloatArray", "IntArray", "ObjArray"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]
