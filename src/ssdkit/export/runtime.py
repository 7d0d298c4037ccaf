"""Running an exported ONNX detector with ONNX Runtime."""

from __future__ import annotations

import numpy as np

from .onnx_export import read_onnx_metadata

__all__ = ["OnnxRuntimeDetector"]


class OnnxRuntimeDetector:
    """An ``ssdkit export`` ONNX file in an ONNX Runtime InferenceSession (CPU unless ``providers`` say otherwise).

    ``detect(images float32 [N, 3, H, W]) -> (ids [N, P], scores [N, P], boxes_xyxy [N, P, 4])`` as numpy arrays,
    -1 padded; ``threads`` sets ONNX Runtime's intra-op threads, ``spin=False`` lets idle ones sleep;
    ``classes``, ``input_size`` (H, W), ``mean`` and ``std`` come from the file's metadata.
    """

    def __init__(self, path: str, providers: list[str] | None = None, threads: int | None = None, spin: bool = True):
        import onnx
        import onnxruntime as ort

        model = onnx.load(path)
        self.info = read_onnx_metadata(model)
        if self.info.get("outputs") != "detections":
            raise ValueError(
                f"{path} holds the raw network outputs (--raw), not detections; export it again without --raw"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spin:  # idle threads sleep: better on a CPU shared with other work
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._ort = ort.InferenceSession(
            model.SerializeToString(), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.classes = tuple(self.info["classes"])
        self.input_size = tuple(int(v) for v in self.info["input_size"])
        self.mean = tuple(self.info["mean"])
        self.std = tuple(self.info["std"])

    def detect(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        ids, scores, boxes = self._ort.run(["ids", "scores", "boxes"], {"images": x})
        return ids, scores, boxes
