"""The CAM report card on the fleet against in-process, as a user runs each.

    python bench/bench_report_card.py --sample 16 [--smoke]

Generates 2 MP photos (``bench_examples.make_photos``), then on the same sample:
``convatlas report-card PHOTOS --model efficientnet-lite0`` (in-process) and
``convatlas submit report-card PHOTOS ... --wait`` through a local stack with one worker
(``convatlas stack``: Redis, SeaweedFS, one Celery worker on this machine's cores). Wall time of
each, one after the other on an otherwise idle machine, and whether both recommend the same
(method, layer). Writes the ``trust-card`` block of ``bench/RESULTS-trust.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from measure import machine_busy, machine_lines, say, table, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "efficientnet-lite0"


def card(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one ``convatlas`` report-card command."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "convatlas.producer.cli", *args], env=env, cwd=REPO,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def recommended(stdout: str) -> str:
    """"method @ layer" from either command's ``recommended …`` line."""
    m = re.search(r"recommended:? (\S+ @ \S+)", stdout)
    return m.group(1) if m else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=16, help="photos in the card's sample")
    ap.add_argument("--photos", type=int, default=None, help="photos generated (default: the sample)")
    ap.add_argument("--smoke", action="store_true", help="2 photos, 2 steps, no write")
    a = ap.parse_args()
    from bench_examples import make_photos

    from convatlas.stack.supervisor import LocalStack

    sample = 2 if a.smoke else a.sample
    extra = ["--steps", "2", "--methods", "gradcam,eigencam"] if a.smoke else []
    work = Path(tempfile.mkdtemp(prefix="bench-card-"))
    photos = make_photos(work / "photos", a.photos or sample)
    folder = str(photos[0].parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONVATLAS_", "AWS_"))}
    say(f"{len(photos)} photos of 2 MP in {folder}; busy before: {machine_busy():.2f}")

    local_wall, local_out = card(["report-card", folder, "--model", MODEL, "--sample", str(sample),
                                  "--out", str(work / "local"), *extra], base)
    say(f"in-process: {local_wall:.0f} s, recommended {recommended(local_out)}")

    stack = LocalStack(work / "stack", workers=1)
    stack.start()
    try:
        env = {**base, **stack.env()}
        fleet_wall, fleet_out = card(["submit", "report-card", folder, "--model", MODEL, "--sample",
                                      str(sample), "--wait", "--timeout", "86400", *extra], env)
    finally:
        stack.stop()
    say(f"fleet (1 worker): {fleet_wall:.0f} s, recommended {recommended(fleet_out)}")
    same = recommended(local_out) == recommended(fleet_out)
    rows = [["in-process (`convatlas report-card`)", f"{local_wall:.0f}", "1.00", recommended(local_out)],
            ["fleet, 1 worker (`convatlas submit report-card --wait`)", f"{fleet_wall:.0f}",
             f"{local_wall / fleet_wall:.2f}", recommended(fleet_out)]]
    lines = [f"{MODEL}, {sample} photos of 2 MP, default protocol{' (smoke: ' + ' '.join(extra) + ')' if extra else ''}; "
             f"same recommendation: {same}", "",
             table(["run", "wall s", "speed vs in-process", "recommended"], rows), "",
             f"per photo: in-process {local_wall / sample:.1f} s, fleet {fleet_wall / sample:.1f} s; "
             f"200 photos at these rates: {200 * local_wall / sample / 3600:.1f} h / {200 * fleet_wall / sample / 3600:.1f} h",
             "", *machine_lines()]
    print("\n".join(lines))
    if not a.smoke:
        write_section(REPO / "bench" / "RESULTS-trust.md", "trust-card", lines)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
