"""The scenarios a run can choose, by name, and how one is run.  Each runs its ceilings, then
filesvc, then its peers, in that order, on the same bytes, and returns a `ScenarioResult` whose
ratios are taken within the run (the building blocks are in `bench/kit.py`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable

from bench.downloads import scenario_download, scenario_many_files, scenario_sustained
from bench.encryption import scenario_encryption
from bench.kit import Context, short
from bench.reads import scenario_reads
from bench.results_model import ScenarioResult
from bench.s3upload import scenario_s3_upload
from bench.scale import scenario_scale
from bench.thumb_scenario import scenario_thumbnail
from bench.uploads import scenario_chunks, scenario_small, scenario_upload

SCENARIOS: dict[str, Callable[[Context], Awaitable[ScenarioResult]]] = {
    "upload": scenario_upload,
    "chunks": scenario_chunks,
    "small": scenario_small,
    "download": scenario_download,
    "thumbnail": scenario_thumbnail,
    "many-files": scenario_many_files,
    "sustained": scenario_sustained,
    "encryption": scenario_encryption,
    "scale": scenario_scale,
    "reads": scenario_reads,
    "s3-upload": scenario_s3_upload,
}


async def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    t = time.perf_counter()
    try:
        res = await SCENARIOS[name](ctx)
    except Exception as e:
        res = ScenarioResult(name, name, error=short(e))
        res.notes.append(traceback.format_exc(limit=5))
    order = {"ceiling": 0, "reference": 1, "filesvc": 2, "peer": 3}
    res.metrics.sort(key=lambda m: order.get(m.kind, 9))  # stable: keeps each group's order
    res.seconds = time.perf_counter() - t
    return res
