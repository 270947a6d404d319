"""The curriculum: every lesson once, each after what it builds on, a time from its exercises, and the README's
and the lessons folder's tables in the same order."""

import json
import re
from pathlib import Path

import pytest

from toylab.lessons import curriculum as cur
from toylab.lessons import lessons

ROOT = Path(__file__).resolve().parents[2]


def test_every_lesson_once_each_after_what_it_builds_on():
    steps = cur.curriculum()
    assert sorted(s.lesson.name for s in steps) == sorted(le.name for le in lessons())
    seen = set()
    for step in steps:
        assert set(step.after) <= seen, step
        seen.add(step.lesson.name)
    assert steps[0].lesson.name == "01_tour" and steps[0].after == ()
    assert all(step.minutes > 0 for step in steps)


@pytest.mark.parametrize("readme", ["README.md", "lessons/README.md"])
def test_the_lesson_tables_follow_the_curriculum(readme):
    order = [s.lesson.name for s in cur.curriculum()]
    listed = re.findall(r"^\| (?:\d+ \| )?`(?:lessons/)?(\d\d_\w+)/` \|", (ROOT / readme).read_text(), re.M)
    assert listed == order


def test_a_curriculum_that_leaves_out_a_lesson_or_breaks_the_order_is_refused(tmp_path, monkeypatch):
    data = json.loads(cur.CURRICULUM_FILE.read_text())
    path = tmp_path / "curriculum.json"
    monkeypatch.setattr(cur, "CURRICULUM_FILE", path)
    path.write_text(json.dumps({"order": data["order"][1:]}))
    with pytest.raises(ValueError, match="leaves out \\['01_tour'\\]"):
        cur.curriculum()
    swapped = [data["order"][1], data["order"][0], *data["order"][2:]]
    path.write_text(json.dumps({"order": swapped}))
    with pytest.raises(ValueError, match="builds on \\['01_tour'\\], which must come before it"):
        cur.curriculum()
