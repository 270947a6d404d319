import json

import pytest
import torch
from safetensors.torch import save_file

from toylab import checkpoint as ckpt
from toylab.models import Transformer, TransformerConfig

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=9, n_ctx=6, d_mlp=32,
                        normalization_type="LN")


@pytest.fixture
def saved(tmp_path):
    model = Transformer(CFG, seed=4)
    card = ckpt.save_model(tmp_path / "m", model, {"name": "test"})
    return tmp_path / "m", model, card


def test_round_trip_gives_identical_weights_and_outputs(saved):
    folder, model, card = saved
    loaded, loaded_card = ckpt.load_model(folder)
    assert loaded.cfg == model.cfg
    assert loaded_card == card and card["name"] == "test" and len(card["weights_sha256"]) == 64
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    toks = torch.randint(0, 9, (2, 6))
    assert torch.equal(model(toks), loaded(toks))
    assert json.loads((folder / "config.json").read_text()) == CFG.to_dict()
    assert not list(folder.glob(".*tmp"))  # atomic writes leave no temporaries


def test_truncated_weights_are_a_clear_error(saved):
    folder, _, _ = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupted"):
        ckpt.load_model(folder)
    # Without a card to check the hash, safetensors' own parse still fails clearly.
    (folder / "card.json").unlink()
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors file"):
        ckpt.load_model(folder)


def test_a_flipped_byte_is_caught_by_the_hash(saved):
    folder, _, _ = saved
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # inside a tensor: safetensors itself would not notice
    weights.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="does not match the hash"):
        ckpt.load_model(folder)


def test_foreign_weights_name_what_does_not_fit(saved, tmp_path):
    folder, _, _ = saved
    (folder / "card.json").unlink()
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(folder / "model.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match=r"missing \[.*unexpected \['encoder.weight'\]"):
        ckpt.load_model(folder)


def test_weights_of_another_shape_are_reported(saved):
    folder, _, _ = saved
    other = Transformer(TransformerConfig(**{**CFG.to_dict(), "d_vocab": 12}))
    ckpt.atomic_write_bytes(folder / "model.safetensors", ckpt.state_dict_bytes(other))
    (folder / "card.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"wrong shapes embed.W_E \(12, 16\) != \(9, 16\)"):
        ckpt.load_model(folder)


def test_corrupted_config_and_missing_folder(saved, tmp_path):
    folder, _, _ = saved
    (folder / "config.json").write_text('{"n_layers": 2, "d_model": ')
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        ckpt.load_model(folder)
    (folder / "config.json").write_text(json.dumps({**CFG.to_dict(), "flavour": "x"}))
    with pytest.raises(ckpt.CheckpointError, match="unknown TransformerConfig fields"):
        ckpt.load_model(folder)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint folder"):
        ckpt.load_model(tmp_path / "nowhere")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    ckpt.atomic_write_json(target, {"v": 1})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [target]
