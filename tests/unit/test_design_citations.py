"""Every citation of docs/DESIGN.md in the code names a section that exists.

Code cites the design document as `DESIGN.md, "<section>"`; a citation
without a section, or of a section that was renamed away, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "DESIGN.md"
CITATION = re.compile(r'DESIGN\.md(?:,\s*|\s+)"([^"]+)"')


def sections() -> set[str]:
    text = DESIGN.read_text(encoding="utf-8")
    return {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("##")}


def citations() -> list[tuple[str, int, str | None]]:
    found = []
    for folder in ("src", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "DESIGN.md" not in line or path == Path(__file__):
                    continue
                match = CITATION.search(line)
                where = f"{path.relative_to(ROOT)}:{number}"
                found.append((where, number, match.group(1) if match else None))
    return found


def test_the_design_document_is_in_the_project() -> None:
    assert DESIGN.is_file()
    assert {"Layers", "How a request flows", "The delegate", "Leader duties"} <= sections()


def test_every_citation_names_an_existing_section() -> None:
    known = sections()
    cited = citations()
    assert cited, "no citation found: the scan is broken"
    bad = [(where, name) for where, _, name in cited if name is None or name not in known]
    assert bad == [], f"citations of missing sections: {bad}"
