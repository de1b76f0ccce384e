"""Every app notebook executes headless without error."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

APPS = sorted((Path(__file__).resolve().parents[2] / "apps").glob("*.ipynb"))


@pytest.mark.parametrize("path", APPS, ids=[p.name for p in APPS])
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
