"""The documentation states facts that the code owns: keep them in step."""

from __future__ import annotations

from pathlib import Path

from dimfeat.elements import imputed_properties

DOCS = Path(__file__).resolve().parent.parent / "docs"

BEGIN = "<!-- imputed-properties:begin -->"
END = "<!-- imputed-properties:end -->"


def _imputed_rows_in_method_page() -> list[tuple[str, str]]:
    text = (DOCS / "method.md").read_text()
    assert BEGIN in text and END in text, "docs/method.md lost the imputed-properties markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= {"-", ":"} or cells[0] == "Element":
            continue
        rows.append((cells[0], cells[1]))
    return rows


def test_method_page_lists_exactly_the_imputed_properties():
    documented = _imputed_rows_in_method_page()
    assert len(documented) == len(set(documented)), "a pair is listed twice"
    assert sorted(documented) == sorted(imputed_properties())


def test_method_page_states_the_number_of_imputed_values():
    text = (DOCS / "method.md").read_text()
    assert f"{len(imputed_properties())} imputed values" in text


def test_every_test_the_reliability_page_cites_exists():
    import re

    cited = set(re.findall(r"`(test_\w+)`", (DOCS / "reliability.md").read_text()))
    tests = Path(__file__).resolve().parent
    defined = {
        name
        for file in tests.glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", file.read_text(), flags=re.M)
    }
    assert len(cited) > 30
    assert sorted(cited - defined) == []
