"""Offscreen rendering outside this process: videos and camera observations.

Mesa's software OpenGL (EGL and OSMesa, llvmpipe) and TensorFlow crash when both are loaded in one process (a
segfault at whichever is loaded second), so a process that runs TensorFlow never creates a GL context itself:

- ``StateVideo`` records an episode as MuJoCo physics states and renders them in a child process on ``close``;
- ``RenderServer`` keeps a child process that renders camera images of given states, one request per step;
- ``VideoRecorder`` writes frames (mp4 through imageio-ffmpeg / a system ffmpeg / OpenCV, else GIF).

The child is ``python -m dppo.envs.video``; it loads the model from a saved ``.mjb`` and imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401

        return True
    except ImportError:
        return shutil.which("ffmpeg") is not None


class VideoRecorder:
    """Write uint8 HxWx3 frames to a video file.

    Backends, first that works: imageio + ffmpeg (imageio-ffmpeg or a system ffmpeg) for .mp4; OpenCV's
    ``VideoWriter`` (opencv-python comes with robosuite and bundles its own ffmpeg, codec mp4v); else a GIF via
    imageio/Pillow (the path's suffix becomes .gif). ``path`` tells which backend was used after ``close``.
    """

    def __init__(self, path: str | Path, fps: int = 30):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames: list[np.ndarray] = []
        self.backend: str | None = None
        self._writer = None
        if self.path.suffix.lower() == ".gif":
            self.backend = "gif"
        elif _ffmpeg_available():
            import imageio

            self._writer = imageio.get_writer(str(self.path), fps=fps, macro_block_size=1)
            self.backend = "imageio-ffmpeg"
        else:
            try:
                import cv2  # noqa: F401

                self.backend = "opencv"
            except ImportError:
                self.backend = "gif"
                self.path = self.path.with_suffix(".gif")
                warnings.warn("no ffmpeg and no OpenCV: writing a GIF instead of mp4", stacklevel=2)

    def add(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.uint8)
        if self.backend == "imageio-ffmpeg":
            self._writer.append_data(frame)
        elif self.backend == "opencv":
            import cv2

            if self._writer is None:
                h, w = frame.shape[:2]
                self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._writer.isOpened():  # no codec: fall back to GIF
                    self._writer = None
                    self.backend = "gif"
                    self.path = self.path.with_suffix(".gif")
                    self.frames.append(frame)
                    return
            self._writer.write(frame[:, :, ::-1])  # OpenCV wants BGR
        else:
            self.frames.append(frame)

    def close(self) -> Path:
        if self.backend in ("imageio-ffmpeg",) and self._writer is not None:
            self._writer.close()
        elif self.backend == "opencv" and self._writer is not None:
            self._writer.release()
        elif self.backend == "gif" and self.frames:
            import imageio

            imageio.mimsave(str(self.path), self.frames, duration=1000.0 / self.fps, loop=0)
        self._writer = None
        self.frames = []
        return self.path

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _state_spec() -> int:
    import mujoco
    return int(mujoco.mjtState.mjSTATE_FULLPHYSICS)


class StateVideo:
    """An episode video recorded as states (cheap, no OpenGL here) and rendered by a child process on ``close``."""

    def __init__(self, path: str | Path, model: Any, camera: str = "agentview", size: int = 256, fps: int = 30):
        import mujoco
        self.path, self.model, self.camera, self.size, self.fps = Path(path), model, camera, size, fps
        self._buf = np.empty(mujoco.mj_stateSize(model, _state_spec()), np.float64)
        self.states: list[np.ndarray] = []

    def add(self, data: Any) -> None:
        import mujoco
        mujoco.mj_getState(self.model, data, self._buf, _state_spec())
        self.states.append(self._buf.copy())

    def close(self) -> Path:
        """Render the recorded states to ``path`` (the suffix may become .gif, see ``VideoRecorder``)."""
        import mujoco
        if not self.states:
            return self.path
        with tempfile.TemporaryDirectory() as tmp:
            mujoco.mj_saveModel(self.model, f"{tmp}/model.mjb", None)
            np.save(f"{tmp}/states.npy", np.stack(self.states))
            out = subprocess.run(
                [sys.executable, "-m", "dppo.envs.video", f"{tmp}/model.mjb", f"{tmp}/states.npy", str(self.path),
                 "--camera", self.camera, "--size", str(self.size), "--fps", str(self.fps)],
                capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"rendering the video {self.path} failed (exit {out.returncode}): {out.stderr[-2000:]}")
        self.states = []
        self.path = Path(out.stdout.strip().splitlines()[-1])
        return self.path


class RenderServer:
    """Camera images of ``model`` at given states, rendered by a child process (upright uint8 (size, size, 3))."""

    def __init__(self, model: Any, cameras: list[str], size: int, reflections: bool = True):
        import mujoco
        self.model, self.cameras = model, list(cameras)
        self._buf = np.empty(mujoco.mj_stateSize(model, _state_spec()), np.float64)
        fd, self._model_path = tempfile.mkstemp(suffix=".mjb")
        os.close(fd)
        mujoco.mj_saveModel(model, self._model_path, None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dppo.envs.video", "--serve", self._model_path, "--size", str(size),
             "--cameras", *self.cameras, *([] if reflections else ["--no-reflections"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def render(self, data: Any) -> list[np.ndarray]:
        import mujoco
        mujoco.mj_getState(self.model, data, self._buf, _state_spec())
        try:
            pickle.dump(self._buf, self._proc.stdin)
            self._proc.stdin.flush()
            return pickle.load(self._proc.stdout)
        except (BrokenPipeError, EOFError) as e:
            raise RuntimeError(f"the render process exited ({self._proc.poll()}); is offscreen OpenGL "
                               "(MUJOCO_GL=egl or osmesa) available?") from e

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                pickle.dump(None, self._proc.stdin)
                self._proc.stdin.flush()
            except BrokenPipeError:
                pass
            self._proc.wait(timeout=30)
        if os.path.exists(self._model_path):
            os.remove(self._model_path)


def _load_for_render(model_path: str | Path, size: int) -> tuple[Any, Any, Any]:
    import mujoco
    model = mujoco.MjModel.from_binary_path(str(model_path))
    model.vis.global_.offwidth = max(size, model.vis.global_.offwidth)
    model.vis.global_.offheight = max(size, model.vis.global_.offheight)
    return model, mujoco.MjData(model), mujoco.Renderer(model, height=size, width=size)


def serve(model_path: str | Path, cameras: list[str], size: int, reflections: bool = True) -> None:
    """The child side of ``RenderServer``: read pickled states from stdin, write pickled image lists to stdout.

    ``reflections=False`` skips MuJoCo's reflection pass. On llvmpipe that pass is most of a frame's cost (Can,
    96x96, one core: 55 -> 16 ms per eye-in-hand frame, pixel-identical there since that camera sees no reflective
    surface; agentview 77 -> 45 ms, where the table's reflection of the robot goes)."""
    import mujoco
    model, data, renderer = _load_for_render(model_path, size)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while (state := pickle.load(inp)) is not None:
        mujoco.mj_setState(model, data, state, _state_spec())
        mujoco.mj_forward(model, data)
        images = []
        for cam in cameras:
            renderer.update_scene(data, camera=cam)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = reflections
            images.append(renderer.render().copy())
        pickle.dump(images, out)
        out.flush()
    renderer.close()


def render_states(model_path: str | Path, states_path: str | Path, out: str | Path, camera: str = "agentview",
                  size: int = 256, fps: int = 30) -> Path:
    """Render saved physics states with a fresh ``mujoco.Renderer`` (run in a process without TensorFlow)."""
    import mujoco
    model, data, renderer = _load_for_render(model_path, size)
    try:
        with VideoRecorder(out, fps=fps) as rec:
            for state in np.load(states_path):
                mujoco.mj_setState(model, data, state, _state_spec())
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera=camera)
                rec.add(renderer.render())
    finally:
        renderer.close()
    return rec.path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="render saved MuJoCo states to a video (StateVideo), or serve camera "
                                            "images (RenderServer, --serve)")
    p.add_argument("model")
    p.add_argument("states", nargs="?")
    p.add_argument("out", nargs="?")
    p.add_argument("--camera", default="agentview")
    p.add_argument("--cameras", nargs="+")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--serve", action="store_true")
    p.add_argument("--no-reflections", dest="reflections", action="store_false")
    a = p.parse_args(argv)
    if "tensorflow" in sys.modules:
        raise RuntimeError("dppo.envs.video must render in a process without TensorFlow")
    if a.serve:
        serve(a.model, a.cameras, a.size, a.reflections)
    else:
        print(render_states(a.model, a.states, a.out, a.camera, a.size, a.fps))


if __name__ == "__main__":
    main()
