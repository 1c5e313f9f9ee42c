"""Budgeted sampling (spec.sampling): determinism, stability across versions, the caps, and the coverage
each strategy promises; then through a real run: left-out rows, the record, show and the "to label
next" export."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from loupe_api.dataset import DatasetSpec
from loupe_api.sampling import SAMPLING_REASON, SamplingSpec
from loupe_storage.store import LocalStore
from loupe_storage.versions import latest_version
from loupe_workers.curation import sampling
from loupe_workers.curation.review import parse_predictions
from loupe_workers.embedding.embed import EmbedConfig, Embedder, decode_for_model
from loupe_workers.pipeline.run import RunError, run_dataset
from loupe_workers.storage import manifest
from support.cli import loupe
from support.photos import PHOTO_NAMES, crop, jpeg, photo
from support.runs import request

STRATEGIES = ("random", "weighted", "kCenter", "uniqueness", "hardest")


def rows_for(n: int, *, start: int = 0, classes: int = 3, sites: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "sample_id": f"s{i:05d}",
            "sha256": f"{i:064x}",
            "key": f"cam/{i:05d}.jpg",
            "label": f"class{i % classes}",
            "metadata": json.dumps({"site": f"site{i % sites}", "weight": 1 + i % 3}),
        }
        for i in range(start, start + n)
    ]


def vectors_for(rows: list[dict[str, Any]], dim: int = 32) -> npt.NDArray[np.float32]:
    """One fixed random vector per sample id (the same id always gets the same vector)."""
    out = [np.random.default_rng(int(r["sample_id"][1:])).normal(size=dim).astype(np.float32) for r in rows]
    return np.stack(out)


def spec_for(strategy: str, **extra: Any) -> SamplingSpec:
    fields: dict[str, Any] = {"maxSamples": 40, "strategy": strategy, **extra}
    if strategy == "weighted":
        fields["weightField"] = "metadata.weight"
    if strategy == "hardest":
        fields["predictions"] = "predictions.jsonl"
    return SamplingSpec.model_validate(fields)


def hard_for(rows: list[dict[str, Any]]) -> dict[str, float]:
    # every third sample predicted, confidence spread by id
    return {r["sample_id"]: (int(r["sample_id"][1:]) * 37 % 100) / 100 for r in rows[::3]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_same_spec_selects_the_same_samples_whatever_the_input_order(strategy: str) -> None:
    rows = rows_for(300)
    vectors = vectors_for(rows)
    spec = spec_for(strategy)
    first = sampling.select(rows, spec, vectors=vectors, hard=hard_for(rows))
    again = sampling.select(rows, spec, vectors=vectors, hard=hard_for(rows))
    shuffled = np.random.default_rng(1).permutation(len(rows))
    reordered = sampling.select(
        [rows[i] for i in shuffled], spec, vectors=vectors[shuffled], hard=hard_for(rows)
    )
    assert len(first.selected) == 40
    assert first.selected == again.selected
    assert set(reordered.selected) == set(first.selected)
    assert set(first.left_out) == {r["sample_id"] for r in rows} - set(first.selected)
    assert all("maxSamples 40" in why for why in first.left_out.values())
    other_seed = sampling.select(rows, spec_for(strategy, seed=7), vectors=vectors, hard=hard_for(rows))
    if strategy in ("random", "weighted"):  # the seed is the draw
        assert set(other_seed.selected) != set(first.selected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_selected_sample_stays_selected_when_samples_arrive(strategy: str) -> None:
    spec = spec_for(strategy)
    before = rows_for(200)
    after = before + rows_for(200, start=200)
    old = sampling.select(before, spec, vectors=vectors_for(before), hard=hard_for(before))
    new = sampling.select(
        after, spec, sticky=set(old.selected), vectors=vectors_for(after), hard=hard_for(after)
    )
    assert set(old.selected) <= set(new.selected)
    assert len(new.selected) == 40 and new.summary.kept_from_parent == 40
    # without the parent's selection (the spec changed) newcomers compete with everyone: some win
    fresh = sampling.select(after, spec, vectors=vectors_for(after), hard=hard_for(after))
    assert set(fresh.selected) - set(old.selected)


def test_a_larger_random_budget_selects_a_superset() -> None:
    rows = rows_for(500)
    small = sampling.select(rows, SamplingSpec(max_samples=50))
    large = sampling.select(rows, SamplingSpec(max_samples=200))
    assert set(small.selected) < set(large.selected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_per_class_and_per_stratum_caps_are_honoured(strategy: str) -> None:
    rows = rows_for(600, classes=3, sites=5)
    rows += [{**r, "label": None} for r in rows_for(30, start=900)]  # unlabelled: one class of their own
    spec = spec_for(strategy, maxSamples=None, perClass=25, perStratum={"by": "metadata.site", "max": 12})
    chosen = sampling.select(rows, spec, vectors=vectors_for(rows), hard=hard_for(rows))
    picked = [r for r in rows if r["sample_id"] in set(chosen.selected)]
    per_class = Counter(r["label"] or "" for r in picked)
    per_site = Counter(json.loads(r["metadata"])["site"] for r in picked)
    assert max(per_class.values()) <= 25 and max(per_site.values()) <= 12
    # 5 sites x 12 = 60 fit under 4 classes x 25 = 100: every site is filled
    assert sorted(per_site.values()) == [12] * 5 and len(picked) == 60
    assert {g.value: g.selected for g in chosen.summary.strata} == dict(per_site)
    assert any("perStratum 12 reached for metadata.site" in why for why in chosen.left_out.values())
    both = sampling.select(rows, spec_for(strategy, maxSamples=30, perClass=8),
                           vectors=vectors_for(rows), hard=hard_for(rows))  # fmt: skip
    counts = Counter(r["label"] or "" for r in rows if r["sample_id"] in set(both.selected))
    assert len(both.selected) == 30 and max(counts.values()) <= 8 and counts[""] <= 8
    assert any("perClass 8 reached for class" in why for why in both.left_out.values())


@pytest.fixture(scope="module")
def real_embeddings() -> npt.NDArray[np.float32]:
    """The built-in model's embeddings of 10 scikit-image photos and 9 half-size windows of each."""
    images = []
    for name in PHOTO_NAMES:
        whole = photo(name, 448)
        images.append(whole)
        images.extend(crop(whole, 0.5, x, y) for x in (0, 0.5, 1) for y in (0, 0.5, 1))
    embedder = Embedder(EmbedConfig())
    pixels = np.stack([decode_for_model(jpeg(i), embedder.size, max_pixels=10**8) for i in images])
    return embedder.infer([str(i) for i in range(len(images))], pixels).vectors


def test_k_center_coverage_radius_shrinks_as_the_budget_grows(
    real_embeddings: npt.NDArray[np.float32],
) -> None:
    rows = [{"sample_id": f"p{i:03d}", "label": None} for i in range(len(real_embeddings))]
    radii = []
    for budget in (2, 5, 10, 20, 40, 80):
        chosen = sampling.select(rows, SamplingSpec(max_samples=budget, strategy="kCenter"),
                                 vectors=real_embeddings)  # fmt: skip
        index = [int(s[1:]) for s in chosen.selected]
        radius = chosen.summary.coverage_radius
        assert radius is not None
        assert radius == pytest.approx(sampling.coverage_radius(real_embeddings, index), abs=1e-5)
        random = sampling.select(rows, SamplingSpec(max_samples=budget))
        random_radius = sampling.coverage_radius(real_embeddings, [int(s[1:]) for s in random.selected])
        assert radius <= random_radius + 1e-6
        radii.append(radius)
    assert all(later < earlier for earlier, later in itertools.pairwise(radii)), radii
    everything = sampling.select(rows, SamplingSpec(max_samples=len(rows), strategy="kCenter"),
                                 vectors=real_embeddings)  # fmt: skip
    assert everything.summary.coverage_radius == pytest.approx(0.0, abs=1e-5)


def test_uniqueness_picks_spread_out_samples_over_near_copies(
    real_embeddings: npt.NDArray[np.float32],
) -> None:
    # the 10 whole photos, plus 6 near copies of the first (tiny noise on its embedding)
    whole = real_embeddings[::10]
    noise = np.random.default_rng(0).normal(scale=0.01, size=(6, whole.shape[1])).astype(np.float32)
    vectors = np.concatenate([whole, whole[:1] + noise])
    rows = [{"sample_id": f"w{i:02d}", "label": None} for i in range(len(whole))]
    rows += [{"sample_id": f"c{i:02d}", "label": None} for i in range(6)]
    chosen = sampling.select(rows, SamplingSpec(max_samples=9, strategy="uniqueness"), vectors=vectors)
    assert set(chosen.selected) == {f"w{i:02d}" for i in range(1, 10)}
    scores = sampling.uniqueness(vectors)
    assert scores.max() == pytest.approx(1.0) and scores[10:].max() < scores[1:10].min()


def test_weighted_sampling_follows_the_weights() -> None:
    rows = [
        {"sample_id": f"s{i:05d}", "label": None, "metadata": json.dumps({"w": 4 if i % 2 else 1})}
        for i in range(4000)
    ]
    rows += [{"sample_id": f"z{i:03d}", "label": None, "metadata": json.dumps({"w": 0})} for i in range(50)]
    heavy_shares = []
    for seed in range(3):
        spec = SamplingSpec(max_samples=200, strategy="weighted", weight_field="metadata.w", seed=seed)
        chosen = sampling.select(rows, spec)
        heavy = sum(1 for sid in chosen.selected if sid.startswith("s") and int(sid[1:]) % 2)
        heavy_shares.append(heavy / 200)
        assert not any(sid.startswith("z") for sid in chosen.selected)  # weight 0: never while others remain
    # each draw is proportional to the weight: 4 / (4 + 1) of a small sample is heavy
    assert all(0.72 < share < 0.88 for share in heavy_shares), heavy_shares
    last = sampling.select(
        rows, SamplingSpec(max_samples=4040, strategy="weighted", weight_field="metadata.w")
    )
    assert sum(1 for sid in last.selected if sid.startswith("z")) == 40  # weight 0 comes last


def test_hardest_first_takes_the_least_confident_predictions() -> None:
    rows = rows_for(12)
    text = "\n".join(
        json.dumps({"sample": sample, "label": "class0", "confidence": confidence})
        for sample, confidence in [
            (rows[3]["key"], 0.30),  # by key
            (rows[5]["sha256"], 0.10),  # by sha256
            (rows[7]["sample_id"], 0.95),
            (rows[9]["sample_id"], 0.55),
            ("not-a-sample", 0.0),
        ]
    )
    hard = sampling.hardness(rows, parse_predictions(text, "predictions.jsonl"))
    assert hard == pytest.approx({"s00003": 0.7, "s00005": 0.9, "s00007": 0.05, "s00009": 0.45})
    chosen = sampling.select(rows, SamplingSpec(max_samples=3, strategy="hardest", predictions="p.jsonl"),
                             hard=hard)  # fmt: skip
    assert chosen.selected == ["s00005", "s00003", "s00009"]
    # predicted samples before unpredicted ones, whatever their confidence
    six = sampling.select(
        rows, SamplingSpec(max_samples=6, strategy="hardest", predictions="p.jsonl"), hard=hard
    )
    assert six.selected[:4] == ["s00005", "s00003", "s00009", "s00007"]


def test_invalid_combinations_are_refused_naming_the_field() -> None:
    base: dict[str, Any] = {"sources": [{"name": "cams"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sampling": {"maxSamples": 5, "strategy": "kCenter"}}, "spec.embedding.enabled"),
        ({"sampling": {"maxSamples": 5, "strategy": "uniqueness"}}, "spec.embedding.enabled"),
        ({"sampling": {"maxSamples": 5, "strategy": "hardest"}}, "needs predictions"),
        ({"sampling": {"maxSamples": 5, "strategy": "weighted"}}, "needs weightField"),
        ({"sampling": {"strategy": "random"}}, "set maxSamples, perClass or perStratum"),
        (
            {"sampling": {"maxSamples": 5, "weightField": "metadata.w"}},
            "weightField is read by strategy weighted",
        ),
        ({"sampling": {"maxSamples": 0}}, "maxSamples"),
        ({"sampling": {"perStratum": {"by": "site", "max": 3}}}, "by"),
    ]
    for extra, words in cases:
        with pytest.raises(ValidationError, match=words):
            DatasetSpec.model_validate({**base, **extra})
    ok = DatasetSpec.model_validate(
        {**base, "embedding": {"enabled": True}, "sampling": {"maxSamples": 5, "strategy": "kCenter"}}
    )
    assert ok.sampling is not None and ok.sampling.strategy == "kCenter"


def test_left_out_rows_become_rejected_with_reason_sampling() -> None:
    row: dict[str, Any] = {"sample_id": "a", "disposition": "accepted", "split": "train", "reason": None}
    sampling.leave_out(row, "maxSamples 1 reached (random)")
    assert (row["disposition"], row["reason"], row["split"]) == ("rejected", SAMPLING_REASON, None)
    rejected = [row, {"sample_id": "b", "disposition": "rejected", "reason": "blur"}]
    assert [r["sample_id"] for r in sampling.to_label(rejected)] == ["a"]
    assert sampling.to_label(rejected)[0]["split"] == "to_label"


# --- through real runs -------------------------------------------------------------------------------

PIPELINE_PHOTOS = (*PHOTO_NAMES, "motorcycle", "hubble_deep_field", "gravel", "retina")

PROJECT = """apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {{name: cams}}
spec:
  filesystem: {{path: ./images}}
  labels: {{format: folder}}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {{name: pets}}
spec:
  sources: [{{name: cams}}]
  sampling: {sampling}
{extra}"""


def write_photos(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """Distinct real photos under folder/<label>/<name>.jpg; returns key -> sample id (sha256)."""
    keys = {}
    for i, name in enumerate(names):
        data = jpeg(photo(name, 256))
        key = f"{'ab'[i % 2]}/{name}.jpg"
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
        keys[key] = hashlib.sha256(data).hexdigest()
    return keys


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return loupe(*args, "--store", "store", cwd=project)


def test_a_run_leaves_out_with_reason_sampling_keeps_the_selection_and_exports_it_to_label(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    keys = write_photos(project / "images", PIPELINE_PHOTOS[:8])
    spec = project / "loupe.yaml"
    spec.write_text(PROJECT.format(sampling="{maxSamples: 5, seed: 3}", extra=""))
    first = run_cli(project, "run", "-f", "loupe.yaml", "--executor", "inline")
    assert first.returncode == 0, first.stderr
    assert "sampling (random): selected 5 of 8, left out 3" in first.stdout
    store = LocalStore(project / "store")
    v1 = latest_version(store, "pets")
    assert v1 is not None and v1.samples == 5 and v1.sampling is not None
    assert (v1.sampling.selected, v1.sampling.left_out, v1.stats.rejected) == (5, 3, {"sampling": 3})
    assert v1.stats.sampling is not None and v1.stats.sampling.left_out == 3
    selected = {r["sample_id"] for r in manifest.read_version_rows(store, v1)}
    left = [r for r in manifest.read_version_rows(store, v1, "rejected") if r["reason"] == SAMPLING_REASON]
    assert len(left) == 3 and all(r["split"] is None and "maxSamples 5" in r["detail"] for r in left)
    assert selected | {r["sample_id"] for r in left} == set(keys.values())

    shown = run_cli(project, "show", "pets")
    assert "sampling (random, seed 3; maxSamples 5): selected 5 of 8, left out 3" in shown.stdout
    out = tmp_path / "to-label"
    exported = run_cli(project, "export", "pets", "--to-label", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 samples" in exported.stdout and "to_label 3" in exported.stdout
    files = sorted(p for p in (out / "to_label").rglob("*.jpg"))
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == {r["sample_id"] for r in left}
    refused = run_cli(project, "export", "pets", "--to-label", "--split", "train", "--out", str(out))
    assert refused.returncode == 2 and "--to-label" in refused.stderr

    # newcomers that rank before selected samples do not push them out while the spec is unchanged
    more = write_photos(project / "images_more", PIPELINE_PHOTOS[8:])
    for key in more:
        target = project / "images" / f"new-{key}"
        target.parent.mkdir(parents=True, exist_ok=True)
        (project / "images_more" / key).rename(target)
    candidates = [{"sample_id": sid, "label": None} for sid in [*keys.values(), *more.values()]]
    fresh = sampling.select(candidates, SamplingSpec(max_samples=5, seed=3))
    assert set(fresh.selected) != selected  # without stickiness the selection would move
    second = run_cli(project, "run", "-f", "loupe.yaml", "--executor", "inline")
    assert second.returncode == 0, second.stderr
    v2 = latest_version(store, "pets")
    assert v2 is not None
    assert {r["sample_id"] for r in manifest.read_version_rows(store, v2)} == selected

    # a larger budget is a spec change, selected afresh; with room for every newcomer (5 + 6) the hash
    # ranks guarantee a superset, and with 2 of 14 left out, some of the 3 left out before come back
    spec.write_text(PROJECT.format(sampling="{maxSamples: 12, seed: 3}", extra=""))
    third = run_cli(project, "run", "-f", "loupe.yaml", "--executor", "inline")
    assert third.returncode == 0, third.stderr
    v3 = latest_version(store, "pets")
    assert v3 is not None and v3.samples == 12 and v3.version != v2.version
    assert selected < {r["sample_id"] for r in manifest.read_version_rows(store, v3)}
    changed = run_cli(project, "diff", f"pets@{v2.version}", f"pets@{v3.version}", "--json")
    report = json.loads(changed.stdout)["sampling"]
    assert report["from"]["selected"] == 5 and report["to"]["selected"] == 12
    assert len(report["broughtBack"]) >= 1 and report["leftOut"] == []


def test_k_center_and_hardest_through_a_run(tmp_path: Path) -> None:
    images = tmp_path / "images"
    keys = write_photos(images, PIPELINE_PHOTOS[:10])
    store_dir = tmp_path / "store"
    k_center = request(images, str(store_dir), embedding={"enabled": True},
                       sampling={"maxSamples": 4, "strategy": "kCenter"})  # fmt: skip
    result = run_dataset(k_center)
    assert result.created, result.message
    store = LocalStore(store_dir)
    record = latest_version(store, "defects")
    assert record is not None and record.sampling is not None and record.samples == 4
    radius = record.sampling.coverage_radius
    assert radius is not None and 0 < radius < 1
    assert record.stats.sampling is not None and record.stats.sampling.coverage_radius == radius

    # hardest: the least confident predictions, the file named relative to the spec's folder
    lines = [json.dumps({"sample": key, "label": "x", "confidence": c})
             for key, c in zip(keys, (0.9, 0.2, 0.8, 0.1, 0.99, 0.5, 0.7, 0.95, 0.3, 0.6), strict=True)]  # fmt: skip
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines))
    hardest = request(images, str(tmp_path / "store2"),
                      sampling={"maxSamples": 3, "strategy": "hardest", "predictions": "predictions.jsonl"})  # fmt: skip
    assert run_dataset(hardest, base_dir=tmp_path).created
    record = latest_version(LocalStore(tmp_path / "store2"), "defects")
    assert record is not None
    picked = {r["key"] for r in manifest.read_version_rows(LocalStore(tmp_path / "store2"), record)}
    assert picked == {list(keys)[i] for i in (3, 1, 8)}  # confidence 0.1, 0.2, 0.3
    page = tmp_path / "report.html"
    rendered = loupe("report", "defects", "--store", str(tmp_path / "store2"), "--out", str(page))
    assert rendered.returncode == 0, rendered.stderr
    html = page.read_text()
    assert 'id="sampling" data-selected="3" data-left-out="7"' in html and "sampling (hardest" in html
    missing = request(images, str(tmp_path / "store3"),
                      sampling={"maxSamples": 3, "strategy": "hardest", "predictions": "nowhere.jsonl"})  # fmt: skip
    with pytest.raises(RunError, match=r"spec\.sampling\.predictions"):
        run_dataset(missing, base_dir=tmp_path)


def test_an_invalid_sampling_spec_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_photos(project / "images", PIPELINE_PHOTOS[:2])
    (project / "loupe.yaml").write_text(
        PROJECT.format(sampling="{maxSamples: 5, strategy: kCenter}", extra="")
    )
    done = run_cli(project, "run", "-f", "loupe.yaml")
    assert done.returncode == 2
    assert "spec.embedding.enabled" in done.stderr and "kCenter" in done.stderr
    assert not (project / "store").exists()
    missing = "{maxSamples: 5, strategy: hardest, predictions: preds.jsonl}"
    (project / "loupe.yaml").write_text(PROJECT.format(sampling=missing, extra=""))
    done = run_cli(project, "run", "-f", "loupe.yaml")
    assert (
        done.returncode == 2 and "spec.sampling.predictions" in done.stderr and "preds.jsonl" in done.stderr
    )
    assert not (project / "store").exists()


def test_the_sampler_keeps_the_parent_selection_only_under_the_same_spec() -> None:
    rows = [{**r, "disposition": "accepted", "split": None} for r in rows_for(60)]
    spec = SamplingSpec(max_samples=10, seed=1)
    parent = {r["sample_id"]: {"disposition": "accepted"} for r in rows[50:]}  # 10 the hash would not pick
    same = [dict(r) for r in rows]
    rejected: dict[str, int] = {}
    groups, summary = sampling.Sampler(spec, parent_digest=spec.digest()).apply(
        [[r] for r in same], parent, rejected
    )
    assert {g[0]["sample_id"] for g in groups} == set(parent) and summary.kept_from_parent == 10
    assert rejected == {SAMPLING_REASON: 50}
    assert sum(1 for r in same if r.get("reason") == SAMPLING_REASON and r["disposition"] == "rejected") == 50
    changed = [dict(r) for r in rows]
    groups, summary = sampling.Sampler(spec, parent_digest="another").apply(
        [[r] for r in changed], parent, {}
    )
    assert {g[0]["sample_id"] for g in groups} != set(parent) and summary.kept_from_parent == 0
    with pytest.raises(sampling.SamplingError, match=r"needs spec\.embedding\.enabled"):
        sampling.Sampler(SamplingSpec(max_samples=3, strategy="kCenter")).apply([[r] for r in rows], {}, {})


def test_newcomers_left_out_by_a_full_budget_make_a_patch_and_are_processed_once(tmp_path: Path) -> None:
    """A full budget leaves newcomers out (selection is sticky): the content stays, but the "to label
    next" list grows, so a PATCH version records it. ``processed`` counts the objects decoded in a run:
    the sampled-out ones (decoded, then left out), never those carried unchanged or left unread by an
    access rule."""
    project = tmp_path / "project"
    keys = write_photos(project / "images", PIPELINE_PHOTOS[:8])
    write_photos(project / "vendor", PIPELINE_PHOTOS[10:12])
    vendor = "---\napiVersion: loupe.dev/v1alpha1\nkind: IngestSource\nmetadata: {name: vendor}\n" + (
        "spec: {filesystem: {path: ./vendor}, labels: {format: folder}, allowedUses: [training]}\n"
    )
    text = PROJECT.format(sampling="{maxSamples: 5, seed: 3}", extra="  use: evaluation\n")
    (project / "loupe.yaml").write_text(
        text.replace("sources: [{name: cams}]", "sources: [{name: cams}, {name: vendor}]") + vendor
    )
    store = LocalStore(project / "store")
    first = run_cli(project, "run", "-f", "loupe.yaml", "--executor", "inline")
    assert first.returncode == 0, first.stderr
    v1 = latest_version(store, "pets")
    assert v1 is not None and v1.version == "1.0.0"
    assert (v1.stats.scanned, v1.stats.processed) == (10, 8)  # vendor's 2: excluded unread (use_not_allowed)
    assert v1.stats.rejected == {"sampling": 3, "use_not_allowed": 2}

    more = write_photos(project / "more", PIPELINE_PHOTOS[8:10])
    for key in more:
        (project / "images" / f"new-{key}").parent.mkdir(parents=True, exist_ok=True)
        (project / "more" / key).rename(project / "images" / f"new-{key}")
    second = run_cli(project, "run", "-f", "loupe.yaml", "--executor", "inline")
    assert second.returncode == 0, second.stderr
    v2 = latest_version(store, "pets")
    assert v2 is not None and v2.version == "1.0.1" and v2.change is not None and v2.change.bump == "patch"
    assert v2.change.reasons == ["to-label list changed: 2 more samples left out by sampling"]
    assert (v2.stats.scanned, v2.stats.processed) == (12, 2)  # only the newcomers were decoded
    assert {r["sample_id"] for r in manifest.read_version_rows(store, v2)} == {
        r["sample_id"] for r in manifest.read_version_rows(store, v1)
    }
    left = {
        r["sample_id"]
        for r in manifest.read_version_rows(store, v2, "rejected")
        if r["reason"] == SAMPLING_REASON
    }
    assert len(left) == 5 and set(more.values()) <= left and left <= set(keys.values()) | set(more.values())
    exported = run_cli(project, "export", "pets", "--to-label", "--out", str(tmp_path / "to-label"))
    assert exported.returncode == 0 and "exported 5 samples" in exported.stdout, exported.stderr

    third = loupe(
        "run", "-f", "loupe.yaml", "--store", "store", "--executor", "inline", "--json", cwd=project
    )
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout)[0]
    assert "no change since 1.0.1" in result["message"] and result["stats"]["processed"] == 0, result
