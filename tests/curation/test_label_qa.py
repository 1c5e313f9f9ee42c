"""Label QA across label sets: kappa against textbook figures, simulated annotators with known error
rates and confusions against the analytic truth, golden accuracy, consensus, box agreement, and real
runs (real photos, several sources labelling the same bytes) through the real CLI: show, queue, diff,
the refusal by spec.labels.minAgreement, and the example examples/06-two-vendors."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from loupe_api.dataset import DatasetSpec
from loupe_api.labels import LabelsSpec
from loupe_workers.curation import label_qa
from support.cli import loupe
from support.photos import PHOTO_NAMES, jpeg, photo

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "06-two-vendors"

# ---- simulated annotators: 4 classes, known priors, error rates and confusions -----------------------

CLASSES = ("bolt", "nut", "washer", "screw")
PRIOR = np.array([0.4, 0.3, 0.2, 0.1])
ERRORS = {"ann-a": 0.05, "ann-b": 0.15, "ann-c": 0.30}
SAMPLES = 400
# Over 400 samples (100 simulations) the overall kappa has a standard deviation of 0.022, a pair's
# Cohen kappa 0.031 and a class's kappa up to 0.053 (the rarest class, 10 %): each tolerance is three of
# them, with a fixed seed, so a wrong estimator fails and a right one does not.
KAPPA_TOLERANCE = 0.07
PAIR_TOLERANCE = 0.095
CLASS_TOLERANCE = 0.16


def confusion(error: float) -> np.ndarray[Any, Any]:
    """P(given class | true class): a mistake names the next class 70 % of the time (a systematic
    confusion, e.g. bolt -> nut), either other class 15 %."""
    k = len(CLASSES)
    matrix = np.zeros((k, k))
    for c in range(k):
        matrix[c, c] = 1 - error
        matrix[c, (c + 1) % k] += 0.7 * error
        for other in range(k):
            if other not in (c, (c + 1) % k):
                matrix[c, other] += 0.15 * error
    return matrix


def simulate(
    n: int, seed: int, errors: dict[str, float] = ERRORS
) -> tuple[np.ndarray[Any, Any], dict[str, list[str]]]:
    """True classes of ``n`` samples and each annotator's classes for them."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(CLASSES), n, p=PRIOR)
    given = {}
    for name, error in errors.items():
        cdf = np.cumsum(confusion(error)[truth], axis=1)
        picked = (rng.random(n)[:, None] > cdf).sum(axis=1)
        given[name] = [CLASSES[i] for i in picked]
    return truth, given


def expected_kappa(errors: list[float]) -> float:
    """The population value of Fleiss' kappa (Cohen's for two raters) from the priors and confusions:
    mean pairwise agreement against chance from the mean marginal (Cohen: the product of marginals)."""
    matrices = [confusion(e) for e in errors]
    pairs = list(itertools.combinations(range(len(matrices)), 2))
    agree = np.mean([sum(PRIOR[c] * matrices[a][c] @ matrices[b][c] for c in range(4)) for a, b in pairs])
    marginals = [PRIOR @ m for m in matrices]
    if len(matrices) == 2:
        chance = float(marginals[0] @ marginals[1])
    else:
        chance = float((np.mean(marginals, axis=0) ** 2).sum())
    return float((agree - chance) / (1 - chance))


def expected_class_kappa(errors: list[float], cls: int) -> float:
    """Population Fleiss kappa of one class against the rest."""
    matrices = [confusion(e) for e in errors]
    says = [m[:, cls] for m in matrices]  # P(says cls | true class)
    pairs = list(itertools.combinations(range(len(matrices)), 2))
    agree = np.mean(
        [sum(PRIOR[c] * (says[a][c] * says[b][c] + (1 - says[a][c]) * (1 - says[b][c])) for c in range(4))
         for a, b in pairs]
    )  # fmt: skip
    share = float(np.mean([PRIOR @ s for s in says]))
    chance = share**2 + (1 - share) ** 2
    return float((agree - chance) / (1 - chance))


def votes_of(given: dict[str, list[str]]) -> list[dict[str, str]]:
    n = len(next(iter(given.values())))
    return [{name: classes[i] for name, classes in given.items()} for i in range(n)]


# ---- kappa: textbook figures ----------------------------------------------------------------------------


def test_cohen_kappa_matches_the_textbook_example() -> None:
    # 50 proposals, two readers: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert label_qa.cohen_kappa(a, b) == pytest.approx(0.4)
    assert label_qa.cohen_kappa(a, a) == pytest.approx(1.0)
    assert label_qa.cohen_kappa(["x"] * 5, ["x"] * 5) is None  # one class only: chance agreement is total


FLEISS_1971 = np.array(  # 10 subjects, 14 raters, 5 categories; Fleiss' kappa 0.210
    [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
     [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
)  # fmt: skip


def test_fleiss_kappa_matches_the_textbook_example_overall_and_per_category() -> None:
    kappa = label_qa.fleiss_kappa(FLEISS_1971)
    assert kappa is not None and round(kappa, 3) == 0.210
    # per category, Fleiss' own formula: 1 - sum x(m - x) / (N m (m - 1) p q)
    n, m = FLEISS_1971.shape[0], 14
    votes = [
        {f"r{r}": str(j) for r, j in enumerate(j for j, count in enumerate(row) for _ in range(count))}
        for row in FLEISS_1971
    ]
    figures = label_qa.class_agreement(votes)
    assert figures.method == "fleiss" and figures.kappa == pytest.approx(kappa, abs=1e-4)
    for j in range(5):
        x = FLEISS_1971[:, j]
        p = x.sum() / (n * m)
        expected = 1 - (x * (m - x)).sum() / (n * m * (m - 1) * p * (1 - p))
        assert figures.per_class[str(j)].kappa == pytest.approx(expected, abs=1e-4)


def test_fleiss_kappa_takes_samples_with_different_numbers_of_sets() -> None:
    # a sample labelled by two of three sets still counts, one labelled by one set does not
    counts = np.array([[2, 0], [1, 1], [3, 0], [0, 3], [1, 0]])
    by_hand_agree = np.mean([1.0, 0.0, 1.0, 1.0])  # (sum n_ij^2 - n_i) / (n_i (n_i - 1)), 4 judged
    share = np.array([6, 4]) / 10
    chance = (share**2).sum()
    assert label_qa.fleiss_kappa(counts) == pytest.approx((by_hand_agree - chance) / (1 - chance))


# ---- simulated annotators against the known truth ---------------------------------------------------


def test_three_annotators_kappa_per_class_and_pairs_within_tolerance_of_the_truth() -> None:
    _, given = simulate(SAMPLES, seed=7)
    figures = label_qa.class_agreement(votes_of(given))
    truth = expected_kappa(list(ERRORS.values()))
    assert figures.method == "fleiss" and figures.judged == SAMPLES
    assert figures.kappa is not None and abs(figures.kappa - truth) < KAPPA_TOLERANCE, (figures.kappa, truth)
    for j, name in enumerate(CLASSES):
        found = figures.per_class[name].kappa
        assert (
            found is not None
            and abs(found - expected_class_kappa(list(ERRORS.values()), j)) < CLASS_TOLERANCE
        )
    pairs = {tuple(p.sets): p.kappa for p in figures.pairs}
    for a, b in itertools.combinations(ERRORS, 2):
        found = pairs[(a, b)]
        assert found is not None and abs(found - expected_kappa([ERRORS[a], ERRORS[b]])) < PAIR_TOLERANCE
    # the worse the annotators, the lower the kappa: ann-a/ann-b agree most, ann-b/ann-c least
    assert pairs[("ann-a", "ann-b")] > pairs[("ann-a", "ann-c")] > pairs[("ann-b", "ann-c")]  # type: ignore[operator]


def test_two_annotators_use_cohen_and_a_large_simulation_meets_the_analytic_value() -> None:
    _, given = simulate(50_000, seed=3, errors={"ann-a": 0.05, "ann-c": 0.30})
    figures = label_qa.class_agreement(votes_of(given))
    assert figures.method == "cohen"
    assert figures.kappa == pytest.approx(expected_kappa([0.05, 0.30]), abs=0.01)


def test_golden_accuracy_per_set_and_class_matches_the_error_rates() -> None:
    truth, given = simulate(SAMPLES, seed=11)
    votes = votes_of({"golden": [CLASSES[t] for t in truth], **given})
    found = label_qa.golden_accuracy(votes, "golden")
    assert found.samples == SAMPLES and set(found.sets) == set(ERRORS)
    for name, error in ERRORS.items():
        accuracy = found.sets[name].accuracy
        assert accuracy is not None and abs(accuracy - (1 - error)) < 0.07, (name, accuracy)
        # recall per class is 1 - error too; precision follows from the confusion and the priors
        matrix = confusion(error)
        for j, cls in enumerate(CLASSES):
            per = found.sets[name].per_class[cls]
            precision = PRIOR[j] * (1 - error) / (PRIOR @ matrix[:, j])
            assert per.recall is not None and abs(per.recall - (1 - error)) < 0.15
            assert per.precision is not None and abs(per.precision - precision) < 0.15


def test_majority_consensus_is_as_accurate_as_the_analytic_vote_and_ties_go_to_review() -> None:
    truth, given = simulate(SAMPLES, seed=5)
    results = [
        label_qa.consensus({n: {"label": c, "boxes": []} for n, c in v.items()}) for v in votes_of(given)
    ]
    correct = np.mean([r.labels["label"] == CLASSES[t] for r, t in zip(results, truth, strict=True)])
    p = [1 - e for e in ERRORS.values()]
    # right when at least two annotators are right (two wrong ones agreeing on a wrong class lose to none)
    expected = p[0] * p[1] + p[0] * p[2] + p[1] * p[2] - 2 * p[0] * p[1] * p[2]
    assert abs(correct - expected) < 0.05 and correct > 1 - ERRORS["ann-b"]  # better than two of three
    ties = [r for r in results if r.kind == "tie"]
    assert ties and all(r.labels["label"] is None and r.disagree for r in ties)
    assert all(r.support == pytest.approx(2 / 3, abs=1e-3) for r in results if r.kind == "majority")


def test_golden_wins_the_consensus_and_support_counts_the_sets_agreeing() -> None:
    sets = {"golden": {"label": "nut"}, "a": {"label": "bolt"}, "b": {"label": "bolt"}}
    found = label_qa.consensus(sets, golden="golden")
    assert (
        found.labels["label"] == "nut"
        and found.kind == "golden"
        and found.support == pytest.approx(1 / 3, abs=1e-3)
    )
    assert found.disagree and "a says bolt" in found.detail
    assert label_qa.consensus(sets).labels["label"] == "bolt"  # without golden: the majority
    same = label_qa.consensus({"a": {"label": "nut"}, "b": {"label": "nut"}})
    assert same.kind == "unanimous" and same.support == 1.0 and not same.disagree


# ---- boxes ---------------------------------------------------------------------------------------------


def test_box_agreement_matches_greedily_at_iou_half_per_class() -> None:
    a = {"label": "car", "boxes": [
        {"class": "car", "bbox": [0, 0, 100, 100]},  # vendor b's copy is shifted by 20 px: IoU 0.64
        {"class": "car", "bbox": [300, 300, 50, 50]},  # b's is shifted by 30 px: IoU 0.18, no match
        {"class": "person", "bbox": [500, 0, 40, 80]},  # b gives no person: unmatched
    ]}  # fmt: skip
    # vendor b in YOLO (normalized centre, size) on a 1000 x 500 image
    b = {"label": "car", "boxes": [
        {"class": "car", "bbox": [0.07, 0.1, 0.1, 0.2], "format": "yolo"},
        {"class": "car", "bbox": [0.355, 0.65, 0.05, 0.1], "format": "yolo"},
    ]}  # fmt: skip
    tally = label_qa.BoxTally(0.5)
    tally.add({"a": a, "b": b}, width=1000, height=500)
    figures = tally.figures()
    assert figures is not None and figures.samples == 1
    assert (figures.per_class["car"].matched, figures.per_class["car"].union) == (1, 3)
    assert (figures.per_class["person"].matched, figures.per_class["person"].union) == (0, 1)
    assert figures.agreement == pytest.approx(1 / 4)
    # consensus boxes: a box given by more than half of the sets with boxes (here: both)
    agreed = label_qa.consensus({"a": a, "b": b}, width=1000, height=500)
    assert agreed.disagree and [x["class"] for x in agreed.labels["boxes"]] == ["car"]
    assert label_qa.match_boxes([(0, 0, 10, 10), (0, 0, 10, 12)], [(0, 0, 10, 12)], 0.5) == [(1, 0)]


# ---- one run's rows ------------------------------------------------------------------------------------


def _row(source: str, sha: str, label: str | None, disposition: str = "accepted") -> dict[str, Any]:
    labels = json.dumps({"label": label, "boxes": []}, sort_keys=True)
    return {"source": source, "sha256": sha, "key": f"{sha}.jpg", "labels": labels, "label": label,
            "width": 100, "height": 80, "disposition": disposition}  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    return [
        _row("vendor-a", "s1", "cat"), _row("vendor-b", "s1", "cat"),  # agree
        _row("vendor-a", "s2", "cat"), _row("vendor-b", "s2", "dog"),  # a tie: review
        _row("vendor-a", "s3", "dog"),  # one set: left as it is
        _row("vendor-a", "s4", "dog", "rejected"), _row("vendor-b", "s4", "cat", "rejected"),
    ]  # fmt: skip


def test_reconcile_attaches_label_sets_to_content_and_gates_on_the_floor() -> None:
    rows = _rows()
    done = label_qa.reconcile(rows, LabelsSpec())
    assert done.stats is not None and done.refusal is None
    assert done.stats.sets == ["vendor-a", "vendor-b"] and done.stats.method == "cohen"
    assert done.stats.judged == 3 and done.stats.consensus.ties == 2 and done.stats.consensus.single == 1
    assert done.stats.disagreements == 1  # s4 was left out by a gate: not in the review queue
    s1, s2 = rows[0], rows[2]
    assert json.loads(s1["label_sets"]) == {"vendor-a": {"label": "cat", "boxes": []},
                                            "vendor-b": {"label": "cat", "boxes": []}}  # fmt: skip
    assert s1["label"] == "cat" and s1["label_support"] == 1.0
    assert s2["label"] is None and s2["label_support"] == 0.5 and rows[3]["label"] is None
    assert "label_sets" not in rows[4] and rows[4]["label"] == "dog"
    counts = done.counts()
    assert counts is not None and (counts.sets, counts.judged, counts.disagreements) == (2, 3, 1)
    rows[2]["disposition"] = rows[3]["disposition"] = "duplicate"  # s2 dropped by dedup: nothing to review
    settled = done.settle([{**r, "sample_id": r["sha256"]} for r in rows])
    assert settled is not None and settled.disagreements == 0
    refused = label_qa.reconcile(_rows(), LabelsSpec(min_agreement=0.5))
    assert refused.refusal is not None and "below spec.labels.minAgreement 0.5" in refused.refusal
    assert label_qa.reconcile([_row("vendor-a", "s1", "cat")], LabelsSpec()).stats is None


def test_golden_must_name_a_source_of_the_dataset() -> None:
    with pytest.raises(ValueError, match=r"labels\.golden names nobody, not a source of spec\.sources"):
        DatasetSpec.model_validate({"sources": [{"name": "a"}], "labels": {"golden": "nobody"}})
    with pytest.raises(ValueError, match=r"min_agreement|minAgreement"):
        DatasetSpec.model_validate({"sources": [{"name": "a"}], "labels": {"minAgreement": 1.5}})


def test_golden_as_a_metadata_tag_is_validated_naming_the_field() -> None:
    spec = DatasetSpec.model_validate(
        {"sources": [{"name": "a"}], "labels": {"golden": "metadata.Reviewed=TRUE"}}
    )
    assert spec.labels.golden_tag() == ("Reviewed", "true") and spec.labels.golden_source() is None
    assert (
        DatasetSpec.model_validate(
            {"sources": [{"name": "a"}], "labels": {"golden": "a"}}
        ).labels.golden_source()
        == "a"
    )
    for bad in ("metadata.reviewed", "metadata.=x", "metadata.reviewed= "):
        with pytest.raises(
            ValueError, match=r"labels\.golden[\s\S]*neither a source name nor a tag metadata\.NAME=VALUE"
        ):
            DatasetSpec.model_validate({"sources": [{"name": "a"}], "labels": {"golden": bad}})


def test_a_golden_tag_makes_the_tagged_copy_truth_and_its_source_an_annotator_elsewhere() -> None:
    def row(source: str, sha: str, label: str, reviewed: bool = False) -> dict[str, Any]:
        metadata = json.dumps({"status": "reviewed"} if reviewed else {})
        return {"source": source, "sha256": sha, "key": f"{source}/{sha}.jpg", "disposition": "accepted",
                "labels": json.dumps({"label": label, "boxes": []}), "metadata": metadata}  # fmt: skip

    rows = [
        row("a", "s1", "nut"), row("qa", "s1", "bolt", reviewed=True), row("b", "s1", "nut"),
        row("a", "s2", "nut"), row("qa", "s2", "nut", reviewed=True), row("b", "s2", "bolt"),
        row("a", "s3", "bolt"), row("qa", "s3", "nut"), row("b", "s3", "bolt"),
    ]  # fmt: skip
    done = label_qa.reconcile(rows, LabelsSpec(golden="metadata.status=Reviewed"))
    assert done.stats is not None and done.stats.golden is not None
    golden = done.stats.golden
    assert (
        golden.golden == "metadata.status=Reviewed" and golden.samples == 2 and set(golden.sets) == {"a", "b"}
    )
    assert (golden.sets["a"].accuracy, golden.sets["b"].accuracy) == (0.5, 0.0)
    assert (
        golden.sets["a"].per_class["bolt"].recall == 0.0 and golden.sets["a"].per_class["nut"].recall == 1.0
    )
    by_sha = {r["sha256"]: r for r in rows}
    assert (by_sha["s1"]["label"], by_sha["s1"]["label_consensus"]) == (
        "bolt",
        "golden",
    )  # against the majority
    assert (by_sha["s3"]["label"], by_sha["s3"]["label_consensus"]) == (
        "bolt",
        "majority",
    )  # untagged: qa votes
    # agreement leaves the golden copies out but counts qa where it is not tagged (s3: three sets)
    assert (
        done.stats.judged == 3 and done.stats.pairs[0].sets == ["a", "b"] and done.stats.pairs[0].samples == 3
    )
    assert {tuple(p.sets): p.samples for p in done.stats.pairs}[("a", "qa")] == 1


# ---- real runs: three annotators and a golden reviewer on real photos -----------------------------------

TILE = 72  # px: tiles of the scikit-image photos, each a distinct real picture
TILES = 330
GOLDEN_PHOTOS = ("chelsea", "coffee", "rocket")  # the reviewer checked the tiles of these photos


def tiles(root: Path) -> list[str]:
    """Write ``TILES`` distinct tiles of real photos under ``root / "images"``; their keys."""
    keys: list[str] = []
    (root / "images").mkdir(parents=True)
    for name in PHOTO_NAMES:
        image = photo(name, 768)
        for top in range(0, image.height - TILE + 1, TILE):
            for left in range(0, image.width - TILE + 1, TILE):
                if len(keys) < TILES:
                    key = f"images/{name}-{left:03d}-{top:03d}.jpg"
                    (root / key).write_bytes(jpeg(image.crop((left, top, left + TILE, top + TILE))))
                    keys.append(key)
    assert len(keys) == TILES
    return keys


def write_csv(path: Path, labels: dict[str, str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(sorted(labels.items()))


def annotators_spec(floor: float | None = None) -> str:
    docs = []
    for name in (*ERRORS, "reviewed"):
        include = [f"images/{p}-*" for p in GOLDEN_PHOTOS] if name == "reviewed" else ["images/**"]
        docs.append({"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource", "metadata": {"name": name},
                     "spec": {"filesystem": {"path": "./tiles"}, "include": include,
                              "labels": {"format": "csv", "path": f"{name}.csv"}}})  # fmt: skip
    labels: dict[str, Any] = {"classes": list(CLASSES), "golden": "reviewed"}
    if floor is not None:
        labels["minAgreement"] = floor
    docs.append({"apiVersion": "loupe.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "parts"},
                 "spec": {"sources": [{"name": n} for n in (*ERRORS, "reviewed")], "labels": labels}})  # fmt: skip
    return yaml.safe_dump_all(docs, sort_keys=False)


def run(project: Path) -> Any:
    return loupe("run", "-f", "loupe.yaml", "--store", "store", "--executor", "inline", "--json", cwd=project)


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, Any]]:
    """A project versioned once: real photo tiles labelled by three simulated annotators (5, 15 and
    30 % error, a systematic confusion) and a reviewer (the truth) on the tiles of three photos."""
    project = tmp_path_factory.mktemp("annotated")
    keys = tiles(project / "tiles")
    truth_index, given = simulate(len(keys), seed=21)
    truth = {k: CLASSES[t] for k, t in zip(keys, truth_index, strict=True)}
    for name, classes in given.items():
        write_csv(project / "tiles" / f"{name}.csv", dict(zip(keys, classes, strict=True)))
    reviewed = {k: c for k, c in truth.items() if k.split("/")[1].split("-")[0] in GOLDEN_PHOTOS}
    write_csv(project / "tiles" / "reviewed.csv", reviewed)
    (project / "loupe.yaml").write_text(annotators_spec())
    done = run(project)
    assert done.returncode == 0, done.stderr
    return project, truth, json.loads(done.stdout)[0]


def _copy(annotated: tuple[Path, dict[str, str], dict[str, Any]], tmp_path: Path) -> Path:
    shutil.copytree(annotated[0], tmp_path / "project")
    return tmp_path / "project"


def test_three_annotators_on_real_photos_agreement_golden_consensus_and_queue(
    annotated: tuple[Path, dict[str, str], dict[str, Any]],
) -> None:
    project, truth, result = annotated
    shown = loupe("show", "parts", "--store", "store", "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    qa = json.loads(shown.stdout)["labelQa"]
    assert qa["sets"] == ["ann-a", "ann-b", "ann-c", "reviewed"] and qa["method"] == "fleiss"
    contents = Counter(hashlib.sha256((project / "tiles" / k).read_bytes()).digest() for k in truth)
    assert qa["judged"] == len(
        contents
    )  # per content (a few flat tiles are byte-identical), reviewer left out
    unique = {
        k for k in truth if contents[hashlib.sha256((project / "tiles" / k).read_bytes()).digest()] == 1
    }
    truth = {k: c for k, c in truth.items() if k in unique}  # identical bytes carry their first key's labels
    expected = expected_kappa(list(ERRORS.values()))
    assert abs(qa["kappa"] - expected) < KAPPA_TOLERANCE, (qa["kappa"], expected)
    golden = qa["golden"]
    assert golden["golden"] == "reviewed" and golden["samples"] > 80
    for name, error in ERRORS.items():  # accuracy against the reviewer: 1 - error, binomial tolerance
        tolerance = 3 * (error * (1 - error) / golden["samples"]) ** 0.5 + 0.01
        assert abs(golden["sets"][name]["accuracy"] - (1 - error)) < tolerance, (name, golden["sets"][name])
    # consensus: the reviewer's label where there is one, else the majority; a tie has none
    store_rows = _all_rows(project)
    by_key = {r["key"]: r for r in store_rows}
    assert all(
        by_key[k]["label"] == truth[k] for k in truth if k.split("/")[1].split("-")[0] in GOLDEN_PHOTOS
    )
    others = [k for k in truth if k.split("/")[1].split("-")[0] not in GOLDEN_PHOTOS]
    right = np.mean([by_key[k]["label"] == truth[k] for k in others])
    p = [1 - e for e in ERRORS.values()]
    analytic = p[0] * p[1] + p[0] * p[2] + p[1] * p[2] - 2 * p[0] * p[1] * p[2]
    assert abs(right - analytic) < 0.06, (right, analytic)
    ties = [k for k in others if by_key[k]["label_consensus"] == "tie"]
    assert ties and all(by_key[k]["label"] is None for k in ties) and qa["consensus"]["ties"] == len(ties)
    # the Dataset status summary carries the counts
    assert result["stats"]["labelQa"] == {"sets": 4, "judged": qa["judged"], "disagreements": qa["disagreements"],
                                          "ties": len(ties)}  # fmt: skip
    # every disagreement not settled by the reviewer is in the review queue, ties first
    queued = loupe("queue", "parts", "--store", "store", "--json", "--limit", "1000", cwd=project)
    assert queued.returncode == 0, queued.stderr
    items = json.loads(queued.stdout)
    disputed = [i for i in items if "labelDisagreement" in i["kinds"]]
    assert len(disputed) == qa["disagreements"] > 0
    assert {i["key"] for i in disputed if i["score"] >= 0.5} >= {
        k for k in ties if by_key[k]["disposition"] == "accepted"
    }
    assert all("label sets disagree" in i["reasons"][0] for i in disputed)
    text = loupe("show", "parts", "--store", "store", cwd=project).stdout
    assert "Fleiss' kappa" in " ".join(text.split()) and "accuracy against golden reviewed" in " ".join(
        text.split()
    )


def _all_rows(project: Path) -> list[dict[str, Any]]:
    from loupe_storage.store import LocalStore
    from loupe_storage.versions import list_versions
    from loupe_workers.storage import manifest

    store = LocalStore(project / "store")
    record = list_versions(store, "parts")[-1]
    return manifest.read_version_rows(store, record) + manifest.read_version_rows(store, record, "rejected")


def test_agreement_below_the_floor_refuses_the_version_and_a_better_delivery_is_major(
    annotated: tuple[Path, dict[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    project = _copy(annotated, tmp_path)
    truth = annotated[1]
    (project / "loupe.yaml").write_text(annotators_spec(floor=0.8))
    refused = run(project)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    message = " ".join(refused.stderr.split())
    assert "label agreement too low" in message and "below spec.labels.minAgreement 0.8" in message, message
    assert "lowest pair ann-b / ann-c" in message and "Traceback" not in refused.stderr
    versions = json.loads(loupe("versions", "parts", "--store", "store", "--json", cwd=project).stdout)
    assert [v["version"] for v in versions] == ["1.0.0"]  # the current version stays
    # the run's reason, as the operator's Degraded condition shows it
    from loupe_workers.pipeline.run import RunError, run_dataset
    from loupe_workers.pipeline.specs import load_specs, run_request

    bundle = load_specs(project / "loupe.yaml")
    with pytest.raises(RunError) as caught:
        run_dataset(run_request(bundle, "parts", str(project / "store")), base_dir=bundle.base_dir)
    assert caught.value.reason == "LabelAgreementTooLow"
    # the worst annotator redelivers with the truth: agreement passes the floor, consensus labels change
    write_csv(project / "tiles" / "ann-c.csv", truth)
    (project / "loupe.yaml").write_text(annotators_spec(floor=0.6))
    done = run(project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["version"] == "2.0.0"  # relabelled samples: MAJOR
    diffed = loupe("diff", "parts@1.0.0", "parts@2.0.0", "--store", "store", "--json", cwd=project)
    result = json.loads(diffed.stdout)
    before, after = result["labelQa"]["from"], result["labelQa"]["to"]
    assert after["kappa"] > before["kappa"] + 0.1 and after["disagreements"] < before["disagreements"]
    assert result["relabels"] and all(r["to"] in (*CLASSES, None) for r in result["relabels"])
    text = " ".join(
        loupe("diff", "parts@1.0.0", "parts@2.0.0", "--store", "store", cwd=project).stdout.split()
    )
    assert f"label agreement: kappa {before['kappa']:.3f} -> {after['kappa']:.3f}" in text, text


def test_example_two_vendors_reconciled_into_one_version(tmp_path: Path) -> None:
    """examples/06-two-vendors, run the way its README says."""
    project = tmp_path / "06-two-vendors"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("images", ".loupe"))
    subprocess.run([sys.executable, "make_images.py"], cwd=project, check=True, timeout=120)
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["version"] == "1.0.0" and result["stats"]["samples"] == 16
    again = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=project)
    assert json.loads(again.stdout)[0]["created"] is False  # the same deliveries: the same version
    assert result["stats"]["labelQa"] == {"sets": 3, "judged": 16, "disagreements": 1, "ties": 1}
    summary = json.loads(loupe("show", "catalogue", "--json", cwd=project).stdout)
    qa = summary["labelQa"]
    assert qa["method"] == "cohen" and qa["agreement"] == pytest.approx(13 / 16, abs=1e-3)
    assert qa["kappa"] == pytest.approx(0.777, abs=1e-3)  # the figure the README gives
    assert (
        qa["golden"]["sets"]["acme"]["accuracy"] == 1.0
        and qa["golden"]["sets"]["pixelworks"]["accuracy"] == 0.0
    )
    # one taxonomy: both vocabularies mapped; the tie (hubble) has no label until it is reviewed
    assert summary["labels"] == {"animals": 1, "documents": 2, "objects": 4, "people": 2, "science": 2,
                                 "space": 1, "textures": 3}  # fmt: skip
    queued = json.loads(loupe("queue", "catalogue", "--json", cwd=project).stdout)
    assert [(q["key"], q["kinds"]) for q in queued] == [("images/hubble.jpg", ["labelDisagreement"])]
    assert "acme says space; pixelworks says science" in queued[0]["reasons"][0]
    shown = " ".join(loupe("show", "catalogue", cwd=project).stdout.split())
    assert "Cohen's kappa 0.777 (floor 0.6)" in shown and "accuracy against golden in-house" in shown
    made = loupe("report", "catalogue", "--out", "report.html", "-f", "loupe.yaml", cwd=project)
    assert made.returncode == 0, made.stderr
    page = (project / "report.html").read_text()
    assert '<section class="wide" id="label-qa" data-kappa="0.777">' in page
    assert "1 disagreements in the review queue" in page and "kappa per class" in page


def test_golden_by_metadata_tag_on_real_photos_measures_every_other_set(tmp_path: Path) -> None:
    """Two annotators label every tile; an in-house team labels them all too, and its reviewed folder
    (the tiles of three photos, checked: the truth) is tagged by its path. The tagged tiles are the golden
    set; in-house labels elsewhere (30 % error) are one more annotator."""
    project = tmp_path / "project"
    keys = tiles(project / "tiles")
    truth_index, given = simulate(len(keys), seed=33)
    truth = {k: CLASSES[t] for k, t in zip(keys, truth_index, strict=True)}
    write_csv(project / "tiles" / "ann-a.csv", dict(zip(keys, given["ann-a"], strict=True)))
    write_csv(project / "tiles" / "ann-b.csv", dict(zip(keys, given["ann-b"], strict=True)))
    inhouse: dict[str, str] = {}
    for key, draft in zip(keys, given["ann-c"], strict=True):
        reviewed = key.split("/")[1].split("-")[0] in GOLDEN_PHOTOS
        target = f"{'reviewed' if reviewed else 'draft'}/{key.split('/')[1]}"
        (project / "inhouse" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / "tiles" / key, project / "inhouse" / target)
        inhouse[target] = truth[key] if reviewed else draft
    write_csv(project / "inhouse" / "labels.csv", inhouse)
    source = {"filesystem": {"path": "./tiles"}, "include": ["images/**"]}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource", "metadata": {"name": name},
         "spec": {**source, "labels": {"format": "csv", "path": f"{name}.csv"}}}
        for name in ("ann-a", "ann-b")
    ]  # fmt: skip
    docs.append({"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource", "metadata": {"name": "inhouse"},
                 "spec": {"filesystem": {"path": "./inhouse"}, "include": ["*/*.jpg"],
                          "metadata": {"pathPattern": "{status}/*"},
                          "labels": {"format": "csv", "path": "labels.csv"}}})  # fmt: skip
    labels = {"classes": list(CLASSES), "golden": "metadata.status=reviewed"}
    docs.append({"apiVersion": "loupe.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "parts"},
                 "spec": {"sources": [{"name": n} for n in ("ann-a", "ann-b", "inhouse")], "labels": labels}})  # fmt: skip
    (project / "loupe.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    done = run(project)
    assert done.returncode == 0, done.stderr
    shown = loupe("show", "parts", "--store", "store", "--json", cwd=project)
    qa = json.loads(shown.stdout)["labelQa"]
    assert qa["sets"] == ["ann-a", "ann-b", "inhouse"] and qa["method"] == "fleiss"
    golden = qa["golden"]
    reviewed = {k for k in keys if k.split("/")[1].split("-")[0] in GOLDEN_PHOTOS}
    contents = {hashlib.sha256((project / "tiles" / k).read_bytes()).digest() for k in reviewed}
    assert golden["golden"] == "metadata.status=reviewed" and golden["samples"] == len(contents) > 80
    assert set(golden["sets"]) == {"ann-a", "ann-b"}  # in-house is the reference there, not measured
    for name in ("ann-a", "ann-b"):  # accuracy against the tagged labels: 1 - error, binomial tolerance
        error = ERRORS[name]
        tolerance = 3 * (error * (1 - error) / golden["samples"]) ** 0.5 + 0.01
        found = golden["sets"][name]
        assert abs(found["accuracy"] - (1 - error)) < tolerance, (name, found)
        assert (
            set(found["perClass"]) <= set(CLASSES)
            and sum(c["support"] for c in found["perClass"].values()) == found["samples"]
        )
    # agreement: three annotators on the untagged tiles (in-house counts there), two on the tagged ones
    untagged = {hashlib.sha256((project / "tiles" / k).read_bytes()).digest() for k in keys} - contents
    pairs = {tuple(p["sets"]): p["samples"] for p in qa["pairs"]}
    assert pairs[("ann-a", "inhouse")] == len(untagged) and pairs[("ann-a", "ann-b")] == qa["judged"]
    assert qa["consensus"]["golden"] > 0  # tagged tiles where the annotators disagree: the truth decides
    rows = {r["key"]: r for r in _all_rows(project) if r["source"] == "ann-a"}
    assert all(rows[k]["label"] == truth[k] for k in reviewed if k in rows)
    text = " ".join(loupe("show", "parts", "--store", "store", cwd=project).stdout.split())
    assert "accuracy against golden metadata.status=reviewed" in text
