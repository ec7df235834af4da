"""Which of gRPC core's TCP stacks our server processes use; chosen before `grpc` is imported.

grpcio 1.80 moved Python onto gRPC's EventEngine (its `event_engine_client` and
`event_engine_listener` experiments turned on). On this 2-core machine the previous stack costs
less per call: a unary call that does nothing takes 0.40-0.47 ms on loopback against
0.55-0.57 ms, and the server side spends about 0.34 ms of CPU on it against 0.40-0.45 ms
(`python loadtests/bench_grpc_stack.py`, both stacks in alternating rounds). gRPC reads the
choice from GRPC_EXPERIMENTS once, when the library is loaded, so a process calls
`prefer_iomgr_stack()` before its first `import grpc`. A GRPC_EXPERIMENTS set by the user wins;
once gRPC drops these experiments the setting does nothing and the default stack is used.
"""

from __future__ import annotations

import os
import sys

IOMGR_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def prefer_iomgr_stack() -> bool:
    """Ask for the pre-EventEngine stack; False when it is too late (grpc already loaded) or the user chose."""
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ:
        return False
    os.environ["GRPC_EXPERIMENTS"] = IOMGR_EXPERIMENTS
    return True
