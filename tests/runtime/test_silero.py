"""A real model through the API: silero-vad with a speech-like and a silent input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.runtime.conftest import Node, Running
from tests.runtime.realmodel import frames, silero_onnx, speech_like, vad_inputs

FRAMES = 40  # 1.3 s of audio: the model's state needs a few frames to settle


@pytest.fixture(scope="session")
def silero() -> Path:
    found = silero_onnx()
    if isinstance(found, str):
        pytest.skip(found)
    return found


async def test_silero_vad_served_through_the_api(
    node: Node, running: Running, silero: Path
) -> None:
    # silero rejects all-zero smoke inputs (sr must be 8000 or 16000): the operator
    # gives it a sample request to smoke-test with
    node.data_dir.root.joinpath("samples").mkdir(parents=True)
    sample = vad_inputs(np.zeros((1, 576)))
    np.savez(
        node.data_dir.root / "samples" / "vad.npz",
        input=sample["input"],
        state=sample["state"],
        sr=sample["sr"],
    )
    await running.service.offer(node.publish_file(silero, "vad", 1))
    assert running.service.status()["vad"]["active_version"] == 1

    async def probabilities(signal: np.ndarray, binary: bool) -> list[float]:
        probs = []
        state = None
        async with running.client() as c:
            for frame in frames(signal, FRAMES):
                version, out = await c.infer("vad", vad_inputs(frame, state), binary=binary)
                assert version == 1
                assert out["output"].shape == (1, 1)
                state = out["stateN"].astype(np.float32)
                probs.append(float(out["output"][0, 0]))
        return probs

    n = FRAMES * 512 + 64
    speech = await probabilities(speech_like(n), binary=True)
    silence = await probabilities(np.zeros(n, np.float32), binary=False)
    assert max(silence) < 0.1
    assert max(speech) > 0.5
    assert np.mean(speech[-10:]) > 5 * np.mean(silence[-10:])


async def test_silero_without_a_sample_fails_its_smoke_run_clearly(
    node: Node, running: Running, silero: Path
) -> None:
    await running.service.offer(node.publish_file(silero, "vad", 1))
    rel = running.service.status()["vad"]["releases"][0]
    assert rel["state"] == "failed"
    assert rel["reason"].startswith("check: smoke inference with zero inputs failed")
