"""A real model for tests and benchmarks: silero-vad, fetched from the package index
into a cache at run time (never committed), and speech-like test audio."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

SILERO = "silero-vad==6.2.3"
SILERO_MEMBER = "silero_vad/data/silero_vad.onnx"
SAMPLE_RATE = 16_000
FRAME = 512  # new samples per call at 16 kHz
CONTEXT = 64  # samples of the previous frame the model sees again (576 = 64 + 512)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgemesh-tests"


def silero_onnx() -> Path | str:
    """Path of silero_vad.onnx, or the reason it could not be fetched."""
    cache = cache_dir()
    target = cache / "silero_vad-6.2.3.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("silero_vad-6.2.3-*.whl"))
    if not wheels:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", SILERO, "-d", str(cache)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        wheels = sorted(cache.glob("silero_vad-6.2.3-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return f"cannot download {SILERO} (package index unreachable?): {last}"
    with zipfile.ZipFile(wheels[0]) as z:
        data = z.read(SILERO_MEMBER)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r
    y = np.zeros(len(x))
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y0 = v - a1 * y1 - a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """A formant-synthesised voice: a gliding pitch pulse train through three vowel
    formant resonators, a new vowel every 150 ms (silero scores it as speech)."""
    rng = np.random.default_rng(seed)
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
    out = np.zeros(n)
    seg = 2400
    pos = 0
    phase = 0.0
    while pos < n:
        formants = vowels[rng.integers(len(vowels))]
        m = min(seg, n - pos)
        f0 = 110 + 40 * np.sin(np.linspace(0, np.pi, m)) + rng.normal(0, 2, m)
        ph = phase + np.cumsum(2 * np.pi * f0 / SAMPLE_RATE)
        phase = float(ph[-1])
        y = (np.mod(ph, 2 * np.pi) < 0.3).astype(float) + rng.normal(0, 0.02, m)
        for f, b in zip(formants, (80, 100, 150), strict=True):
            y = _resonator(y, f, b)
        out[pos : pos + m] = y * np.hanning(m)
        pos += m
    result: np.ndarray = (out / np.abs(out).max() * 0.4).astype(np.float32)
    return result


def frames(signal: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` model inputs of 576 samples (64 of context + 512 new), shape [1, 576]."""
    return [signal[FRAME * k : FRAME * k + FRAME + CONTEXT][None, :] for k in range(count)]


def vad_inputs(frame: np.ndarray, state: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {
        "input": frame.astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32) if state is None else state,
        "sr": np.array(SAMPLE_RATE, np.int64),
    }
