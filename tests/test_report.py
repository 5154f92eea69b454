"""The HTML report of a real tiny run, opened in a real headless browser (Debian's chromium): the page the browser
renders holds the claims table first, then every figure of the config with its caption, the summary tables, the
config and the provenance. The screenshot is kept in tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lotto import provenance
from lotto import report as lotto_report
from lotto.families import FAMILIES
from workflow_helpers import ROOT, make_workdir, snakemake

CONFIG = "workflow/configs/tiny.yaml"
EXP = "results/tiny"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]
# virtual milliseconds the page may run before the DOM is dumped: the report renders with React after load
VIRTUAL_TIME_MS = "30000"


# --------------------------------------------------------------------------- fast checks (no browser)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_figure_has_a_caption_and_a_place_in_the_report(family):
    names = set(FAMILIES[family].figure_names())
    assert set(lotto_report.FIGURES[family]) == names, "lotto/report.py must place every figure of the family"
    for name in names:
        text = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
        assert "Mirrors" in text and len(text.split()) > 60, f"workflow/report/{name}.rst: a caption says what " \
            "the figure shows, how to read it and which paper figure it mirrors"
    for _, stem in lotto_report.TABLES.get(family, []):
        assert (ROOT / "workflow" / "report" / f"{stem}.rst").is_file(), stem


def test_categories_are_numbered_in_reading_order():
    cfg = {"composability": {"ks": [2]}, "imp": {"levels": 2}, "zoo": None}
    names = [lotto_report.category(s, cfg) for s in lotto_report.sections(cfg)]
    assert names == ["1. Claims", "2. Composability - Movva, Frankle & Carbin (2021)", "3. IMP - Paul et al. (2022)",
                     "4. Run"]
    assert sorted(names) == names  # the report lists categories alphabetically
    assert not any(c in n for n in names for c in ":'\"`")  # they become reST link names and JavaScript strings


SHIPPED_CONFIGS = sorted([ROOT / "config.yaml", *(ROOT / "workflow" / "configs").glob("*.yaml")])


def _validated(path: Path) -> dict:
    from lotto import config as configmod

    return configmod.validate(configmod.read_config_file(path), check_paths=False)


def _html(rst: str) -> str:
    """reStructuredText to HTML as the report renders it, but any docutils warning is an error."""
    from docutils.core import publish_parts

    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]


class _Snakemake:  # what Snakemake hands a caption's template
    def __init__(self, config):
        self.config = config


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_captions_render_for_every_shipped_config(path):
    """Each caption is a Jinja template over the run's config (as in Snakemake's report): a key it names must
    exist in every config that draws its figure, and the text must be clean reStructuredText."""
    import jinja2

    cfg = _validated(path)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    stems = [lotto_report.CLAIMS, "provenance", "config"]
    for family in (f for f in FAMILIES if cfg.get(f)):
        stems += list(lotto_report.FIGURES[family]) + [stem for _, stem in lotto_report.TABLES.get(family, [])]
    for stem in stems:
        text = (ROOT / "workflow" / "report" / f"{stem}.rst").read_text()
        html = _html(env.from_string(text).render(snakemake=_Snakemake(cfg)))
        assert "<strong>" in html, stem


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_landing_page_renders_every_section_for_every_shipped_config(path, tmp_path, monkeypatch):
    """workflow/report/workflow.rst rendered like Snakemake does, over stand-ins of the report's results (every
    figure and table a config's families make, and the claims table): clean reStructuredText, claims first, every
    figure embedded."""
    import jinja2

    from dataclasses import dataclass

    @dataclass(frozen=True, order=True)
    class Category:
        name: str

        @property
        def is_other(self):
            return self.name == "Other"

    @dataclass
    class Result:
        path: Path
        labels: dict

        target = property(lambda self: self.path.name)
        name = property(lambda self: self.path.name)
        mime = property(lambda self: "image/png" if self.path.suffix == ".png" else "text/plain")
        caption = "<p>caption of the result</p>"

    lotto_report.register_rst_directives()
    cfg = _validated(path)
    categories: dict = {}

    def add(section, sub, name, content):
        f = tmp_path / name
        f.write_bytes(content)
        cat = categories.setdefault(Category(lotto_report.category(section, cfg)), {})
        cat.setdefault(Category(sub), []).append(Result(f, {"mirrors": "a paper"}))

    from lotto import claims as core

    row = core.Row("composability", "c1", "superiority", "PASS", "a claim", estimate=0.1, ci_low=0.05, ci_high=0.15,
                   margin=0.01, confidence=0.95, reason="it holds")
    add(lotto_report.CLAIMS, "Other", "claims.html", core.format_html([row]).encode())
    for family in (f for f in FAMILIES if cfg.get(f)):
        for name, (sub, _) in lotto_report.FIGURES[family].items():
            add(family, sub, f"{name}.png", b"\x89PNG\r\n\x1a\n" + name.encode())
        for table, _ in lotto_report.TABLES.get(family, []):
            add(family, lotto_report.TABLES_SUBCATEGORY, f"{table}.csv", b"a,b\n1,2\n")
    add(lotto_report.RUN, "Other", "config.yaml", b"experiment: x\n")
    add(lotto_report.RUN, "Other", "provenance.csv", b"lotto,files\n0.1.0,3\n")
    files = [r for subs in categories.values() for recs in subs.values() for r in recs]
    links = "".join(f"\n.. _{r.target}: javascript:app.showResultInfo('{r.path}')\n" for r in files)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = (ROOT / "workflow" / "report" / "workflow.rst").read_text() + links
    monkeypatch.chdir(tmp_path)  # the report reads the files relative to the working directory
    html = _html(env.from_string(text).render(snakemake=_Snakemake(cfg), categories=categories, files=files))
    assert "This run has no claims table" not in html and html.index("c1") < html.index("<img")
    for r in files:
        if r.mime == "image/png":
            data = base64.b64encode(r.path.read_bytes()).decode()
            assert f'src="data:image/png;base64,{data}"' in html, r.name
    for cat in categories:
        assert cat.name.replace("&", "&amp;") in html


# --------------------------------------------------------------------------- the browser
def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and allowed; skip (fail under CI) without it."""
    def found():
        return shutil.which("chromium") or shutil.which("chromium-browser")

    why = "chromium is not installed"
    if not found() and shutil.which("apt-get") and os.geteuid() == 0:
        for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if cmd[1] == "install" and proc.returncode == 0:
                break
        why = f"chromium is not installed and apt-get could not install it: {proc.stderr.strip()[-300:]}"
    elif not found():
        why += " (and apt-get as root is not available to install it: apt-get install chromium)"
    path = found()
    if path:
        return path
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


def _browse(chromium: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={VIRTUAL_TIME_MS}",
           *args, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


class Page(HTMLParser):
    """What the browser rendered: images, tables and the text of each report container (scripts excluded)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: dict[str, str] = {}  # alt -> src
        self.tables: dict[str, list[list[str]]] = {}  # id of the enclosing report container -> rows
        self.text: dict[str, str] = {}  # id of a report container -> its text
        self.all_text: list[str] = []
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of open elements
        self._skip = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def _container(self) -> str | None:
        return next((i for _, i in reversed(self._open) if i and i.startswith("lotto-")), None)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "img":
            self.images[a.get("alt", "")] = a.get("src", "")
            return
        if tag in ("br", "meta", "link", "input", "hr", "col"):
            return
        self._open.append((tag, a.get("id")))
        if tag == "table" and self._container():
            self.tables.setdefault(self._container(), [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._container() in self.tables:
                self.tables[self._container()].append(self._row)
            self._row = None
        if any(t == tag for t, _ in self._open):  # close it and whatever the browser left open inside it
            while self._open.pop()[0] != tag:
                pass

    def handle_data(self, data):
        if self._skip:
            return
        self.all_text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        for _, i in self._open:
            if i and i.startswith("lotto-"):
                self.text[i] = self.text.get(i, "") + data


def _container_id(name: str) -> str:
    """The HTML id docutils gives a report container named lotto-<name>."""
    return "lotto-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return [[" ".join(c.split()) for c in row] for row in csv.reader(fh)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny config run and its report built in one command (the README's one-liner)."""
    work = make_workdir(tmp_path_factory.mktemp("report"))
    snakemake(["--cores", "2", "--configfile", CONFIG, "--report", "report.html", "--report-after-run"], cwd=work,
              timeout=1200)
    return work


@pytest.fixture(scope="module")
def rendered(run, tmp_path_factory):
    chromium = _chromium()
    tmp = tmp_path_factory.mktemp("browser")
    page = run / "report.html"
    dom = _browse(chromium, page, tmp, "--dump-dom").stdout
    (tmp / "report.dom.html").write_text(dom)
    shot = tmp / "report.png"
    _browse(chromium, page, tmp, f"--screenshot={shot}", "--window-size=1600,9000")
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-tiny.png")
    parsed = Page()
    parsed.feed(dom)
    return parsed, shot


@pytest.mark.slow
def test_the_rendered_report_shows_every_figure_with_its_caption(run, rendered):
    page, _ = rendered
    figures = sorted(p.stem for p in (run / EXP / "figures").glob("*.png"))
    assert figures == sorted(FAMILIES["composability"].figure_names())  # tiny.yaml: the composability family only
    for name in figures:
        src = page.images.get(f"{name}.png")
        assert src, f"{name}.png is not on the rendered page (images: {sorted(page.images)})"
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data) == (run / EXP / "figures" / f"{name}.png").read_bytes(), name
        text = " ".join(page.text.get(_container_id(f"{name}.png"), "").split())
        rst = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
        question = rst.splitlines()[0].strip("* ")
        assert question in text, f"{name}: its caption is not beside it on the page"
        assert lotto_report.FIGURES["composability"][name][1] in text
    visible = " ".join("".join(page.all_text).split())
    # the report's menu lists the family's category (rendered by the report's JavaScript)
    assert lotto_report.category("composability", {"composability": {"ks": [2]}}) in visible


@pytest.mark.slow
def test_the_rendered_report_shows_the_claims_tables_config_and_provenance(run, rendered):
    page, shot = rendered
    tables = run / EXP / "tables"
    claims = _csv(tables / "claims.csv")
    head = claims[0]
    shown = page.tables.get("lotto-claims")  # the compact table: verdict, claim (details folded), effect
    assert shown and [r[0] for r in shown if r[0] != "verdict"] == [r[head.index("verdict")] for r in claims[1:]]
    for r, rec in zip([r for r in shown if r[0] != "verdict"], claims[1:]):
        assert r[1].startswith(rec[head.index("id")]) and rec[head.index("type")] in r[1]
    landing = " ".join(page.text.get("lotto-experiment-tiny", "").split())  # the report's first page
    first = claims[1][head.index("id")]
    assert 0 <= landing.index(first) < landing.index("1 Overlap of pruned weights")  # verdicts first
    for name in ("overlap", "accuracy", "provenance"):
        assert page.tables.get(_container_id(f"{name}.csv")) == _csv(tables / f"{name}.csv"), name
    rows = _csv(tables / "provenance.csv")
    record = dict(zip(rows[0], rows[1]))
    expected = provenance.provenance()
    assert record["lotto"] == expected["lotto"] and record["torch"] == expected["torch"]
    assert record["git_commit"] == (expected["git_commit"] or "")
    assert len(rows) == 2 and int(record["files"]) == int(record["checkpoint"]) + int(record["mask"]) + int(
        record["metrics"]) > 50  # the whole run from one code state
    config_text = page.text.get(_container_id("config.yaml"), "")
    assert "experiment: tiny" in config_text and "sparsities:" in config_text
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert (ARTIFACTS / "report-tiny.png").read_bytes() == png


@pytest.mark.slow
def test_the_claims_table_fits_a_1280_pixel_window(run, tmp_path):
    """Measured by the browser itself: a script added to a copy of the report writes the claims table's scroll
    and client widths into the page once the report has rendered, at a 1,280 x 900 window."""
    chromium = _chromium()
    page = tmp_path / "report.html"
    # polled: the report's React app renders the page some virtual seconds after load
    probe = ("<script>var lottoProbe = setInterval(function () {var t = document.querySelector('table.lotto-claims');"
             "if (!t) return; clearInterval(lottoProbe); var d = document.createElement('div');"
             "d.id = 'lotto-width-probe'; d.textContent = t.scrollWidth + ' ' + t.parentElement.clientWidth + ' ' + "
             "document.documentElement.scrollWidth + ' ' + window.innerWidth; document.body.appendChild(d);}, 250);"
             "</script>")
    head, body_end, tail = (run / "report.html").read_text().rpartition("</body>")  # the page's, not a script's
    page.write_text(head + probe + body_end + tail)
    dom = _browse(chromium, page, tmp_path, "--dump-dom", "--window-size=1280,900").stdout
    found = re.search(r'id="lotto-width-probe">([^<]*)<', dom)
    assert found, "the claims table was not found on the rendered page"
    table, box, document, window = (int(v) for v in found.group(1).split())
    assert table <= box and document <= window, found.group(1)
