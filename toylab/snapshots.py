"""Snapshots of a model's weights along a training run, for studying how a circuit forms.

``train`` keeps only its latest resumable checkpoint; a ``Snapshots`` callback keeps the
weights at step 0, every ``every`` steps and at the end, one safetensors file each::

    FOLDER/snapshots.json              {"format", "every", "model": TransformerConfig}
    FOLDER/step-0000000.safetensors    the weights before the first step
    FOLDER/step-0000050.safetensors    ... every ``every`` steps, and at the last step

    train(model_cfg, task, cfg, out_dir=run, callbacks=[Snapshots(run / "snapshots", every=50)])
    for step, model in load_snapshots(run / "snapshots"):
        ...

Each file is written atomically (a temporary dot-file renamed into place), so an
interrupted run leaves whole snapshots only. Training is deterministic and resumes from
its latest checkpoint, so after a resume the steps between that checkpoint and the
interruption are replayed bit for bit: a snapshot that already exists is kept, never
written twice, and the resumed run ends with exactly the files an uninterrupted run has.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from toylab import checkpoint as ckpt
from toylab.models import Transformer, TransformerConfig
from toylab.train import Callback, RunState

MANIFEST = "snapshots.json"
FORMAT = "toylab-snapshots/1"
_NAME = re.compile(r"^step-(\d{7,})\.safetensors$")


def snapshot_name(step: int) -> str:
    """``step-0000050.safetensors`` for step 50."""
    return f"step-{step:07d}.safetensors"


class Snapshots(Callback):
    """Save the model's weights at step 0, every ``every`` steps and at the end of training.

    ``folder`` may already hold snapshots of the same run (a resumed run): existing files
    are kept. Snapshots of another run, or taken at another interval, raise ValueError
    (on the first write, when the model is known, or at once for ``every``).
    """

    def __init__(self, folder: str | Path, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int (snapshot every that many steps), got {every!r}")
        self.folder = Path(folder)
        self.every = every
        manifest = self.folder / MANIFEST
        if manifest.exists():
            saved = ckpt.read_json(manifest, "snapshot manifest")
            if saved.get("every") != every:
                raise ValueError(
                    f"{self.folder} holds snapshots taken every {saved.get('every')} steps, not every {every}; "
                    f"use every={saved.get('every')} or another folder"
                )
        self._checked = False

    def on_eval(self, run: RunState, metrics: dict[str, float]) -> None:
        if run.step == 0:  # the evaluation before the first step: a fresh run's initial weights
            self._save(run)

    def on_step_end(self, run: RunState) -> None:
        if run.step % self.every == 0:
            self._save(run)

    def on_train_end(self, run: RunState) -> None:
        self._save(run)

    def _save(self, run: RunState) -> None:
        if not self._checked:
            self._write_manifest(run.model.cfg)
        path = self.folder / snapshot_name(run.step)
        if not path.exists():
            ckpt.atomic_write_bytes(path, ckpt.state_dict_bytes(run.model))

    def _write_manifest(self, cfg: TransformerConfig) -> None:
        manifest = self.folder / MANIFEST
        data = {"format": FORMAT, "every": self.every, "model": cfg.to_dict()}
        if manifest.exists():
            saved = ckpt.read_json(manifest, "snapshot manifest")
            if saved.get("model") != data["model"]:
                raise ValueError(f"{self.folder} holds snapshots of a different model; choose another folder")
        else:
            ckpt.atomic_write_json(manifest, data)
        self._checked = True


def snapshot_steps(folder: str | Path) -> list[int]:
    """The steps with a snapshot in ``folder``, ascending.

    Temporary dot-files (a write in progress or cut short) are skipped. Raises
    ``CheckpointError`` if the folder is missing or holds a ``.safetensors`` file that is
    not named ``step-NNNNNNN.safetensors`` (a foreign file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt.CheckpointError(f"no snapshot folder at {folder}")
    steps = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        match = _NAME.match(path.name)
        if match:
            steps.append(int(match.group(1)))
        elif path.suffix == ".safetensors":
            raise ckpt.CheckpointError(
                f"{path} is not a snapshot (snapshots are named step-NNNNNNN.safetensors); "
                "move it out of the snapshot folder"
            )
    return sorted(steps)


def load_snapshots(folder: str | Path, model_cfg: TransformerConfig | None = None) -> Iterator[tuple[int, Transformer]]:
    """``(step, model)`` for each snapshot in ``folder``, in step order, loaded one at a time.

    ``model_cfg`` defaults to the one recorded in the folder's ``snapshots.json``. The
    folder is listed at once, so a missing or empty folder raises here rather than on the
    first iteration; a truncated, corrupted or foreign snapshot raises ``CheckpointError``
    naming the file when it is reached. Models are returned on the CPU in eval mode.
    """
    folder = Path(folder)
    steps = snapshot_steps(folder)
    if not steps:
        raise ckpt.CheckpointError(f"{folder} holds no snapshots (step-NNNNNNN.safetensors files)")
    if model_cfg is None:
        manifest = ckpt.read_json(folder / MANIFEST, "snapshot manifest")
        try:
            model_cfg = TransformerConfig.from_dict(manifest["model"])
        except (KeyError, TypeError, ValueError) as err:
            raise ckpt.CheckpointError(f"{folder / MANIFEST} has no valid model config ({err})") from None
    cfg = model_cfg

    def generate() -> Iterator[tuple[int, Transformer]]:
        for step in steps:
            path = folder / snapshot_name(step)
            model = Transformer(cfg)
            ckpt.load_into(model, ckpt.load_weights(path), str(path))
            yield step, model.eval()

    return generate()


__all__ = ["Snapshots", "load_snapshots", "snapshot_name", "snapshot_steps"]
