"""The publishing workflow (.github/workflows/book.yml) is valid and builds what the README says.

GitHub Actions cannot run here, so the file is checked against GitHub's workflow schema (shipped
offline with check-jsonschema) and for the few things that make a Pages deployment work.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def test_workflow_matches_githubs_schema():
    checker = Path(sys.executable).with_name("check-jsonschema")
    if not checker.exists():
        checker = shutil.which("check-jsonschema")
    if not checker:
        pytest.skip("check-jsonschema is not installed (the `test` extra installs it)")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_builds_the_site_and_deploys_it_to_pages():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["build"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(run.strip() == "make site" for run in runs), "built with the README's command"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/site"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    makefile = (ROOT / "Makefile").read_text()
    assert "\nsite:" in makefile and "_build/site" in makefile
