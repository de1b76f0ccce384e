"""The index lists whatever notebooks the workshop folder holds; the guide agrees with it."""

import json
import re
from pathlib import Path

import pytest

from studio.workshop import Header, list_notebooks, nav_html
from studio.workshop.index import NotebookEntry, total_minutes
from studio.workshop.style import PROJECTOR_CSS

WORKSHOP = Path(__file__).resolve().parents[2] / "apps" / "workshop"


def notebook(path: Path, cells: list, meta: dict | None = None) -> None:
    nb = {"cells": cells, "metadata": meta or {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")


def md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def test_lists_notebooks_in_file_order_with_titles_and_lengths(tmp_path):
    notebook(tmp_path / "02-b.ipynb", [md(["intro\n", "# Second: pruning\n"])], {"workshop": {"minutes": 20, "summary": "b"}})
    notebook(tmp_path / "01-a.ipynb", [{"cell_type": "code", "source": "# not a title", "metadata": {}, "outputs": []}, md("## sub\n# First")])
    notebook(tmp_path / "04-new.ipynb", [], {"workshop": {"minutes": True}})
    notebook(tmp_path / ".hidden.ipynb", [md("# hidden")])
    (tmp_path / "README.md").write_text("# not a notebook")
    entries = list_notebooks(tmp_path)
    assert [e.file for e in entries] == ["01-a.ipynb", "02-b.ipynb", "04-new.ipynb"]
    assert entries[0] == NotebookEntry("01-a.ipynb", "First", None, "")
    assert entries[1] == NotebookEntry("02-b.ipynb", "Second: pruning", 20, "b")
    assert entries[2].title == "04-new" and entries[2].minutes is None  # a bool is not a length
    assert total_minutes(entries) == 20
    assert NotebookEntry.from_dict(entries[1].to_dict()) == entries[1]


def test_bad_folders_and_notebooks_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no workshop folder"):
        list_notebooks(tmp_path / "missing")
    (tmp_path / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="broken.ipynb is not a readable notebook"):
        list_notebooks(tmp_path)


def test_nav_links_every_other_notebook_and_escapes():
    entries = [NotebookEntry("01-a.ipynb", "A <b>", 10, "x"), NotebookEntry("02-b.ipynb", "B", None, "y's")]
    html = nav_html(entries, "01-a.ipynb")
    assert "<span class='workshop-nav-item workshop-nav-current'>A &lt;b&gt; <span class='workshop-nav-minutes'>10 min</span></span>" in html
    assert "href='02-b.ipynb'" in html and "title='y&#x27;s'" in html
    assert "href='01-a.ipynb'" not in html


def test_header_lists_the_folder_and_toggles_the_projector_style():
    header = Header("02-pruning.ipynb", WORKSHOP)
    for entry in list_notebooks(WORKSHOP):
        assert entry.title in header.nav.value
    assert "workshop-nav-current'>2 · " in header.nav.value
    header.projector.value = True
    assert header._projector_css.value == PROJECTOR_CSS
    header.projector.value = False
    assert header._projector_css.value == ""


def test_every_workshop_notebook_has_a_title_length_and_summary():
    entries = list_notebooks(WORKSHOP)
    assert len(entries) >= 4
    for e in entries:
        assert e.title != Path(e.file).stem and e.minutes and e.summary, e.file
        # each notebook's header names itself, so its own entry is the current one
        source = json.loads((WORKSHOP / e.file).read_text())["cells"][0]["source"]
        assert f'Header("{e.file}")' in "".join(source)


def test_the_instructor_guide_lists_every_notebook_with_its_length():
    guide = (WORKSHOP / "README.md").read_text()
    for e in list_notebooks(WORKSHOP):
        row = re.search(rf"^\|\s*`{re.escape(e.file)}`\s*\|[^\n]*?\|\s*(\d+) min\s*\|", guide, re.M)
        assert row, f"apps/workshop/README.md has no table row for {e.file}"
        assert int(row.group(1)) == e.minutes, f"{e.file}: the guide says {row.group(1)} min, the notebook {e.minutes}"


def test_labs_follow_the_projector_toggle(cnn_session):
    from studio.workshop import QuantLab

    header = Header("01-quantization.ipynb", WORKSHOP)
    lab = QuantLab(cnn_session)
    header.follow(lab)
    assert lab.figure.layout.font.size == 15
    header.projector.value = True
    assert lab.figure.layout.font.size == 20 and lab.figure.layout.title.font.size == 20
    header.projector.value = False
    assert lab.figure.layout.font.size == 15
    with pytest.raises(ValueError, match="set_projector"):
        header.follow(object())
