"""onnxruntime adapter: loading a model file into an inference session.

Rules: onnxruntime exceptions never escape; they become
:class:`~mesh.errors.ModelFormatError` with onnxruntime's first line of explanation.
Non-goals: activation policy (the core's rollout state machine decides).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from mesh.errors import ModelFormatError

#: Publishing loads the model once to prove onnxruntime accepts it.  Loading holds the
#: whole model in memory, so above this size publish checks structure only and each
#: node's activation pipeline performs the full load before anything goes live.
LOAD_CHECK_MAX_BYTES = 512 * 1024 * 1024


def new_session(path: Path, *, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: onnxruntime warnings are not user-facing
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises many unrelated types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFormatError(f"onnxruntime cannot load {path.name}: {first[:300]}") from None


def load_check(path: Path, total_bytes: int) -> bool:
    """Load ``path`` in onnxruntime if the model (``total_bytes`` with its external
    data) is small enough; True if it was loaded."""
    if total_bytes > LOAD_CHECK_MAX_BYTES:
        return False
    new_session(path)
    return True
