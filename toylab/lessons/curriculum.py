"""The order to follow the lessons in: ``lessons/curriculum.json``, checked against the folders.

    for step in curriculum():
        print(step.position, step.lesson.name, step.after, step.minutes)

Each step names a lesson folder and the lessons it builds on, which come earlier in the order;
its time is the sum of its exercises' stated minutes (``exercise(..., minutes=...)``), read
from the lesson's checks without running the lesson.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from toylab.lessons.exercise import get
from toylab.lessons.runner import LESSONS_DIR, Lesson, lessons, load_checks

CURRICULUM_FILE = LESSONS_DIR / "curriculum.json"


@dataclass(frozen=True)
class Step:
    position: int  # 1, 2, ...
    lesson: Lesson
    after: tuple[str, ...]  # lesson folders it builds on

    @property
    def minutes(self) -> int:
        """The lesson's exercises' stated minutes, summed."""
        load_checks(self.lesson.prefix)
        return sum(get(ex).minutes for ex in self.lesson.exercises)


def curriculum() -> list[Step]:
    """The lessons in the order to follow, each with what it builds on. Raises if the file
    leaves out a lesson, names one that does not exist, or puts a lesson before what it needs."""
    data = json.loads(CURRICULUM_FILE.read_text())
    folders = {lesson.name: lesson for lesson in lessons()}
    names = [entry["lesson"] for entry in data["order"]]
    unknown = sorted(set(names) - set(folders))
    missing = sorted(set(folders) - set(names))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or repeated:
        raise ValueError(f"{CURRICULUM_FILE}: " + "; ".join(
            part for part in (f"no lesson folder {unknown}" if unknown else "",
                              f"leaves out {missing}" if missing else "",
                              f"names {repeated} twice" if repeated else "") if part)
            + ": list every folder of lessons/ once")
    steps = []
    for position, entry in enumerate(data["order"], start=1):
        after = tuple(entry.get("after", ()))
        late = [a for a in after if a not in names[:position - 1]]
        if late:
            raise ValueError(f"{CURRICULUM_FILE}: {entry['lesson']} builds on {late}, which must come before it")
        steps.append(Step(position, folders[entry["lesson"]], after))
    return steps


__all__ = ["CURRICULUM_FILE", "Step", "curriculum"]
