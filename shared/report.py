"""The run report: what was asked, what is done, what failed and why, where the outputs are.

Built from the run's manifest and the jobs' markers in storage (not from a task-result backend),
so it is the same for a local run and a fleet run, survives restarts, and can be rebuilt any time.
Written as ``runs/<id>/report.json`` plus a human summary and an HTML gallery (``index.html``).
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from convatlas.shared import keys
from convatlas.shared.jobs import (
    existing_result,
    grid_from_dict,
    io_map,
    job_from_dict,
    kind_of,
    read_json,
)
from convatlas.shared.manifest import (  # noqa: F401  (manifest_key, load_manifest: re-exported)
    iter_jobs,
    iter_section,
    load_manifest,
    manifest_key,
    rejected_count,
)
from convatlas.shared.metrics_summary import gallery_section, photo_figure, summary_lines
from convatlas.shared.metrics_summary import report_entry as metrics_entry
from convatlas.shared.storage import Storage


def report_key(run_id: str) -> str:
    return f"{keys.run_prefix(run_id)}/report.json"


def gallery_key(run_id: str) -> str:
    return f"{keys.run_prefix(run_id)}/index.html"


def active_key(run_id: str) -> str:
    """Present while a fleet run is unfinished: the healer's list of runs to watch."""
    return f"runs/active/{keys.safe_name(run_id, 'run id')}"


def active_runs(storage: Storage) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in storage.list_keys("runs/active/")]


def build_report(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any]:
    """Status of every job and grid of a run, read from storage."""
    items = []
    counts = {"done": 0, "failed": 0, "pending": 0}
    pipeline = {"model_seconds": 0.0, "input_wait_seconds": 0.0}
    jobs = [job_from_dict(d) for d in iter_jobs(storage, manifest)]
    # one or two GETs a job, overlapped: a 100 000-photo run's report in seconds, not minutes
    outcomes = io_map(lambda job: existing_result(job, storage), jobs)
    for job, res in zip(jobs, outcomes, strict=True):
        status = "pending" if res is None else ("failed" if res.status == "failed" else "done")
        counts[status] += 1
        item: dict[str, Any] = {"kind": job.kind, "status": status}
        naming, recorded = kind_of(job).report_entry(job, res.info if res else {})
        item.update(naming)
        if status == "done":
            item["outputs"] = job.outputs()
            item.update(recorded)
            record = res.info if res else {}
            for k in pipeline:  # each job's share of its batch's model time and input wait
                pipeline[k] += float(record.get("seconds" if k == "model_seconds" else k) or 0.0)
        elif status == "failed":
            item["error"] = res.error if res else None
        items.append(item)
    grids = []
    for d in manifest.get("grids", []):
        g = grid_from_dict(d)
        info = read_json(storage, g.marker)
        grids.append({
            "layer": g.layer,
            "page": g.page,
            "style": g.params.style,
            "status": "pending" if info is None else ("incomplete" if info["missing"] else "done"),
            "png": g.outputs()["png"],
            "missing": None if info is None else info["missing"],
            "dead": None if info is None else info.get("dead", []),
        })
    names_by_sha: dict[str, list[str]] = {}
    for f in iter_section(storage, manifest, "inputs"):
        names_by_sha.setdefault(f["sha256"], []).append(f["name"])
    return {
        "run_id": manifest["run_id"],
        "kind": manifest["kind"],
        "model": manifest["model"],
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": {**counts, "total": len(items), "rejected": rejected_count(manifest)},
        "pipeline": {k: round(v, 3) for k, v in pipeline.items()},
        "complete": counts["pending"] == 0 and all(g["status"] != "pending" for g in grids),
        "jobs": items,
        "grids": grids,
        "rejected": list(iter_section(storage, manifest, "rejected")),
        "duplicates": {s: n for s, n in names_by_sha.items() if len(n) > 1},
        **metrics_entry(items),  # faithfulness per method: mean ± sd over the run (when asked)
    }


def summary(report: dict[str, Any], where: str = "") -> str:
    """A few lines for a person: counts, failures with reasons, where things are."""
    c = report["counts"]
    lines = [
        f"run {report['run_id']} ({report['kind']}, {report['model']}): {c['done']} done, "
        f"{c['failed']} failed, {c['pending']} pending of {c['total']} jobs"
        + (f"; {c['rejected']} files not submitted" if c["rejected"] else "")
    ]
    for g in report["grids"]:
        extra = f", missing tiles {g['missing']}" if g["missing"] else ""
        style = "" if g.get("style", "book") == "book" else f" ({g['style']})"
        lines.append(f"  grid {g['layer']} page {g['page']}{style}: {g['status']}{extra} → {g['png']}")
    for j in report["jobs"]:
        if j["status"] == "failed":
            lines.append(f"  FAILED {j.get('name') or j.get('layer', '')}: {j['error']}")
    for r in report["rejected"]:
        lines.append(f"  NOT SUBMITTED {r['name']}: {r['error']}")
    healing = report.get("healing") or {}
    if healing.get("requeued") or healing.get("duplicates"):
        lines.append(f"  healed: {healing.get('requeued', 0)} jobs queued again after a stall, "
                     f"{healing.get('duplicates', 0)} outcomes reported twice (harmless)")
    if report["kind"] == "heatmaps":
        for j in report["jobs"][:20]:
            if j["status"] == "done" and j["top"]:
                t = j["top"][0]
                lines.append(f"  {j['name']}: {t['label']} ({t['probability']:.2f}) → {j['outputs']['overlay']}")
    lines.extend(summary_lines(report))
    if where:
        lines.append(f"  outputs in {where}")
    return "\n".join(lines)


def gallery_html(report: dict[str, Any], link: Any) -> str:
    """A self-contained page; ``link(key)`` gives each object's URL (relative or presigned)."""
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>convatlas run {esc(report['run_id'])}</title>",
        "<style>body{font-family:sans-serif;background:#111;color:#ddd}img{max-width:100%}"
        ".g{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px}"
        ".f{color:#f77}.m{font-size:80%;color:#aaa}</style>",
        f"<h1>convatlas run {esc(report['run_id'])}</h1>",
        f"<p>{esc(report['kind'])} · model {esc(report['model'])} · "
        f"{report['counts']['done']} done, {report['counts']['failed']} failed, "
        f"{report['counts']['pending']} pending</p>",
        gallery_section(report),
        "<div class='g'>",
    ]
    for g in report["grids"]:
        if g["status"] != "pending":
            parts.append(
                f"<figure><img src='{esc(link(g['png']))}' alt='grid'><figcaption>"
                f"{esc(g['layer'])} page {g['page']} · {esc(g.get('style', 'book'))}"
                + (f" · missing {g['missing']}" if g["missing"] else "")
                + "</figcaption></figure>"
            )
    for j in report["jobs"]:
        if j["kind"] != "gradcam":
            continue
        if j["status"] == "done":
            top = ", ".join(f"{esc(t['label'])} {t['probability']:.2f}" for t in j["top"])
            methods = j.get("methods") or ["gradcam"]
            for n, m in enumerate(methods):  # the methods of one photo side by side
                key = j["outputs"]["overlay" if n == 0 else f"overlay:{m}"]
                label = f" · {esc(m)}" if len(methods) > 1 else ""
                parts.append(
                    f"<figure><img src='{esc(link(key))}' alt='overlay {esc(m)}' loading='lazy'>"
                    f"<figcaption>{esc(j['name'])}{label}: {top}"
                    f"{photo_figure(j.get('method_stats') or {}, m)}</figcaption></figure>"
                )
        elif j["status"] == "failed":
            parts.append(f"<p class='f'>{esc(j['name'])}: {esc(str(j['error']))}</p>")
    parts.append("</div>")
    for r in report["rejected"]:
        parts.append(f"<p class='f'>not submitted: {esc(r['name'])}: {esc(r['error'])}</p>")
    return "\n".join(parts)


def write_report(storage: Storage, run_id: str, link: Any,
                 healing: dict[str, int] | None = None) -> dict[str, Any]:
    """Rebuild and store the report and gallery of a run; returns the report. ``healing``: the
    run's counters of jobs queued again by the healer and outcomes reported twice."""
    report = build_report(storage, load_manifest(storage, run_id))
    if healing is not None:
        report["healing"] = dict(healing)
    storage.put_bytes(report_key(run_id), json.dumps(report, indent=2).encode(), "application/json")
    storage.put_bytes(gallery_key(run_id), gallery_html(report, link).encode(), "text/html")
    return report


def finish_run(storage: Storage, run_id: str, link: Any,
               healing: dict[str, int] | None = None) -> dict[str, Any]:
    """The end of a fleet run: pages never built, or built before a tile they lacked arrived,
    are built now (a lost or late reducer loses nothing), the report and gallery are written, and the run leaves the active list."""
    from convatlas.shared.jobs import reduce_grid
    from convatlas.shared.jobs.outcomes import page_needs_rebuild

    manifest = load_manifest(storage, run_id)
    for d in manifest.get("grids", []):
        grid = grid_from_dict(d)
        if page_needs_rebuild(grid, storage):  # never built, or a tile it lacked has arrived
            reduce_grid(grid, storage)
    report = write_report(storage, run_id, link, healing)
    if report["complete"]:
        storage.delete(active_key(run_id))
    return report
