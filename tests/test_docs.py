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


# -- every snippet runs ----------------------------------------------------------------------------
import re  # noqa: E402

import pytest  # noqa: E402

ROOT = DOCS.parent
#: Pages whose snippets another test runs as written, in the folder of inputs they name.
RUN_ELSEWHERE = {"docs/cli.md": "tests/test_cli.py::test_every_example_of_the_cli_page_runs"}
_BLOCK = re.compile(r"(?:<!-- snippet: (?P<directive>.*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _pages() -> list[str]:
    return ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))]


def snippets(page: str) -> list[tuple[int, str | None, str]]:
    """(line, directive, code) of each fenced python block of a page, in order.

    A block may be preceded by ``<!-- snippet: skip (REASON) -->`` (not run, for a reason the
    page states: network, hours, data that is not shipped) or ``<!-- snippet: replace "A" =>
    "B"; ... -->`` (run with smaller sizes: the same code on fewer crystals or epochs).
    """
    text = (ROOT / page).read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group("directive"), m.group("code"))
        for m in _BLOCK.finditer(text)
    ]


def _prepared(directive: str | None, code: str) -> str | None:
    if directive is None:
        return code
    if directive.startswith("skip"):
        assert re.fullmatch(r"skip \(.+\)", directive), f"a skip names its reason: {directive!r}"
        return None
    assert directive.startswith("replace "), f"unknown snippet directive {directive!r}"
    for pair in directive[len("replace ") :].split(";"):
        old, new = re.fullmatch(r'\s*"(.*)" => "(.*)"\s*', pair).groups()
        assert old in code, f"{old!r} is not in the snippet"
        code = code.replace(old, new)
    return code


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in _pages() if p not in RUN_ELSEWHERE])
def test_every_python_snippet_of_the_page_runs(page, tmp_path, monkeypatch):
    """The blocks of one page run in order in one namespace (a page reads top to bottom), in
    an empty folder, with only the changes its ``snippet`` comments state."""
    blocks = snippets(page)
    if not blocks:
        pytest.skip(f"{page} has no python snippet")
    if any("ase" in code for _, _, code in blocks):
        pytest.importorskip("ase")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    skipped = []
    for line, directive, code in blocks:
        prepared = _prepared(directive, code)
        if prepared is None:
            skipped.append(line)
            continue
        exec(compile(prepared, f"{page}:{line}", "exec"), namespace)
    assert len(skipped) < len(blocks), f"every snippet of {page} is skipped"


def test_only_named_pages_are_run_elsewhere_and_skips_give_reasons():
    assert set(RUN_ELSEWHERE) <= set(_pages())
    for page in _pages():
        for _line, directive, code in snippets(page):
            if directive is not None:
                _prepared(directive, code)  # a skip has a reason, a replacement applies


#: Internal context a reader of the docs does not have (``SPEC`` in capitals only).
INTERNAL = [
    r"\.\./shared",
    r"(?-i:\bSPEC\b)",
    r"\bissues?\b",
    r"this (machine|project)",
    r"\bsession\b",
]


@pytest.mark.parametrize("pattern", INTERNAL)
def test_the_docs_name_no_internal_file_or_process(pattern):
    found = [
        f"{page}:{n}: {line.strip()}"
        for page in _pages()
        for n, line in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1)
        if re.search(pattern, line, flags=re.I) and "into sessions" not in line
    ]
    assert found == []
