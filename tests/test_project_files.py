"""The licence and the citation file: present, well formed and in step with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_names_the_paper_and_matches_the_package() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "type", "preferred-citation"):
        assert cff[key], key
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]  # bumped together
    paper = cff["preferred-citation"]
    assert paper["title"] == "MOFO: MOtion FOcused Self-Supervision for Video Understanding"
    assert [a["family-names"] for a in paper["authors"]] == ["Ahmadian", "Guerin", "Gilbert"]
    assert paper["year"] == 2023 and paper["doi"] == "10.48550/arXiv.2308.12447"


def test_licence_is_the_one_the_citation_file_names() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    licence = (ROOT / "LICENSE").read_text().splitlines()
    assert licence[0] == f"{cff['license']} License"
    assert any("Permission is hereby granted, free of charge" in line for line in licence)
