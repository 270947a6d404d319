"""The README's Interoperability example runs, with the extras installed.

It is marked ```py rather than ```python in the README because tests/test_readme.py runs
every ```python block in environments without the extras.
"""

import re
from pathlib import Path

import torch

import toylab

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_interop_example_runs(transformer_lens, nnsight, tmp_path):
    text = README.read_text()
    section = text.split("## Interoperability", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    zm = toylab.zoo.load("induction-2l")
    namespace = {"toylab": toylab, "batch": zm.task.sample(8, seed=0)}  # as the quickstart defines them
    # nnsight reads a trace's body back from its source file, so the block runs from a file.
    script = tmp_path / "readme_interop_block.py"
    script.write_text(blocks[0])
    exec(compile(blocks[0], str(script), "exec"), namespace)
    _, cache = zm.model.run_with_cache(namespace["batch"].tokens)
    assert torch.equal(namespace["pattern"], cache["blocks.0.attn.hook_pattern"])
    assert namespace["tl_model"].toylab_truth.nodes["L1H1"].hook == "blocks.1.attn.hook_z"
