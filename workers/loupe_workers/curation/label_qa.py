"""Label QA across label sets: agreement, consensus, golden accuracy and the agreement gate.

Pure (numpy only). Label sets attach to *content*: every source that labels the same bytes (the same
sha256; exact duplicates across sources are one sample) contributes the set named after it. A sample's
sets are ``{set name: {"label": class or None, "boxes": [...]}}`` in the dataset's classes (after
``spec.labels.mapping``).

- Class agreement: Cohen's kappa for two sets, Fleiss' kappa for three or more (the variable-raters
  form: each sample is judged by the sets present on it, samples with fewer than two classes are not
  judged), overall, per class (the class against the rest, Fleiss' per-category kappa) and per pair
  of sets; raw agreement is the share of agreeing pairs of sets.
- Boxes: per class, greedy matching of two sets' boxes at IoU >= ``iou`` (highest IoU first);
  agreement = matched / (boxes of both - matched), summed over every pair of sets and sample.
- Consensus: the golden set's label where it labels the sample, else the class most sets give; a
  tie (no single most-given class) has no consensus class and goes to review. Support is the share of
  the sets giving the consensus class. Consensus boxes: the golden set's, else each cluster of
  same-class boxes (IoU >= ``iou``, one box per set) given by more than half of the sets with boxes.
- Golden: accuracy of every other set against the golden one, precision and recall per golden class.
  The golden set is the reference, not one more annotator: agreement (and the gate) leaves it out. It
  is a source, or with a metadata tag (``metadata.NAME=VALUE``) per content the set of the source whose
  copy carries the tag (the first by name when several do): that source is an annotator elsewhere.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loupe_api.label_qa import (
    AGREEMENT_REASON,
    BoxAgreement,
    BoxClassAgreement,
    ClassAccuracy,
    ClassAgreement,
    ConsensusCounts,
    GoldenAccuracy,
    LabelQaCounts,
    LabelQaStats,
    PairAgreement,
    SetAccuracy,
)
from loupe_api.labels import LabelsSpec
from loupe_api.samples import LEFT_OUT, Disposition, LabelConsensus, SampleRow

LabelDict = dict[str, Any]  # {"label": str | None, "boxes": [{"class": ..., "bbox": [...], ...}]}
Sets = Mapping[str, LabelDict]
DEFAULT_IOU = 0.5


# ---- kappa -------------------------------------------------------------------------------------------


def fleiss_kappa(counts: np.ndarray[Any, Any]) -> float | None:
    """Fleiss' kappa of an items x categories count matrix; rows may have different totals (each row
    needs two or more ratings). None when chance agreement is total (one category only)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    keep = n >= 2
    counts, n = counts[keep], n[keep]
    if not len(n):
        return None
    agreement = float(np.mean(((counts**2).sum(axis=1) - n) / (n * (n - 1))))
    shares = counts.sum(axis=0) / n.sum()
    chance = float((shares**2).sum())
    if chance >= 1 - 1e-12:
        return None
    return (agreement - chance) / (1 - chance)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' classes over the same items. None when chance agreement is total."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    if not a:
        return None
    classes = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(classes)}
    table = np.zeros((len(classes), len(classes)))
    np.add.at(table, ([index[x] for x in a], [index[y] for y in b]), 1)
    table /= len(a)
    observed = float(np.trace(table))
    chance = float(table.sum(axis=1) @ table.sum(axis=0))
    if chance >= 1 - 1e-12:
        return None
    return (observed - chance) / (1 - chance)


def _count_matrix(votes: list[list[str]], classes: list[str]) -> np.ndarray[Any, Any]:
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(votes), len(classes)))
    for row, item in enumerate(votes):
        for vote in item:
            matrix[row, index[vote]] += 1
    return matrix


@dataclass(frozen=True)
class ClassFigures:
    """Agreement of the sets' classes over judged samples."""

    judged: int
    method: str
    kappa: float | None
    agreement: float | None
    per_class: dict[str, ClassAgreement]
    pairs: list[PairAgreement]


def class_agreement(samples: Iterable[Mapping[str, str]]) -> ClassFigures:
    """Agreement of the classes that sets give samples (each item: set name -> class)."""
    judged = [dict(s) for s in samples if len(s) >= 2]
    names = sorted({name for s in judged for name in s})
    classes = sorted({c for s in judged for c in s.values()})
    pairs = []
    for a, b in itertools.combinations(names, 2):
        both = [(s[a], s[b]) for s in judged if a in s and b in s]
        pairs.append(
            PairAgreement(
                sets=[a, b],
                samples=len(both),
                agreement=_round(sum(x == y for x, y in both) / len(both)) if both else None,
                kappa=_round(cohen_kappa([x for x, _ in both], [y for _, y in both])) if both else None,
            )
        )
    if not judged:
        return ClassFigures(0, "", None, None, {}, pairs)
    counts = _count_matrix([list(s.values()) for s in judged], classes)
    n = counts.sum(axis=1)
    agreement = float(np.mean(((counts**2).sum(axis=1) - n) / (n * (n - 1))))
    per_class = {}
    for j, name in enumerate(classes):
        binary = np.stack([counts[:, j], n - counts[:, j]], axis=1)
        per_class[name] = ClassAgreement(kappa=_round(fleiss_kappa(binary)), ratings=int(counts[:, j].sum()))
    if len(names) == 2:  # Cohen: the two sets' classes on every judged sample
        a, b = names
        kappa = cohen_kappa([s[a] for s in judged], [s[b] for s in judged])
        for name in classes:
            per_class[name].kappa = _round(
                cohen_kappa([str(s[a] == name) for s in judged], [str(s[b] == name) for s in judged])
            )
        method = "cohen"
    else:
        kappa, method = fleiss_kappa(counts), "fleiss"
    return ClassFigures(len(judged), method, _round(kappa), _round(agreement), per_class, pairs)


# ---- boxes -------------------------------------------------------------------------------------------


def box_xyxy(
    box: Mapping[str, Any], width: float | None, height: float | None
) -> tuple[float, float, float, float] | None:
    """A box as pixel corners: COCO [x, y, w, h] in pixels, YOLO [cx, cy, w, h] normalized (needs the
    image size; without it YOLO boxes stay normalized, comparable only with other YOLO boxes)."""
    bbox = box.get("bbox")
    if not bbox or len(bbox) < 4:
        return None
    x, y, w, h = (float(v) for v in bbox[:4])
    if box.get("format") == "yolo":
        sx, sy = (float(width), float(height)) if width and height else (1.0, 1.0)
        return ((x - w / 2) * sx, (y - h / 2) * sy, (x + w / 2) * sx, (y + h / 2) * sy)
    return (x, y, x + w, y + h)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two boxes given as corners."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


Box = tuple[float, float, float, float]


def match_boxes(a: Sequence[Box], b: Sequence[Box], threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching (highest IoU first) of two lists of same-class boxes at ``threshold``."""
    scored = sorted(
        ((iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for value, i, j in scored:
        if value < threshold:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return pairs


def _by_class(
    boxes: Sequence[Mapping[str, Any]], width: float | None, height: float | None
) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for box in boxes:
        corners = box_xyxy(box, width, height)
        if corners is not None and "class" in box:
            out.setdefault(str(box["class"]), []).append(corners)
    return out


@dataclass
class BoxTally:
    """Matched and union box counts per class, gathered over samples."""

    threshold: float = DEFAULT_IOU
    samples: int = 0
    matched: Counter[str] = field(default_factory=Counter)
    union: Counter[str] = field(default_factory=Counter)

    def add(self, sets: Sets, width: float | None = None, height: float | None = None) -> None:
        """Count one sample: every pair of its sets that give boxes."""
        boxed = {name: _by_class(s.get("boxes") or [], width, height) for name, s in sets.items()}
        boxed = {name: b for name, b in boxed.items() if b}
        if len(boxed) < 2:
            return
        self.samples += 1
        for a, b in itertools.combinations(sorted(boxed), 2):
            for name in set(boxed[a]) | set(boxed[b]):
                left, right = boxed[a].get(name, []), boxed[b].get(name, [])
                matched = len(match_boxes(left, right, self.threshold))
                self.matched[name] += matched
                self.union[name] += len(left) + len(right) - matched

    def figures(self) -> BoxAgreement | None:
        if not self.samples:
            return None
        matched, union = sum(self.matched.values()), sum(self.union.values())
        return BoxAgreement(
            iou=self.threshold,
            samples=self.samples,
            matched=matched,
            union=union,
            agreement=_round(matched / union) if union else None,
            per_class={
                name: BoxClassAgreement(
                    matched=self.matched[name],
                    union=self.union[name],
                    agreement=_round(self.matched[name] / self.union[name]) if self.union[name] else None,
                )
                for name in sorted(self.union)
            },
        )


# ---- consensus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consensus:
    """The consensus of one sample's label sets."""

    labels: LabelDict  # {"label": consensus class or None (a tie), "boxes": consensus boxes}
    support: float | None  # share of the sets with a class that give the consensus class
    kind: LabelConsensus
    disagree: bool  # the sets' classes (or boxes) differ: the sample goes to review
    detail: str = ""  # who said what, for the review queue


def consensus(
    sets: Sets,
    golden: str | None = None,
    *,
    threshold: float = DEFAULT_IOU,
    width: float | None = None,
    height: float | None = None,
) -> Consensus:
    """The consensus label of one sample from its label sets (see the module docstring)."""
    votes = {name: str(s["label"]) for name, s in sorted(sets.items()) if s.get("label") is not None}
    counts = Counter(votes.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    label: str | None = None
    if len(counts) <= 1:
        kind = LabelConsensus.SINGLE if len(votes) <= 1 else LabelConsensus.UNANIMOUS
        label = ranked[0][0] if ranked else None
    elif golden is not None and golden in votes:
        kind, label = LabelConsensus.GOLDEN, votes[golden]
    elif ranked[0][1] > ranked[1][1]:
        kind, label = LabelConsensus.MAJORITY, ranked[0][0]
    else:
        kind = LabelConsensus.TIE
    support = (
        counts[label] / len(votes)
        if votes and label is not None
        else (ranked[0][1] / len(votes) if votes else None)
    )
    boxes, boxes_differ = _consensus_boxes(sets, golden, threshold, width, height)
    disagree = len(counts) > 1 or boxes_differ  # kind is of the classes; differing boxes go to review too
    said = "; ".join(f"{name} says {cls}" for name, cls in votes.items())
    return Consensus({"label": label, "boxes": boxes}, _round(support), kind, disagree, said)


def _consensus_boxes(
    sets: Sets, golden: str | None, threshold: float, width: float | None, height: float | None
) -> tuple[list[dict[str, Any]], bool]:
    """Consensus boxes and whether the sets' boxes differ (some box not matched in every set)."""
    boxed = {name: list(s.get("boxes") or []) for name, s in sorted(sets.items()) if s.get("boxes")}
    if not boxed:
        return [], False
    if len(boxed) == 1:
        return next(iter(boxed.values())), False
    clusters: list[tuple[str, Box, list[dict[str, Any]], set[str]]] = []  # class, anchor, members, sets
    for name, boxes in boxed.items():
        for box in boxes:
            corners = box_xyxy(box, width, height)
            if corners is None or "class" not in box:
                continue
            best, best_iou = None, threshold
            for index, (cls, anchor, _, members) in enumerate(clusters):
                if cls == str(box["class"]) and name not in members:
                    value = iou(anchor, corners)
                    if value >= best_iou:
                        best, best_iou = index, value
            if best is None:
                clusters.append((str(box["class"]), corners, [box], {name}))
            else:
                clusters[best][2].append(box)
                clusters[best][3].add(name)
    differ = any(len(members) < len(boxed) for *_, members in clusters)
    if golden is not None and golden in boxed:
        return boxed[golden], differ
    kept = [members_boxes[0] for _, _, members_boxes, members in clusters if len(members) * 2 > len(boxed)]
    return kept, differ


# ---- golden ------------------------------------------------------------------------------------------


def golden_accuracy(samples: Iterable[Mapping[str, str]], golden: str) -> GoldenAccuracy:
    """Accuracy of every other set against ``golden`` (each item: set name -> class)."""
    items = [dict(s) for s in samples if golden in s]
    names = sorted({n for s in items for n in s} - {golden})
    out = GoldenAccuracy(golden=golden, samples=len(items))
    for name in names:
        both = [(s[golden], s[name]) for s in items if name in s]
        if not both:
            continue
        per_class = {}
        for cls in sorted({t for t, _ in both}):
            support = sum(t == cls for t, _ in both)
            said = sum(p == cls for _, p in both)
            hit = sum(t == cls and p == cls for t, p in both)
            per_class[cls] = ClassAccuracy(
                support=support,
                precision=_round(hit / said) if said else None,
                recall=_round(hit / support) if support else None,
            )
        out.sets[name] = SetAccuracy(
            samples=len(both), accuracy=_round(sum(t == p for t, p in both) / len(both)), per_class=per_class
        )
    return out


# ---- one run -----------------------------------------------------------------------------------------


@dataclass
class Reconciled:
    """What reconciling a run's rows found: the version's figures, and a refusal when the gate fails."""

    stats: LabelQaStats | None
    refusal: str | None = None
    disputed: set[str] = field(default_factory=set)  # sha256 of content to review (not settled by golden)

    def settle(self, rows: Iterable[SampleRow]) -> LabelQaCounts | None:
        """Count the disagreements among the rows curation accepted (the review queue holds those), and
        give the counts the Dataset status carries."""
        if self.stats is None:
            return None
        accepted = {
            r["sample_id"]
            for r in rows
            if r.get("disposition") == Disposition.ACCEPTED and r["sha256"] in self.disputed
        }
        self.stats.disagreements = len(accepted)
        return self.counts()

    def counts(self) -> LabelQaCounts | None:
        """The counts the Dataset status carries."""
        if self.stats is None:
            return None
        return LabelQaCounts(
            sets=len(self.stats.sets),
            judged=self.stats.judged,
            disagreements=self.stats.disagreements,
            ties=self.stats.consensus.ties,
        )


def _empty(labels: LabelDict) -> bool:
    return labels.get("label") is None and not labels.get("boxes")


def _row_labels(row: Mapping[str, Any]) -> LabelDict:
    return json.loads(row["labels"]) if row.get("labels") else {"label": None, "boxes": []}


def _label_sets(members: Sequence[SampleRow]) -> dict[str, LabelDict]:
    """The label sets of one content: one per source, its first copy's (by key), empty ones left out."""
    sets: dict[str, LabelDict] = {}
    for row in sorted(members, key=lambda r: (str(r["source"]), str(r["key"]))):
        labels = _row_labels(row)
        if not _empty(labels):
            sets.setdefault(str(row["source"]), labels)
    return sets


@dataclass(frozen=True)
class Golden:
    """spec.labels.golden as reconcile applies it: a source, or a metadata tag on a source's copy."""

    name: str  # what the version records: the source name, or the tag as written
    source: str | None = None
    tag: tuple[str, str] | None = None  # (metadata field, value in lower case)

    @classmethod
    def of(cls, spec: LabelsSpec) -> Golden | None:
        """The golden set of ``spec``, or None when it names none."""
        if spec.golden is None:
            return None
        return cls(spec.golden, source=spec.golden_source(), tag=spec.golden_tag())

    def set_of(self, members: Sequence[Mapping[str, Any]], sets: Sets) -> str | None:
        """The label set that is truth on this content: the golden source's, or that of the first source
        (by name) whose copy carries the tag; None when the content has no golden label."""
        if self.tag is None:
            return self.source if self.source in sets else None
        name, value = self.tag
        tagged = sorted(
            str(r["source"])
            for r in members
            if str(json.loads(r.get("metadata") or "{}").get(name, "")).strip().casefold() == value
        )
        return next((source for source in tagged if source in sets), None)


@dataclass
class _Gathered:
    """What reconciling gathers over a run's contents, one content (rows of the same bytes) at a time."""

    golden: Golden | None
    threshold: float
    boxes: BoxTally = field(init=False)
    class_votes: list[dict[str, str]] = field(default_factory=list)  # per labelled content, but golden's
    truth_votes: list[dict[str, str]] = field(default_factory=list)  # per golden content: golden.name first
    tally: ConsensusCounts = field(default_factory=ConsensusCounts)
    names: set[str] = field(default_factory=set)
    labelled: int = 0
    disagreements: int = 0  # not left out by a gate
    disputed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.boxes = BoxTally(self.threshold)

    def add(self, members: Sequence[SampleRow]) -> None:
        """Count one content and give its rows the consensus of its label sets (two or more)."""
        sets = _label_sets(members)
        if not sets:
            return
        self.labelled += 1
        self.names.update(sets)
        truth = self.golden.set_of(members, sets) if self.golden is not None else None
        votes = {n: str(s["label"]) for n, s in sets.items() if s.get("label") is not None}
        # the golden set is the reference the others are measured against, not one more annotator
        self.class_votes.append({n: c for n, c in votes.items() if n != truth})
        if self.golden is not None and truth in votes:
            self.truth_votes.append({self.golden.name: votes[truth], **self.class_votes[-1]})
        if len(sets) < 2:
            self.tally.single += 1
            return
        first = members[0]
        self.boxes.add(sets, first.get("width"), first.get("height"))
        result = consensus(
            sets, truth, threshold=self.threshold, width=first.get("width"), height=first.get("height")
        )
        field_name = "ties" if result.kind == LabelConsensus.TIE else result.kind
        setattr(self.tally, field_name, getattr(self.tally, field_name) + 1)
        left_out = all(r.get("disposition") in LEFT_OUT for r in members)
        if result.disagree and result.kind != LabelConsensus.GOLDEN:  # golden settled it: no review
            self.disputed.add(str(first["sha256"]))
            self.disagreements += 0 if left_out else 1
        sets_json = json.dumps(dict(sorted(sets.items())), sort_keys=True)
        for row in members:
            row["label_sets"] = sets_json
            row["label_support"] = result.support
            row["label_consensus"] = result.kind
            row["label"] = result.labels["label"]
            row["labels"] = json.dumps(result.labels, sort_keys=True)

    def stats(self, min_agreement: float | None) -> LabelQaStats:
        """The version's figures over every content added."""
        figures = class_agreement(self.class_votes)
        golden = self.golden
        return LabelQaStats(
            sets=sorted(self.names),
            samples=self.labelled,
            judged=figures.judged,
            method=figures.method,
            kappa=figures.kappa,
            agreement=figures.agreement,
            per_class=figures.per_class,
            pairs=figures.pairs,
            boxes=self.boxes.figures(),
            consensus=self.tally,
            disagreements=self.disagreements,
            golden=golden_accuracy(self.truth_votes, golden.name) if golden is not None else None,
            min_agreement=min_agreement,
        )


def reconcile(rows: Iterable[SampleRow], spec: LabelsSpec) -> Reconciled:
    """Give every row whose bytes two or more sources label the consensus of their label sets.

    ``rows``: a run's manifest rows (``source``, ``sha256``, ``key``, ``labels`` JSON in the dataset's
    classes, ``metadata`` JSON, ``width``, ``height``, ``disposition``). Such rows get ``label_sets``
    (JSON: set name -> labels), ``label_support``, ``label_consensus`` (how it was reached) and the
    consensus as ``label`` / ``labels``; other rows are left as they are. Disagreements count the
    samples not left out by a gate and not settled by the golden set (``Reconciled.settle`` counts them
    again among the rows curation finally accepts: those the review queue lists). With
    ``spec.minAgreement`` the refusal says why the version must not be committed.
    """
    by_content: dict[str, list[SampleRow]] = {}
    for row in rows:
        by_content.setdefault(str(row["sha256"]), []).append(row)
    gathered = _Gathered(Golden.of(spec), spec.box_iou or DEFAULT_IOU)
    for members in by_content.values():
        gathered.add(members)
    if len(gathered.names) < 2:  # one label set: nothing to compare (the rows are untouched)
        return Reconciled(None)
    stats = gathered.stats(spec.min_agreement)
    return Reconciled(stats, _refusal(stats, spec.min_agreement), gathered.disputed)


def _refusal(stats: LabelQaStats, floor: float | None) -> str | None:
    """Why spec.labels.minAgreement refuses the version: kappa of the classes, or, when no sample has
    two classes, the box agreement, below the floor."""
    if floor is None:
        return None
    measure, value = "kappa", stats.kappa
    if not stats.judged and stats.boxes is not None:
        measure, value = "box agreement", stats.boxes.agreement
    if value is None or value >= floor:
        return None
    worst = sorted((p for p in stats.pairs if p.kappa is not None), key=lambda p: p.kappa or 0.0)
    lowest = (
        f"; lowest pair {worst[0].sets[0]} / {worst[0].sets[1]} kappa {worst[0].kappa:.2f}" if worst else ""
    )
    samples = stats.judged or (stats.boxes.samples if stats.boxes is not None else 0)
    return (
        f"label agreement too low: {measure} {value:.3f} over {samples} "
        f"samples is below spec.labels.minAgreement {floor:g}{lowest}. Review the label sets "
        "(loupe queue) or lower the floor; the current version stays"
    )


def figure(value: float | None) -> str:
    """A figure as shown: three decimals, - when there is none."""
    return "-" if value is None else f"{value:.3f}"


def describe(stats: LabelQaStats, classes: int = 12) -> list[str]:
    """The label QA of a version in words (loupe show, the report): overall, per class, pairs, boxes,
    consensus and golden accuracy."""
    method = {"cohen": "Cohen's", "fleiss": "Fleiss'"}.get(stats.method, "")
    floor = f" (floor {stats.min_agreement:g})" if stats.min_agreement is not None else ""
    lines = [
        f"label sets {', '.join(stats.sets)}: {stats.judged} of {stats.samples} labelled samples judged; "
        f"{method} kappa {figure(stats.kappa)}{floor}, raw agreement {figure(stats.agreement)}"
    ]
    ranked = sorted(stats.per_class.items(), key=lambda kv: (-kv[1].ratings, kv[0]))
    if ranked:
        shown = ", ".join(f"{name} {figure(c.kappa)}" for name, c in ranked[:classes])
        more = f" and {len(ranked) - classes} more" if len(ranked) > classes else ""
        lines.append(f"  kappa per class: {shown}{more}")
    if len(stats.pairs) > 1:
        lines.append(
            "  pairs: "
            + ", ".join(f"{p.sets[0]}/{p.sets[1]} {figure(p.kappa)} (n {p.samples})" for p in stats.pairs)
        )
    if stats.boxes is not None:
        b = stats.boxes
        lines.append(
            f"  boxes (IoU {b.iou:g}): agreement {figure(b.agreement)} ({b.matched} matched of {b.union}) "
            f"on {b.samples} samples"
        )
    c = stats.consensus
    lines.append(
        f"  consensus: {c.unanimous} unanimous, {c.majority} majority, {c.golden} by golden, {c.ties} ties, "
        f"{c.single} single-set; {stats.disagreements} disagreements in the review queue"
    )
    if stats.golden is not None:
        g = stats.golden
        per_set = "; ".join(f"{name} {figure(a.accuracy)} (n {a.samples})" for name, a in g.sets.items())
        lines.append(
            f"  accuracy against golden {g.golden} ({g.samples} samples): {per_set or 'no other set'}"
        )
    return lines


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


__all__ = [
    "AGREEMENT_REASON",
    "BoxTally",
    "Consensus",
    "Golden",
    "Reconciled",
    "class_agreement",
    "cohen_kappa",
    "consensus",
    "describe",
    "figure",
    "fleiss_kappa",
    "golden_accuracy",
    "match_boxes",
    "reconcile",
]
