"""``loupe report``: one self-contained HTML page per version: counts, quality histograms, class balance,
slice coverage, a 2-D map of the samples, drift against the reference, and thumbnails of what was left
out. Plots are inline SVG and images are data URIs, so the file opens anywhere, offline, with no scripts
beyond a few lines that mark the page as rendered."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from loupe_api.dataset import DatasetSpec, DriftSummary
from loupe_api.samples import LEFT_OUT, Disposition, SampleRow
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore, blob_key
from loupe_workers.curation import label_qa, sampling, synthetic
from loupe_workers.curation.review import read_label_errors
from loupe_workers.insights import analysis
from loupe_workers.media import decode as media
from loupe_workers.storage.rows import read_version_samples
from loupe_workers.versioning.versions import read_version

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
THUMBNAILS = 12
_esc = html.escape


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="plot" role="img" aria-label="{_esc(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')  # fmt: skip


def bar_chart(values: dict[str, float], label: str, width: int = 420, fmt: str = "{:g}") -> str:
    if not values:
        return '<p class="empty">no data</p>'
    top = max(values.values()) or 1.0
    row = 22
    parts = []
    for i, (name, value) in enumerate(values.items()):
        length = (width - 190) * (value / top)
        y = i * row + 4
        parts.append(f'<text x="0" y="{y + 14}" class="axis">{_esc(name[:24])}</text>'
                     f'<rect x="150" y="{y}" width="{length:.1f}" height="16" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{154 + length:.1f}" y="{y + 13}" class="value">{_esc(fmt.format(value))}</text>')  # fmt: skip
    return _svg(width, row * len(values) + 8, "".join(parts), label)


def histogram(figure: dict[str, Any], label: str, width: int = 260, height: int = 120) -> str:
    if not figure.get("count"):
        return '<p class="empty">no data</p>'
    counts, edges = figure["counts"], figure["edges"]
    top = max(counts) or 1
    step = (width - 10) / len(counts)
    bars = "".join(
        f'<rect x="{5 + i * step:.1f}" y="{height - 22 - (height - 32) * c / top:.1f}" width="{step - 1:.1f}" '
        f'height="{(height - 32) * c / top:.1f}" fill="#4e79a7"><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {c}</title></rect>'
        for i, c in enumerate(counts)
    )  # fmt: skip
    axis = (f'<text x="5" y="{height - 6}" class="axis">{edges[0]:.3g}</text>'
            f'<text x="{width - 5}" y="{height - 6}" class="axis" text-anchor="end">{edges[-1]:.3g}</text>')  # fmt: skip
    return _svg(width, height, bars + axis, label)


def heatmap(slice_figure: dict[str, Any], label: str) -> str:
    """Samples per combination of two fields; empty cells are the gaps."""
    fields = slice_figure["fields"]
    cells = {tuple(k.split("/")): v for k, v in slice_figure["counts"].items()}
    for gap in slice_figure["gaps"]:
        cells.setdefault(tuple(gap["values"][f] for f in fields), 0)
    if len(fields) != 2 or not cells:
        return bar_chart({"/".join(k): float(v) for k, v in sorted(cells.items())}, label, fmt="{:.0f}")
    rows, cols = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    top = max(cells.values()) or 1
    size, left, head = 34, 110, 70
    parts = [f'<text x="{left + j * size + 17}" y="{head - 6}" class="axis" transform="rotate(-45 {left + j * size + 17} {head - 6})">{_esc(c[:14])}</text>'
             for j, c in enumerate(cols)]  # fmt: skip
    for i, r in enumerate(rows):
        parts.append(
            f'<text x="{left - 6}" y="{head + i * size + 21}" class="axis" text-anchor="end">{_esc(r[:16])}</text>'
        )
        for j, c in enumerate(cols):
            n = cells.get((r, c), 0)
            fill = "#fbe3e3" if n == 0 else f"rgba(78,121,167,{0.15 + 0.85 * n / top:.2f})"
            parts.append(f'<rect x="{left + j * size}" y="{head + i * size}" width="{size - 2}" height="{size - 2}" fill="{fill}">'
                         f'<title>{_esc(r)} / {_esc(c)}: {n}</title></rect>'
                         f'<text x="{left + j * size + 16}" y="{head + i * size + 21}" class="cell">{n}</text>')  # fmt: skip
    return _svg(left + len(cols) * size + 10, head + len(rows) * size + 10, "".join(parts), label)


def project_2d(vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Principal components 1 and 2 (deterministic: signs fixed by the largest loading)."""
    centred = vectors - vectors.mean(axis=0)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    points: npt.NDArray[np.float64] = centred @ axes.T
    return points if points.shape[1] == 2 else np.c_[points, np.zeros(len(points))]


def scatter(points: npt.NDArray[np.float64], labels: Sequence[str], label: str, size: int = 360) -> str:
    if len(points) == 0:
        return '<p class="empty">no data</p>'
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1)
    xy = (points - lo) / span * (size - 30) + 15
    classes = sorted(set(labels))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="4" fill="{PALETTE[classes.index(c) % len(PALETTE)]}" '
                   f'fill-opacity="0.8"><title>{_esc(c)}</title></circle>' for (x, y), c in zip(xy, labels, strict=True))  # fmt: skip
    # class "legend", not "axis": the .axis rule's fill would override each entry's colour (CSS beats
    # a presentation attribute), leaving every class grey
    legend = "".join(f'<text x="{size + 10}" y="{20 + 18 * i}" class="legend" fill="{PALETTE[i % len(PALETTE)]}">● {_esc(c[:20])}</text>'
                     for i, c in enumerate(classes[:15]))  # fmt: skip
    return _svg(size + 170, size, dots + legend, label)


def _placeholder(reason: str, detail: str) -> str:
    return f'<div class="noimg" data-reason="{_esc(reason)}" title="{_esc(detail)}">not shown: {_esc(reason)}</div>'


def _thumbnail(store: ObjectStore, row: SampleRow, max_pixels: int, memory_limit: int) -> str:
    """A 128 px thumbnail through the same guarded reduced decode as processing: a bomb or a corrupt
    file (that is often why it was left out) shows a placeholder with the reason instead."""
    try:
        data = store.get(blob_key(row["sha256"]))
    except Exception:
        return _placeholder("missing", "the file's bytes were never stored")
    try:
        image = media.decode_reduced(data, side=128, max_pixels=max_pixels, memory_limit=memory_limit).image
        image.thumbnail((128, 128))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
    except media.ImageRejected as error:
        return _placeholder(error.reason, error.detail)
    except Exception as error:
        return _placeholder("corrupt", f"{type(error).__name__}: {error}")
    return f'<img alt="{_esc(str(row.get("key")))}" src="data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode()}">'


def _gallery(store: ObjectStore, rows: Sequence[SampleRow], spec: DatasetSpec) -> str:
    """The first THUMBNAILS rows, with how many there are in all ("12 of 40 shown")."""
    if not rows:
        return '<p class="empty">none</p>'
    shown = min(len(rows), THUMBNAILS)
    count = (f'<p class="shown" data-shown="{shown}" data-total="{len(rows)}">{shown} of {len(rows)} shown'
             f'{"" if shown == len(rows) else " (loupe serve lists them all)"}</p>')  # fmt: skip
    limits = spec.quality_gates.max_pixels
    cards = "".join(
        f'<figure>{_thumbnail(store, r, limits.limit, limits.memory_limit)}<figcaption>{_esc(str(r.get("key")))}<br><b>{_esc(str(r.get("reason") or r.get("dup_kind") or ""))}</b></figcaption></figure>'
        for r in rows[:THUMBNAILS]
    )  # fmt: skip
    return f'{count}<div class="gallery">{cards}</div>'


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#0d1b2a;color:#fff;padding:20px 32px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.8}
main{padding:16px 32px;display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:16px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px}section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px}.kpis{display:flex;gap:12px;flex-wrap:wrap}
.kpi{background:#f6f8fa;border-radius:6px;padding:8px 14px;min-width:110px}.kpi b{display:block;font-size:20px}
.axis{font-size:11px;fill:#57606a}.legend{font-size:11px}.value{font-size:11px;fill:#1f2328}.cell{font-size:10px;text-anchor:middle;fill:#1f2328}
.hists{display:flex;flex-wrap:wrap;gap:8px}.hists div{font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:132px;font-size:11px;word-break:break-all}
figure img,.noimg{width:128px;height:96px;object-fit:cover;border-radius:4px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
ul.gaps li{color:#b42318}.empty{color:#888}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
"""


def _quality_metrics(row: Mapping[str, Any]) -> list[float]:
    """The quality measures of a row that has them all, in ``analysis.QUALITY_METRICS`` order."""
    return [float(row[m]) for m in analysis.QUALITY_METRICS]


def _figures(
    store: ObjectStore, record: VersionRecord, accepted: list[SampleRow], others: list[SampleRow],
    spec: DatasetSpec, vectors: dict[str, npt.NDArray[np.float32]] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, DriftSummary | None]:  # fmt: skip
    """Health and drift figures: those the run stored with the version, else (older versions) computed now."""
    if record.health is not None and record.health.report_uri:
        stored = json.loads(store.get(record.health.report_uri))
        drift = stored.get("drift") if record.drift is not None else None
        return stored["health"], drift, record.drift
    reference = spec.drift.reference_version or record.parent
    parent_rows = (
        read_version_samples(store, read_version(store, record.dataset, reference)) if reference else []
    )
    _, health = analysis.health(accepted, others, parent_rows, spec.health)
    if not reference:
        return health, None, None
    known = {r["sample_id"] for r in parent_rows}
    summary, drift = analysis.drift(parent_rows, [r for r in accepted if r["sample_id"] not in known], reference,
                                    spec.drift, vectors=vectors)  # fmt: skip
    return health, drift, summary


def build_report(
    store: ObjectStore, dataset: str, version: str, spec: DatasetSpec | None = None,
    vectors: dict[str, npt.NDArray[np.float32]] | None = None,
) -> str:  # fmt: skip
    """The HTML page of one version (``vectors``: embeddings by sha256 for the map; else quality features)."""
    spec = spec or DatasetSpec.model_validate({"sources": [{"name": "_"}]})
    record: VersionRecord = read_version(store, dataset, version)
    accepted = read_version_samples(store, record)
    others = read_version_samples(store, record, "rejected")
    health, drift, drift_summary = _figures(store, record, accepted, others, spec, vectors)
    reference = drift_summary.reference if drift_summary is not None else None
    stats = record.stats
    kpis = {"samples": record.samples, "seen": health["seen"], "rejected": sum(stats.rejected.values()),
            "quarantined": sum(stats.quarantined.values()), "duplicates": stats.exact_duplicates + stats.near_duplicates,
            "flagged": stats.flagged, "classes": len(health["classBalance"]["counts"])}  # fmt: skip
    kpi_html = "".join(f'<div class="kpi" data-kpi="{k}"><b>{v}</b>{k}</div>' for k, v in kpis.items())
    hists = "".join(
        f"<div>{m}<br>{histogram(f, f'{m} histogram')}</div>" for m, f in health["quality"].items()
    )
    balance = bar_chart(
        {k: float(v) for k, v in health["classBalance"]["counts"].items()}, "class balance", fmt="{:.0f}"
    )
    slices = "".join(
        f"<h3>{' &times; '.join(s['fields'])}</h3>{heatmap(s, 'slice coverage')}" for s in health["slices"]
    )
    gaps = "".join(f"<li>{_esc(g['text'])}</li>" for s in health["slices"] for g in s["gaps"])
    if vectors and any(r["sha256"] in vectors for r in accepted):
        mapped = [r for r in accepted if r["sha256"] in vectors]
        points = project_2d(np.stack([vectors[r["sha256"]] for r in mapped]).astype(np.float64))
        map_note = "embeddings, first two principal components"
    else:
        mapped = [r for r in accepted if all(r.get(m) is not None for m in analysis.QUALITY_METRICS)]
        features = (
            np.array([_quality_metrics(r) for r in mapped])
            if mapped
            else np.zeros((0, len(analysis.QUALITY_METRICS)))
        )
        if len(features):
            features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
        points = project_2d(features) if len(features) else np.zeros((0, 2))
        map_note = "quality metrics, first two principal components (no embeddings in this version)"
    scatter_html = scatter(
        points, [str(r.get("label") or "(none)") for r in mapped], "2-D map of the samples"
    )
    if drift is not None and drift_summary is not None:
        psis = {k: float(v["psi"]) for k, v in drift["figures"].items() if v.get("psi") is not None}
        drift_html = (f'<p data-drift-score="{drift_summary.score:.4f}">score <b>{drift_summary.score:.3f}</b> against '
                      f'{_esc(reference or "")} on {drift_summary.new_samples} new samples'
                      f'{" — above the threshold" if drift_summary.exceeded else ""}'
                      f'{f"; embeddings {drift_summary.embedding:.3f}" if drift_summary.embedding is not None else ""}</p>'
                      + bar_chart(dict(sorted(psis.items(), key=lambda kv: -kv[1])[:12]), "drift PSI", fmt="{:.3f}"))  # fmt: skip
    else:
        drift_html = '<p class="empty">first version: nothing to compare with</p>'
    rejected = [r for r in others if r.get("disposition") in LEFT_OUT]
    duplicates = [r for r in others if r.get("disposition") == Disposition.DUPLICATE]
    qa = record.label_qa  # several label sets: their agreement, per class, and the consensus
    qa_html = ""
    if qa is not None:
        kappas = {k: max(c.kappa, 0.0) for k, c in qa.per_class.items() if c.kappa is not None}  # bars from 0
        qa_html = (
            f'<section class="wide" id="label-qa" data-kappa="{label_qa.figure(qa.kappa)}"><h2>Label agreement'
            "</h2>" + "".join(f"<p>{_esc(line)}</p>" for line in label_qa.describe(qa))
            + bar_chart(kappas, "kappa per class", fmt="{:.2f}") + "</section>"
        )  # fmt: skip
    fake = record.synthetic  # real:synthetic counts per split and class, and the gap in words
    synthetic_html = ""
    if fake is not None:
        synthetic_html = (
            f'<section class="wide" id="synthetic" data-synthetic-ratio="{fake.overall.ratio:.4f}"><h2>Synthetic '
            "data</h2>" + "".join(f"<p>{_esc(line.strip())}</p>" for line in synthetic.lines(fake))
            + bar_chart({k or "-": c.ratio for k, c in fake.splits.items()}, "synthetic share per split", fmt="{:.0%}")
            + '<ul class="gaps">' + "".join(f'<li data-gap="{_esc(g.measure)}" data-significant="{str(g.significant).lower()}">'
                                          f"{_esc(g.text)}</li>" for g in fake.gaps) + "</ul></section>"
        )  # fmt: skip
    budget = record.sampling  # spec.sampling: budgets, strategy, selected and left out per class
    sampling_html = ""
    if budget is not None:
        sampling_html = (
            f'<section class="wide" id="sampling" data-selected="{budget.selected}" data-left-out="{budget.left_out}">'
            "<h2>Sampling</h2>" + "".join(f"<p>{_esc(line.strip())}</p>" for line in sampling.describe(budget))
            + bar_chart({g.value or "-": g.selected for g in budget.classes}, "selected per class") + "</section>"
        )  # fmt: skip
    errors_html = ""
    if stats.label_errors is not None:  # spec.labels.errors: the candidates, highest score first
        by_id = {r["sample_id"]: r for r in accepted}
        found: list[SampleRow] = [{**by_id[c.sample_id], "reason": f"{c.label} -> {c.suggested} ({c.score:.2f})"}
                 for c in read_label_errors(store, record) if c.sample_id in by_id]  # fmt: skip
        errors_html = (f'<section class="wide" id="label-errors" data-candidates="{len(found)}"><h2>Label-error '
                       f"candidates ({len(found)})</h2>{_gallery(store, found, spec)}</section>")  # fmt: skip
    change = record.change
    title = f"{dataset}@{record.version}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)} · Loupe report</title><style>{STYLE}</style></head>
<body data-samples="{record.samples}" data-version="{_esc(record.version)}">
<header><h1>{_esc(title)}</h1><p>created {record.created:%Y-%m-%d %H:%M} UTC · parent {_esc(record.parent or "none")}
 · {_esc(change.bump.upper() if change else "")} {_esc("; ".join(change.reasons) if change else "")}</p></header>
<main>
<section class="wide"><h2>Counts</h2><div class="kpis">{kpi_html}</div></section>
<section class="wide"><h2>Quality distributions (accepted samples)</h2><div class="hists">{hists}</div></section>
<section><h2>Class balance</h2>{balance}<p>imbalance {health["classBalance"]["imbalance"] or 0:.2f} (largest / smallest class)</p></section>
<section id="map"><h2>Map of the samples</h2>{scatter_html}<p class="empty">{map_note}</p></section>
<section><h2>Slice coverage</h2>{slices or '<p class="empty">no slices configured (spec.health.slices)</p>'}
{f'<h3>Gaps</h3><ul class="gaps">{gaps}</ul>' if gaps else ""}</section>
<section><h2>Drift</h2>{drift_html}</section>
{qa_html}
{errors_html}
{synthetic_html}
{sampling_html}
<section class="wide" id="left-out"><h2>Rejected and quarantined ({len(rejected)})</h2>{_gallery(store, rejected, spec)}</section>
<section class="wide" id="duplicates"><h2>Duplicates ({len(duplicates)})</h2>{_gallery(store, duplicates, spec)}</section>
</main>
<script>document.body.dataset.rendered=[...document.querySelectorAll("svg.plot")].every(s=>s.childElementCount>0)?"yes":"no";</script>
</body></html>
"""
