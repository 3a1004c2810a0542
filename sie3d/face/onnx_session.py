"""onnxruntime sessions for the insightface ONNX models (SCRFD, ArcFace); onnxruntime is optional."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("onnxruntime is not installed; it runs the insightface ONNX models: "
                          "pip install -e '.[insightface]' (or pip install onnxruntime), "
                          "or use the offline dlib backends") from None
    return onnxruntime


@lru_cache(maxsize=8)
def open_session(path: str | Path):
    """An ``onnxruntime.InferenceSession`` on CUDA when onnxruntime has it, else on CPU."""
    ort = _onnxruntime()
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's provider chatter out of CLI output
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
