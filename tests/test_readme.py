import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["report"].layers["features.0"].total > 0


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    assert text.index("make app") < text.index("make test") < text.index("## Python API")
