"""lotto is citable and licensed, and every paper it reproduces is cited with a link wherever it is described."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# arXiv id -> the family doc that describes the experiments of that paper
PAPERS = {"2104.14753": "composability", "2007.04091": "zoo", "2001.05050": "zoo", "2210.03044": "imp"}


def test_citation_cff_has_the_keys_cff_1_2_0_requires():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    assert cff["license"] == "MIT"
    assert cff["version"] == __import__("lotto").__version__
    cited = {i["value"] for ref in cff["references"] for i in ref["identifiers"]}
    assert cited == {f"arXiv:{a}" for a in PAPERS}
    for ref in cff["references"]:
        assert ref["url"] == f"https://arxiv.org/abs/{ref['identifiers'][0]['value'][len('arXiv:'):]}"
        assert ref["authors"] and ref["year"] and ref["title"]


def test_license_is_a_permissive_licence_with_a_holder():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the lotto authors" in text


def test_every_paper_linked_in_readme_docs_and_report():
    from lotto.families import FAMILIES
    from lotto.report import papers_html

    readme = (ROOT / "README.md").read_text()
    # the report's landing page lists the papers of the config's families from their specs
    report = papers_html({name: {"x": 1} for name in FAMILIES})
    for arxiv, family in PAPERS.items():
        url = f"https://arxiv.org/abs/{arxiv}"
        assert url in readme, arxiv
        assert url in (ROOT / "docs" / f"{family}.md").read_text(), (arxiv, family)
        assert f'href="{url}"' in report, arxiv
        assert url in [p.url for p in FAMILIES[family].papers], (arxiv, family)
