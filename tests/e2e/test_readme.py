import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # later blocks continue from earlier ones, as in a notebook
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["report"].layers["features.0"].total > 0
    assert namespace["check"].file_bytes == namespace["check"].estimated_bytes


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    assert text.index("make app") < text.index("make test") < text.index("## Python API")
