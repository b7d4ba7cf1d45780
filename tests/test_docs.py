"""The reference documentation under docs/: present, self-contained, links that resolve."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("README.md", "protocols.md", "models.md", "datasets.md", "performance.md", "reliability.md")
# Facts live in docs/; nothing in the project may point at material users do not have.
FORBIDDEN = (b"shared" + b"/reference", b"../" + b"shared")  # split: this file must not match itself
THIS_FILE = "tests/test_docs.py"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)


def link_targets(text: str) -> list[str]:
    """Targets of inline and reference-style markdown links, code blocks and spans excluded."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page: lower case, punctuation dropped, spaces to '-'."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    """Relative link targets of ``page`` naming no existing file, or no heading of a .md file."""
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # a URL (http:, mailto:)
        path, _, anchor = target.partition("#")
        file = page.parent / path if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("name", PAGES)
def test_docs_page_exists_and_is_not_empty(name: str) -> None:
    page = DOCS / name
    assert page.is_file(), f"docs/{name} is missing"
    assert page.read_text(encoding="utf-8").strip(), f"docs/{name} is empty"


def test_docs_index_links_every_page() -> None:
    targets = set(link_targets((DOCS / "README.md").read_text(encoding="utf-8")))
    assert set(PAGES) - {"README.md"} <= targets


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [name for name in out.stdout.decode().split("\0") if name]


def test_no_file_points_at_reference_material_users_lack() -> None:
    offenders = []
    for name in _tracked_files():
        path = ROOT / name
        if name == THIS_FILE or not path.is_file():
            continue
        data = path.read_bytes()
        offenders += [f"{name}: {word.decode()}" for word in FORBIDDEN if word in data]
    assert not offenders, ("these files cite material that is not part of the project; "
                           f"move the facts into docs/ and point there: {offenders}")


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} links to missing files"


def test_broken_links_finds_a_missing_target(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Linear probe (many-shot)\n")
    page = tmp_path / "page.md"
    page.write_text("## Local part\n[a](there.md) [b](gone.md#part) [c](https://example.org/x.md) [d](#local-part)\n"
                    "[h](there.md#linear-probe-many-shot) [i](there.md#linear-probe) [j](#elsewhere)\n"
                    "`[e](in-code.md)`\n```\n[f](in-fence.md)\n```\n[g]: missing-ref.md\n")
    assert broken_links(page) == ["gone.md#part", "there.md#linear-probe", "#elsewhere", "missing-ref.md"]


def test_documented_commands_put_targets_before_configfile() -> None:
    """``--configfile`` takes several files: a target after it is read as a config file."""
    pattern = re.compile(r"snakemake [^\n#`]*--configfiles? \S+ [A-Za-z]")
    pages = [ROOT / "README.md", ROOT / "Snakefile", ROOT / "profiles" / "slurm" / "config.yaml",
             *sorted(DOCS.glob("*.md"))]
    offenders = [f"{p.name}: {m.group(0)}" for p in pages for m in pattern.finditer(p.read_text())]
    assert not offenders, offenders
