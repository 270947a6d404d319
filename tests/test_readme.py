"""The README's two commands are the ones a fresh machine needs: keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = bash_blocks(readme)
    main_job = next(b for b in blocks if "toylab lab" in b)
    test_command = next(b for b in blocks if "pytest" in b)
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, ".ci/run must run the README's test command verbatim"


def test_readme_python_blocks_run_in_order():
    readme = (ROOT / "README.md").read_text()
    namespace = {}
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme, flags=re.S)):
        exec(compile(block, f"README python block {i + 1}", "exec"), namespace)
