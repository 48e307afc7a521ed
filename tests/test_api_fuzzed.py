"""schemathesis against a live server: generated requests on every documented route, with a
valid token; no server error and no answer that the OpenAPI document does not allow."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import pyvips

from filesvc.auth import mint
from tests.helpers import PREFIX, SECRET
from tests.server_proc import start_server

# Enough generated requests per operation for >= 1,000 in all (24 operations, and the coverage
# phase adds its own), small enough to finish in about a minute on 2 busy cores.
EXAMPLES_PER_OPERATION = 15
# Not applicable to this API, each for a reason the schema cannot express:
EXCLUDED_CHECKS = [
    # "positive" means schema-valid, yet a valid chunk number may exceed the total chunks, a
    # valid file id may name no file: such requests are rightly refused.
    "positive_data_acceptance",
]


def upload_image(url: str, token: str) -> str:
    image = bytes(pyvips.Image.black(320, 200).jpegsave_buffer())
    request = urllib.request.Request(  # noqa: S310 - a loopback test server
        f"{url}{PREFIX}/companies/acme/files?filename=seed.jpg&thumbnail_sync=1",
        data=image,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        resource = json.load(resp)["resource"]
    assert resource["thumbnails"], resource
    return str(resource["id"])


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"FILESVC_ACCESS_LOG": "off"})
    try:
        token = mint(SECRET, company="acme", app="fuzzer")
        file_id = upload_image(server.url, token)
        config = tmp_path / "schemathesis.toml"
        # Requests aimed at the company the token grants and at a real file reach the handlers'
        # logic; everything else about them is generated.
        config.write_text(
            f'[parameters]\n"path.company_id" = "acme"\n"path.file_id" = "{file_id}"\n'
        )
        report = tmp_path / "report.json"
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--phases",
                "examples,coverage,fuzzing",
                "--checks",
                "all",
                "--exclude-checks",
                ",".join(EXCLUDED_CHECKS),
                # tus speaks in headers its own table tests pin (tests/test_tus_hostile.py).
                "--exclude-path-regex",
                "/uploads",
                "--seed",
                "20261130",
                "--no-shrink",
                "--request-timeout",
                "30",
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            cwd=tmp_path,
        )
        summary = json.loads(report.read_text())
        print("schemathesis:", summary["test_cases"], round(summary["running_time"], 1), "s")
        assert run.returncode == 0, run.stdout[-6000:]
        assert summary["test_cases"]["generated"] >= 1000, summary["test_cases"]
        # Every operation but tus's 12 (excluded above).
        assert summary["operations"]["tested"] == 24
        assert summary["operations"]["total"] == 24 + 12
        assert summary["failures"] == [] and summary["errors"] == []
        assert server.proc.poll() is None  # still serving
    finally:
        server.stop()
