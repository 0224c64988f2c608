"""report.html as a browser sees it: headless Chromium loads the page and the checks read its DOM."""

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report import EVIL, PNG, write_run

from analysis.report.md_html import render_file
from analysis.report.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (.ci/run installs Debian's chromium)")
REPORTS = Path(__file__).resolve().parents[2] / "reports"

USER_SECTION = """## Study notes

1. First step, see [the paper](https://arxiv.org/abs/2108.06084).
2. Second step with `code` and **bold**.

- a bullet
- another bullet

[bad link](javascript:alert(1))
"""


class Dom(HTMLParser):
    """The elements a reader relies on: list items per list, header cells per table, links, images."""

    def __init__(self):
        super().__init__()
        self.lists, self.tables, self.links, self.imgs, self.scripts = [], [], [], [], 0
        self._stack, self._text = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("ol", "ul"):
            self.lists.append([tag, 0])
        elif tag == "li" and self.lists:
            self.lists[-1][1] += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "th":
            self._text = ""
        elif tag == "a":
            self.links.append(a.get("href"))
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "th" and self.tables:
            self.tables[-1].append(self._text.strip())
            self._text = None


def browser_dom(page: Path) -> Dom:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


def md_table_headers(md: str) -> list[list[str]]:
    lines = md.splitlines()
    return [
        [c.strip().replace("\\|", "|") for c in lines[i - 1].strip().strip("|").split(" | ")]
        for i in range(1, len(lines))
        if lines[i].startswith("|---") and lines[i - 1].startswith("|")
    ]


def assert_images_from_disk(dom: Dom, folder: Path, n_min: int):
    assert len(dom.imgs) >= n_min
    for img in dom.imgs:
        on_disk = folder / img["data-file"]
        assert on_disk.is_file(), img["data-file"]
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64" and base64.b64decode(data) == on_disk.read_bytes()
        assert on_disk.read_bytes().startswith(PNG)


def test_written_report_renders_lists_tables_links_figures(tmp_path):
    dirs = [write_run(tmp_path, "base", EVIL, "baseline", spikes=(90, 150)), write_run(tmp_path, "slw", "s", "slw")]
    out = tmp_path / "report"
    md = write_report(dirs, out, title="Test report", extra_sections=[USER_SECTION], n_boot=20).read_text()
    dom = browser_dom(out / "report.html")
    assert ["ol", 2] in dom.lists and ["ul", 2] in dom.lists
    assert dom.links.count("https://arxiv.org/abs/2108.06084") == 1
    assert not any(h and h.startswith("javascript:") for h in dom.links)  # markdown-it refuses the target
    assert dom.tables == md_table_headers(md) and any(t[:3] == ["run", "method", "seed"] for t in dom.tables)
    assert dom.scripts == 0  # the run named <script>... stays text
    assert_images_from_disk(dom, out, 5)


@pytest.mark.parametrize("name", ["cpu", "quick"])
def test_committed_report_html_is_rendered_from_its_markdown(name, tmp_path):
    folder = REPORTS / name
    md = (folder / "report.md").read_text()
    shutil.copytree(folder, tmp_path / name)
    fresh = render_file(tmp_path / name / "report.md")
    assert fresh.read_text() == (folder / "report.html").read_text()  # regenerate with render_file when it fails
    dom = browser_dom(folder / "report.html")
    n_ol = sum(1 for i, ln in enumerate(md.splitlines()) if ln.startswith("1. "))
    assert sum(1 for t, n in dom.lists if t == "ol" and n > 0) >= n_ol
    assert dom.tables == md_table_headers(md)
    assert_images_from_disk(dom, folder, md.count("\n!["))
