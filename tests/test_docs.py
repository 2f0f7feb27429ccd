"""The user documentation: a short README with contents, pages under docs/, links that resolve.

The checks are plain functions returning the problems they find, so that the tests below can
run them on the real files and on broken markdown, and show that each check can fail.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_README_LINES = 250
# The pages README.md must link to (docs/<name>.md).
DOC_PAGES = (
    "service",
    "client",
    "cache-and-workers",
    "training",
    "deployment",
    "library",
    "cli",
    "limits",
    "testing",
)
# User docs speak of the product, never of how it was built.
FORBIDDEN = (
    r"\bissue\s*#?\d+",
    r"\blease[sd]?\b",
    r"\btransfer limits?\b",
    r"gpu_pack",
    r"\bsessions?\b",
    r"\bpacking\b",
    r"\bdevice tool\b",
    r"\blent\b",
    r"\bH[12]00\b",
    r"\.\./shared/",
    r"\bbuild farm\b",
)

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text, with the lines of fenced code blocks blanked."""
    out, fence = [], ""
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
            out.append("")
        elif m:
            fence = m.group(1)
            out.append("")
        else:
            out.append(line)
    return out


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, punctuation but - and _ dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> list[str]:
    """Every heading's anchor, in order; repeated ones get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = []
    for line in prose_lines(text):
        m = _HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        anchor = base
        while anchor in seen:  # a heading can also be named like another's suffixed anchor
            seen[base] += 1
            anchor = f"{base}-{seen[base]}"
        seen.setdefault(base, 0)
        seen.setdefault(anchor, 0)
        out.append(anchor)
    return out


def links(text: str) -> list[str]:
    """Link targets of a markdown text, outside code blocks and code spans."""
    prose = _CODE_SPAN.sub("", "\n".join(prose_lines(text)))
    return _LINK.findall(prose)


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//")


def link_problems(path: Path) -> list[str]:
    """Relative links of a markdown file that name a missing file or a missing heading."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if not is_relative(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.name}: link to a missing file: {target}")
        elif (
            fragment
            and dest.suffix == ".md"
            and fragment not in anchors(dest.read_text(encoding="utf-8"))
        ):
            problems.append(f"{path.name}: link to a missing heading: {target}")
    return problems


def forbidden_words(text: str) -> list[str]:
    """Wording about how the project was built rather than about the product."""
    found = []
    for pattern in FORBIDDEN:
        found += [m.group(0) for m in re.finditer(pattern, text, re.I)]
    return found


def contents_problems(readme: str) -> list[str]:
    """A contents list near the top: a "Contents" heading, then links to the README's headings."""
    lines = prose_lines(readme)
    starts = [
        i
        for i, line in enumerate(lines[:60])
        if (m := _HEADING.match(line)) and "contents" in m.group(2).lower()
    ]
    if not starts:
        return ["README: no contents heading in its first 60 lines"]
    block = []
    for line in lines[starts[0] + 1 :]:
        if _HEADING.match(line):
            break
        block.append(line)
    own = set(anchors(readme))
    entries = [t for t in links("\n".join(block)) if t.startswith("#")]
    problems = [
        f"README: contents entry to a missing heading: {t}" for t in entries if t[1:] not in own
    ]
    if len(entries) < 5:
        problems.append(
            f"README: the contents list has {len(entries)} entries; at least 5 expected"
        )
    return problems


def readme_problems(root: Path) -> list[str]:
    """README.md: short, with contents, and linking each docs page."""
    readme = (root / "README.md").read_text(encoding="utf-8")
    problems = []
    n = len(readme.splitlines())
    if n > MAX_README_LINES:
        problems.append(f"README: {n} lines, over {MAX_README_LINES}")
    problems += contents_problems(readme)
    targets = {t.partition("#")[0] for t in links(readme)}
    for page in DOC_PAGES:
        rel = f"docs/{page}.md"
        if not (root / rel).is_file():
            problems.append(f"{rel} is missing")
        if rel not in targets:
            problems.append(f"README does not link to {rel}")
    return problems


def markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def all_problems(root: Path) -> list[str]:
    problems = readme_problems(root)
    for path in markdown_files(root):
        problems += link_problems(path)
        problems += [f"{path.name}: {w!r}" for w in forbidden_words(path.read_text("utf-8"))]
    return problems


# The real documentation.


def test_readme_is_short_with_a_contents_list() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= MAX_README_LINES
    assert contents_problems(readme) == []


def test_docs_pages_exist_and_are_linked_from_the_readme() -> None:
    assert readme_problems(ROOT) == []


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    problems = [p for path in markdown_files(ROOT) for p in link_problems(path)]
    assert problems == []


def test_docs_speak_of_the_product_only() -> None:
    found = {
        path.name: words
        for path in markdown_files(ROOT)
        if (words := forbidden_words(path.read_text(encoding="utf-8")))
    }
    assert found == {}


# The checkers themselves: each one fails on bad markdown.


def test_github_anchors() -> None:
    assert (
        github_anchor("Two commands, on a fresh machine (Python 3.11, Linux x86-64)")
        == "two-commands-on-a-fresh-machine-python-311-linux-x86-64"
    )
    assert github_anchor("`mofo boxes`") == "mofo-boxes"
    assert (
        github_anchor("Everything together: `docker compose`")
        == "everything-together-docker-compose"
    )
    assert github_anchor("MOFO — motion boxes") == "mofo--motion-boxes"
    assert github_anchor("The [box record](x.md) in_full") == "the-box-record-in_full"
    text = "# A\n\n## B\n\n```sh\n# not a heading\n```\n\n## B\n\n### B\n\n## B-1\n"
    assert anchors(text) == ["a", "b", "b-1", "b-2", "b-1-1"]


def test_links_skip_code() -> None:
    text = "[a](x.md) `[b](y.md)`\n\n```md\n[c](z.md)\n```\n[d](<w.md>) [e](https://e.org/#f)"
    assert links(text) == ["x.md", "w.md", "https://e.org/#f"]


def test_link_checker_finds_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Twice\n\n## Twice\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/page.md#twice-1) [web](https://example.org/#x) [self](#top)\n"
        "[gone](docs/gone.md) [no heading](docs/page.md#twice-2) [`code`](#nowhere)\n\n# Top\n"
    )
    assert link_problems(tmp_path / "README.md") == [
        "README.md: link to a missing file: docs/gone.md",
        "README.md: link to a missing heading: docs/page.md#twice-2",
        "README.md: link to a missing heading: #nowhere",
    ]


def test_forbidden_words_are_found() -> None:
    bad = "Fixed in issue #12 on the H200 lent to this session; see ../shared/GPU.md and gpu_pack."
    assert sorted(forbidden_words(bad)) == sorted(
        ["issue #12", "lent", "session", "gpu_pack", "H200", "../shared/"]
    )
    assert forbidden_words("The released code is silent on packets and packages.") == []


def test_contents_checker() -> None:
    assert contents_problems("# T\n\nNo list.\n\n## A\n") == [
        "README: no contents heading in its first 60 lines"
    ]
    good = "# T\n\n## Contents\n\n" + "".join(f"- [{c}](#{c})\n" for c in "abcde")
    good += "".join(f"\n## {c}\n" for c in "abcde")
    assert contents_problems(good) == []
    assert contents_problems(good.replace("## e\n", "## f\n")) == [
        "README: contents entry to a missing heading: #e"
    ]


def test_checks_fail_on_a_broken_copy_of_the_docs(tmp_path: Path) -> None:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    for path in markdown_files(ROOT):  # the other files the docs link to
        for target in links(path.read_text(encoding="utf-8")):
            file_part = target.partition("#")[0]
            if is_relative(target) and file_part:
                src = (path.parent / file_part).resolve()
                dest = tmp_path / src.relative_to(ROOT)
                if src.is_file() and not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, dest)
    assert all_problems(tmp_path) == []

    service = tmp_path / "docs" / "service.md"
    service.write_text(service.read_text().replace("\n## Errors\n", "\n## Problems\n"))
    (tmp_path / "docs" / "limits.md").unlink()
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text() + "Ask the build session.\n" + "x\n" * 250)
    problems = all_problems(tmp_path)
    assert any(p.startswith("README: ") and "lines, over 250" in p for p in problems)
    assert "docs/limits.md is missing" in problems
    assert "README.md: link to a missing file: docs/limits.md" in problems
    assert "README.md: link to a missing heading: docs/service.md#errors" in problems
    assert "README.md: 'session'" in problems
