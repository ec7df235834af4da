"""TensorFlow started with its C++ start-up lines kept off the terminal and the logs, everything else shown.

Importing TensorFlow 2.21 on a machine without a GPU writes CUDA probes
(`cudart_stub.cc ... Could not find cuda drivers`, twice, each after absl's "All log messages
before absl::InitializeLog()" line), a CPU-feature note, and at the first device probe an
`E0000 ... cuda_platform.cc ... failed call to cuInit` line that looks like an error and is not;
training's first tf.data pipeline adds an `E0000 ... node_def_util.cc` line about an attribute
the op registry does not know. `TF_CPP_MIN_LOG_LEVEL` does not reach the lines written before
absl's logging is initialised, and at 3 it would hide real C++ errors too. So file descriptor 2
goes through a pipe whose reader drops exactly these lines, for as long as they can come: the
import and first device probe of a long-running server, the whole run of a training job. Outside
that window stderr is untouched, so nothing a server writes later waits in a pipe.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The lines TensorFlow writes when it starts on a CPU-only machine, and nothing else.
START_UP_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu\w+ factory"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .*, in other operations, rebuild TensorFlow with the appropriate compiler flags\.$"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition"
)


@contextmanager
def without_start_up_noise() -> Iterator[None]:
    """Until the block ends, every line written to fd 2 (C++ or Python) reaches it unless it is start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not START_UP_NOISE.search(line.decode(errors="replace").rstrip("\r\n")):
                    os.write(saved, line)

    reader = threading.Thread(target=copy, name="tensorflow-start-up-lines", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # drops the pipe's last write end: the reader reads to its end and stops
        reader.join(timeout=10)
        if not reader.is_alive():  # else a child still holds the pipe: leave the reader its descriptor
            os.close(saved)


def start_tensorflow() -> None:
    """Import TensorFlow and probe its devices, where its start-up lines are written."""
    # Read when TensorFlow is imported: INFO and WARNING lines off, errors shown (serving.cli's
    # level, which it sets too late once the import happens here first).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")  # the cuInit probe
