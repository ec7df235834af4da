"""The array types of the statistics functions (numpy.typing), shared by the modules of the package.

Every function converts its inputs with `np.asarray(x, dtype=float)`, so it takes any array-like
(`numpy.typing.ArrayLike`: numbers, lists, arrays) and returns float64 arrays. Where a result is
indexed with `[()]` a 0-d array comes back as a numpy float (a `float` subclass), so the
overloads say: scalars in, `float` out; an array (of at least one dimension) as the first
argument, `Floats` out; anything else, either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Float64 results, one per element of the broadcast inputs.
Floats = NDArray[np.float64]
#: Boolean results (a breach or a rejection per element).
Bools = NDArray[np.bool_]
#: Counts (buckets with trials), and the numpy integer a 0-d count comes back as.
Counts = NDArray[np.intp] | np.intp
#: An input array of any dtype.
AnyArray = NDArray[Any]
