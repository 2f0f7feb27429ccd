"""Schemathesis against the live service's /openapi.json: generated requests for every operation
(random uploads, paths, ids and options) never get a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ST = str(Path(sys.executable).with_name("st"))


def test_no_server_errors_on_generated_requests(server, tmp_path):
    result = subprocess.run(
        [
            ST,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
            "--warnings",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # it writes .hypothesis/ there
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()
    assert server.alive()
    assert "Traceback" not in server.log_text()
