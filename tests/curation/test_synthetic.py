"""Synthetic data kept honest (spec.synthetic, IngestSource spec.synthetic).

Pure tests cover the marker, the cap (deterministic, published samples first), the split policy (real
samples split exactly as without synthetic data; synthetic ones to train) and the gap wording. The
end-to-end tests run the real ``loupe`` command over real photos (tiles of scikit-image's photographs)
next to procedural renders (gradients and flat-coloured shapes, drawn noiseless with PIL): the renders
are known to be sharper and cleaner than camera photos, and a control where the "synthetic" source holds
real photos must show no significant gap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from loupe_api.dataset import DatasetSpec, DatasetStatus
from loupe_api.synthetic import CAP_REASON, EVAL_REASON, SyntheticSpec, SyntheticSummary
from loupe_api.versions import VersionRecord
from loupe_operator.reconcile.dataset import Observed, reconcile_dataset
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.curation import synthetic
from loupe_workers.curation.splits import SplitUnit, assign_splits
from loupe_workers.storage import manifest
from support.cli import link_folders, loupe, run_spec, show_json
from support.photos import jpeg, photo

# --- pure ----------------------------------------------------------------------------------------


def test_a_sample_is_synthetic_by_source_or_by_its_marker_field() -> None:
    marked = SyntheticSpec(field="metadata.generator")
    assert synthetic.is_synthetic(True, {}, SyntheticSpec())
    assert not synthetic.is_synthetic(False, {"generator": "true"}, SyntheticSpec())  # no field named
    for value in ("true", "True", "YES", "1", "on", "synthetic"):
        assert synthetic.is_synthetic(False, {"generator": value}, marked), value
    for value in ("false", "0", "", "no", "blender"):
        assert not synthetic.is_synthetic(False, {"generator": value}, marked), value
    assert not synthetic.is_synthetic(False, {}, marked)


@pytest.mark.parametrize(
    ("wire", "where"),
    [
        ({"field": "generator"}, ("synthetic", "field")),
        ({"field": "label.x"}, ("synthetic", "field")),
        ({"maxRatio": 1.5}, ("synthetic", "maxRatio")),
        ({"maxRatio": -0.1}, ("synthetic", "maxRatio")),
        ({"evalSplits": "trainOnly"}, ("synthetic", "evalSplits")),
        ({"ratio": 0.2}, ("synthetic", "ratio")),
    ],
)
def test_an_invalid_synthetic_section_is_refused_naming_the_field(
    wire: dict[str, Any], where: tuple[str, str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        DatasetSpec.model_validate({"sources": [{"name": "cams"}], "synthetic": wire})
    [error] = caught.value.errors()
    assert tuple(str(p) for p in error["loc"]) == where


def rows(real: int, fake: int, prefix: str = "") -> list[dict[str, Any]]:
    made = [{"sample_id": f"{prefix}r{i:03d}", "synthetic": False} for i in range(real)]
    return made + [{"sample_id": f"{prefix}s{i:03d}", "synthetic": True} for i in range(fake)]


def test_the_cap_leaves_out_synthetic_samples_beyond_the_ratio_deterministically() -> None:
    spec = SyntheticSpec(max_ratio=0.2)
    assert synthetic.synthetic_allowance(40, 0.2) == 10  # 10 / 50 is exactly 0.2
    assert synthetic.synthetic_allowance(40, None) is None and synthetic.synthetic_allowance(40, 1) is None
    assert synthetic.synthetic_allowance(40, 0) == 0
    first = rows(40, 30)
    left = synthetic.cap(first, spec, seed=0, published=set())
    assert len(left) == 20 and all(r["synthetic"] for r in left)
    assert {r["reason"] for r in left} == {CAP_REASON} and {r["disposition"] for r in left} == {"rejected"}
    assert "maxRatio 0.2" in left[0]["detail"] and "10 synthetic samples allowed" in left[0]["detail"]
    again = synthetic.cap(rows(40, 30), spec, seed=0, published=set())
    assert [r["sample_id"] for r in again] == [r["sample_id"] for r in left]  # same input, same choice
    other_seed = synthetic.cap(rows(40, 30), spec, seed=1, published=set())
    assert {r["sample_id"] for r in other_seed} != {r["sample_id"] for r in left}
    # more synthetic input later: every sample kept before stays kept
    kept = {r["sample_id"] for r in first if r.get("disposition") != "rejected" and r["synthetic"]}
    more = rows(40, 30) + rows(0, 50, prefix="new")
    later = synthetic.cap(more, spec, seed=0, published=kept)
    still = {r["sample_id"] for r in more if r.get("disposition") != "rejected" and r["synthetic"]}
    assert still == kept and len(later) == 70
    # no cap, or under the cap: nothing leaves
    assert synthetic.cap(rows(40, 30), SyntheticSpec(), seed=0, published=set()) == []
    assert synthetic.cap(rows(40, 5), spec, seed=0, published=set()) == []


def units(ids: list[str]) -> list[SplitUnit]:
    return [SplitUnit((i,), "") for i in ids]


def test_real_only_splits_real_samples_as_without_synthetic_data_and_sends_synthetic_to_train() -> None:
    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    real = [f"r{i:03d}" for i in range(50)]
    fake = [f"s{i:03d}" for i in range(80)]
    previous = assign_splits(units(real[:30]), ratios, 3, {})  # an earlier version of 30 real samples
    alone = assign_splits(units(real), ratios, 3, previous)
    together, leaving = synthetic.assign(units(real + fake), set(fake), ratios, 3, previous, "realOnly")
    assert {s: together[s] for s in real} == alone  # real splits exactly as if synthetic data did not exist
    assert all(together[s] == previous[s] for s in real[:30])  # sticky
    assert {together[s] for s in fake} == {"train"} and not leaving
    # a synthetic sample grouped with a real one follows the group; in val or test it must leave
    grouped = [SplitUnit((r, f"copy-{r}"), "") for r in real]
    placed, leaving = synthetic.assign(grouped, {f"copy-{r}" for r in real}, ratios, 3, previous, "realOnly")
    assert leaving == {f"copy-{r}" for r in real if alone[r] != "train"} and leaving
    assert all(placed[f"copy-{r}"] == alone[r] for r in real)
    # mixed: synthetic samples are split like real ones
    mixed, none = synthetic.assign(units(real + fake), set(fake), ratios, 3, previous, "mixed")
    assert {mixed[s] for s in fake} == {"train", "val", "test"} and not none


def test_leave_eval_marks_only_accepted_members_that_must_leave() -> None:
    made = [{"sample_id": "a", "disposition": "accepted"}, {"sample_id": "b", "disposition": "accepted"}]
    left = synthetic.leave_eval(made, {"a"}, {"a": "val", "b": "train"})
    assert [r["sample_id"] for r in left] == ["a"]
    assert made[0]["reason"] == EVAL_REASON and "val" in made[0]["detail"]
    assert made[1]["disposition"] == "accepted"


def test_counts_overall_per_split_and_class_and_old_rows_read_as_real() -> None:
    accepted = [
        {"sample_id": "1", "split": "train", "label": "cat", "synthetic": True},
        {"sample_id": "2", "split": "train", "label": "cat", "synthetic": False},
        {"sample_id": "3", "split": "val", "label": "dog", "synthetic": False},
        {"sample_id": "4", "split": "train", "label": "dog", "synthetic": True},
        {"sample_id": "5", "split": "test", "label": "dog"},  # a row of a manifest without the column
    ]
    for row in accepted:
        row["disposition"] = "accepted"
    others = [{"sample_id": "6", "disposition": "rejected", "reason": CAP_REASON, "synthetic": True}]
    summary = synthetic.summarize(accepted + others, SyntheticSpec(max_ratio=0.4))
    assert summary is not None
    assert (summary.overall.real, summary.overall.synthetic, summary.overall.ratio) == (3, 2, 0.4)
    assert {k: (c.real, c.synthetic) for k, c in summary.splits.items()} == {
        "test": (1, 0),
        "train": (1, 2),
        "val": (1, 0),
    }
    assert {k: (c.real, c.synthetic) for k, c in summary.classes.items()} == {"cat": (1, 1), "dog": (2, 1)}
    assert summary.capped == 1 and summary.max_ratio == 0.4
    assert synthetic.summarize(accepted[1:3] + accepted[4:], SyntheticSpec()) is None


def test_the_gap_is_computed_on_a_fixed_bounded_subset_without_metadata() -> None:
    made = [
        {"sample_id": f"{i:05d}", "sharpness": float(i), "metadata": "{}", "label": "a"} for i in range(500)
    ]
    chosen = synthetic.gap_rows(made, limit=100)
    assert len(chosen) == 100 and "metadata" not in chosen[0]
    assert [r["sample_id"] for r in chosen] == [
        r["sample_id"] for r in synthetic.gap_rows(made[::-1], limit=100)
    ]
    assert len(synthetic.gap_rows(made[:50], limit=100)) == 50


def test_too_few_samples_are_not_judged() -> None:
    summary = synthetic.summarize(
        [{"sample_id": str(i), "disposition": "accepted", "synthetic": i < 3} for i in range(20)],
        SyntheticSpec(),
    )
    assert summary is not None
    described = synthetic.describe_gap(summary, [{}] * 17, [{}] * 3, {}, embedding_threshold=0.25)
    assert described.gaps == [] and described.verdict.startswith("too few samples to compare (3 synthetic")


def test_the_status_summary_carries_the_counts_only() -> None:
    record = VersionRecord.model_validate(
        {
            "dataset": "d", "version": "1.0.0", "created": "2026-01-01T00:00:00Z", "runId": "r",
            "specDigest": "s", "sourceDigest": "x", "contentDigest": "c", "codeVersion": "0",
            "manifestUri": "m", "rejectedUri": "r", "lineageUri": "l", "samples": 5, "stats": {},
            "synthetic": {"overall": {"real": 3, "synthetic": 2, "ratio": 0.4}, "verdict": "long words"},
        }
    )  # fmt: skip
    observed = Observed(
        name="d",
        generation=1,
        spec=DatasetSpec.model_validate({"sources": [{"name": "cams"}]}),
        status=DatasetStatus(),
        now=record.created,
        mode="submit",
        source_digests={"cams": "x"},
        versions=[record],
    )
    status = reconcile_dataset(observed).status
    assert status.synthetic is not None and (status.synthetic.real, status.synthetic.synthetic) == (3, 2)
    assert "verdict" not in json.dumps(status.to_wire())


# --- the corpus: real photo tiles and procedural renders -------------------------------------------

OBJECTS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon")
TEXTURES = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina")


def real_tiles() -> list[tuple[str, str, Image.Image]]:
    """(class, name, image): the four quarters of each photo, 256 px or less on the long side."""
    tiles = []
    for label, names in (("objects", OBJECTS), ("textures", TEXTURES)):
        for name in names:
            image = photo(name, 512)
            w, h = image.size
            for i, (x, y) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
                box = (x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)
                tiles.append((label, f"{name}-{i}", image.crop(box)))
    return tiles


def render(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A procedural scene: a two-colour gradient in a random direction and flat-coloured shapes, noiseless."""
    rng = np.random.default_rng(seed)
    w, h = size
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = (a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 10))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(points, fill=colour)
    return image


def png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_renders(folder: Path, seeds: range) -> None:
    for seed in seeds:
        label = "objects" if seed % 2 else "textures"
        path = folder / label / f"render-{seed:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(render(seed)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ (52 photo tiles), renders/ (40 renders), and control/ (the tiles split in two halves)."""
    root = tmp_path_factory.mktemp("synthetic")
    for i, (label, name, image) in enumerate(real_tiles()):
        for folder in ("real", f"control/{'a' if i % 2 else 'b'}"):
            path = root / folder / label / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(image, 92))
    write_renders(root / "renders", range(40))
    return root


def source(name: str, folder: str, *, synthetic_source: bool = False, static: str = "") -> str:
    flag = "  synthetic: true\n" if synthetic_source else ""
    meta = f"  metadata: {{static: {{{static}}}}}\n" if static else ""
    return (
        f"apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\nmetadata: {{name: {name}}}\nspec:\n"
        f"  filesystem: {{path: {folder}}}\n  labels: {{format: folder}}\n{flag}{meta}---\n"
    )


def spec_file(sources: list[str], names: list[str], extra: str = "") -> str:
    return (
        "".join(sources)
        + "apiVersion: loupe.dev/v1alpha1\nkind: Dataset\nmetadata: {name: mixed}\nspec:\n"
        + f"  sources: [{', '.join('{name: ' + n + '}' for n in names)}]\n"
        + "  splits: {train: 0.6, val: 0.2, test: 0.2, seed: 1}\n"
        + "".join(f"  {line}\n" for line in extra.strip().splitlines())
    )


@pytest.fixture
def project(corpus: Path, tmp_path: Path) -> Path:
    return link_folders(corpus, tmp_path, ("real", "renders", "control"))


def run(project: Path, text: str) -> Any:
    return run_spec(project, text)


def show(project: Path, ref: str = "mixed") -> dict[str, Any]:
    return show_json(project, ref)


def accepted_rows(project: Path, version: str | None = None) -> list[dict[str, Any]]:
    store = LocalStore(project / "store")
    records = list_versions(store, "mixed")
    record = records[-1] if version is None else next(r for r in records if r.version == version)
    return manifest.read_version_rows(store, record)


REAL_AND_RENDERS = [source("cams", "real"), source("renders", "renders", synthetic_source=True)]


def test_ratio_recorded_and_synthetic_samples_only_in_train_by_default(project: Path) -> None:
    done = run(project, spec_file(REAL_AND_RENDERS, ["cams", "renders"]))
    assert done.returncode == 0, done.stderr
    rows_ = accepted_rows(project)
    fake = [r for r in rows_ if r["synthetic"]]
    real = [r for r in rows_ if not r["synthetic"]]
    assert {r["source"] for r in fake} == {"renders"} and {r["source"] for r in real} == {"cams"}
    assert len(fake) >= 35 and len(real) >= 45  # renders and tiles are neither duplicates nor rejected
    assert {r["split"] for r in fake} == {"train"}
    real_splits = {s: sum(1 for r in real if r["split"] == s) for s in ("train", "val", "test")}
    # val and test are shares of the real samples
    assert (
        abs(real_splits["val"] - 0.2 * len(real)) <= 1.5 and abs(real_splits["test"] - 0.2 * len(real)) <= 1.5
    )
    summary = SyntheticSummary.model_validate(show(project)["synthetic"])
    assert (summary.overall.real, summary.overall.synthetic) == (len(real), len(fake))
    assert summary.overall.ratio == pytest.approx(len(fake) / len(rows_))
    assert summary.splits["val"].synthetic == summary.splits["test"].synthetic == 0
    assert summary.splits["train"].synthetic == len(fake)
    assert {k: c.synthetic for k, c in summary.classes.items()} == {
        label: sum(1 for r in fake if r["label"] == label) for label in ("objects", "textures")
    }
    text = loupe("show", "mixed", "--store", "store", cwd=project).stdout
    assert f"synthetic: {len(fake)} of {len(rows_)} samples" in text, text
    made = loupe("report", "mixed", "--out", "report.html", "--store", "store", cwd=project)
    assert made.returncode == 0, made.stderr
    page = (project / "report.html").read_text()
    assert f'data-synthetic-ratio="{summary.overall.ratio:.4f}"' in page
    assert 'data-gap="quality.noise" data-significant="true"' in page


def test_mixed_eval_splits_let_synthetic_samples_into_val_and_test(project: Path) -> None:
    done = run(project, spec_file(REAL_AND_RENDERS, ["cams", "renders"], "synthetic: {evalSplits: mixed}"))
    assert done.returncode == 0, done.stderr
    fake_splits = {r["split"] for r in accepted_rows(project) if r["synthetic"]}
    assert fake_splits == {"train", "val", "test"}


def test_max_ratio_is_enforced_and_stable_when_more_synthetic_data_arrives(project: Path) -> None:
    renders = project / "more-renders"
    write_renders(renders, range(100, 120))
    sources = [source("cams", "real"), source("renders", "more-renders", synthetic_source=True)]
    first = run(project, spec_file(sources, ["cams", "renders"], "synthetic: {maxRatio: 0.2}"))
    assert first.returncode == 0, first.stderr
    before = accepted_rows(project)
    real = sum(1 for r in before if not r["synthetic"])
    kept_before = {r["key"] for r in before if r["synthetic"]}
    assert len(kept_before) == synthetic.synthetic_allowance(real, 0.2) and len(kept_before) < 20
    assert len(kept_before) / len(before) <= 0.2
    store = LocalStore(project / "store")
    [record] = list_versions(store, "mixed")
    capped = [r for r in manifest.read_version_rows(store, record, "rejected") if r["reason"] == CAP_REASON]
    assert len(capped) == 20 - len(kept_before) and all(r["synthetic"] for r in capped)
    assert record.synthetic is not None and record.synthetic.capped == len(capped)
    assert record.stats.rejected[CAP_REASON] == len(capped)
    write_renders(renders, range(120, 160))  # 40 more synthetic samples
    second = run(project, spec_file(sources, ["cams", "renders"], "synthetic: {maxRatio: 0.2}"))
    assert second.returncode == 0, second.stderr
    after = accepted_rows(project)
    kept_after = {r["key"] for r in after if r["synthetic"]}
    assert kept_after == kept_before  # the cap was full: the earlier choice stays, nothing reshuffles
    # a larger cap makes room: the earlier choice stays and newcomers join it
    third = run(project, spec_file(sources, ["cams", "renders"], "synthetic: {maxRatio: 0.3}"))
    assert third.returncode == 0, third.stderr
    final = accepted_rows(project)
    kept_final = {r["key"] for r in final if r["synthetic"]}
    assert kept_final > kept_before and len(kept_final) == synthetic.synthetic_allowance(real, 0.3)


def test_the_gap_is_detected_and_described_and_a_real_control_shows_none(project: Path) -> None:
    extra = "embedding: {enabled: true}"
    done = run(project, spec_file(REAL_AND_RENDERS, ["cams", "renders"], extra))
    assert done.returncode == 0, done.stderr
    summary = SyntheticSummary.model_validate(show(project)["synthetic"])
    gaps = {g.measure: g for g in summary.gaps}
    # known by construction: the renders are noiseless and a few flat colours (less tonal detail)
    noise, entropy = gaps["quality.noise"], gaps["quality.entropy"]
    assert noise.significant and entropy.significant
    assert noise.synthetic_median == 0 and noise.real_median is not None and noise.real_median > 0
    assert noise.text.startswith("synthetic images are cleaner (less noise) than real ones"), noise.text
    assert entropy.synthetic_median is not None and entropy.real_median is not None
    assert entropy.synthetic_median < entropy.real_median and "simpler" in entropy.text
    assert gaps["embeddings"].significant and summary.embedding is not None and summary.embedding > 0.5
    assert "far apart in embedding space" in gaps["embeddings"].text
    assert not gaps["labels"].significant  # renders are split evenly between the two classes, like the tiles
    assert summary.verdict.startswith("synthetic images differ from real ones in")
    text = loupe("show", "mixed", "--store", "store", cwd=project).stdout
    assert "cleaner (less noise) than real ones" in " ".join(text.split()), text
    # control: the "synthetic" source holds real photos (every other tile)
    control = [source("half", "control/a"), source("other", "control/b", synthetic_source=True)]
    (project / "store2").mkdir()
    (project / "loupe.yaml").write_text(spec_file(control, ["half", "other"], extra), encoding="utf-8")
    done = loupe(
        "run", "-f", "loupe.yaml", "--store", "store2", "--executor", "inline", "--json", cwd=project
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(loupe("show", "mixed", "--store", "store2", "--json", cwd=project).stdout)
    control_summary = SyntheticSummary.model_validate(shown["synthetic"])
    assert [g.measure for g in control_summary.gaps if g.significant] == []
    assert control_summary.verdict.startswith("no significant gap"), control_summary.verdict


def test_a_metadata_field_marks_synthetic_samples(project: Path) -> None:
    sources = [source("cams", "real"), source("renders", "renders", static="generator: 'yes'")]
    done = run(project, spec_file(sources, ["cams", "renders"], "synthetic: {field: metadata.generator}"))
    assert done.returncode == 0, done.stderr
    rows_ = accepted_rows(project)
    assert {r["source"] for r in rows_ if r["synthetic"]} == {"renders"}
    assert {r["split"] for r in rows_ if r["synthetic"]} == {"train"}
    assert all(not r["synthetic"] for r in rows_ if r["source"] == "cams")


def test_diff_shows_the_synthetic_counts_of_both_versions(project: Path) -> None:
    first = run(project, spec_file([source("cams", "real")], ["cams"]))
    assert first.returncode == 0, first.stderr
    second = run(project, spec_file(REAL_AND_RENDERS, ["cams", "renders"]))
    assert second.returncode == 0, second.stderr
    versions = [r.version for r in list_versions(LocalStore(project / "store"), "mixed")]
    diffed = loupe(
        "diff", f"mixed@{versions[0]}", f"mixed@{versions[1]}", "--store", "store", "--json", cwd=project
    )
    assert diffed.returncode == 0, diffed.stderr
    changes = json.loads(diffed.stdout)
    fake = sum(1 for r in accepted_rows(project) if r["synthetic"])
    assert changes["synthetic"]["from"]["synthetic"] == 0 and changes["synthetic"]["to"]["synthetic"] == fake
    assert changes["synthetic"]["addedSynthetic"] == fake
    text = loupe(
        "diff", f"mixed@{versions[0]}", f"mixed@{versions[1]}", "--store", "store", cwd=project
    ).stdout
    assert f"synthetic 0 -> {fake}" in text, text


def test_an_invalid_spec_is_refused_before_anything_is_written(project: Path) -> None:
    done = run(project, spec_file(REAL_AND_RENDERS, ["cams", "renders"], "synthetic: {field: generator}"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert "spec.synthetic.field" in message and "metadata.NAME" in message, message
    assert not (project / "store").exists()
