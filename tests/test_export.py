"""Model export: save/load round trip, refusal of bad directories, and the sample/reconstruct/export commands."""
import json
import pickle

import pytest
import torch
from PIL import Image

from evo.cli.export import main_export, main_reconstruct, main_sample
from evo.genotype import parse_genotype
from evo.measurement import Measurement
from evo.spec import TrainSpec
from gpuworker.export import ModelDirError, export_best, load_model, save_model, train_and_save
from gpuworker.figures import grid_size, manifold_images, reconstruction_rows
from gpuworker.model import VAE
from gpuworker.result import TrainResult

SPEC = TrainSpec(dataset="synthetic", epochs=1, val_size=200, train_subset=500)
GENOTYPE = parse_genotype("100,50|10|50,100")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model trained on synthetic data and saved; the directory and the info."""
    path = tmp_path_factory.mktemp("model") / "m"
    info = train_and_save(GENOTYPE, SPEC, path, device="cpu")
    return path, info


def _copy(src, dst):
    dst.mkdir()
    for name in ("weights.pt", "model.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _rehash(path):
    """Update model.json's checksum after changing weights.pt (a deliberate, well-formed forgery)."""
    import hashlib

    info = json.loads((path / "model.json").read_text())
    info["weights_sha256"] = hashlib.sha256((path / "weights.pt").read_bytes()).hexdigest()
    (path / "model.json").write_text(json.dumps(info))


def test_saved_directory_holds_a_tensor_only_state_dict_and_a_description(saved):
    path, info = saved
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "weights.pt"]
    state = torch.load(path / "weights.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    on_disk = json.loads((path / "model.json").read_text())
    assert on_disk["genotype"] == "100,50|10|50,100"
    assert on_disk["input_shape"] == [16, 16] and on_disk["input_dim"] == 256
    assert on_disk["parameters"] == GENOTYPE.parameter_count(256)
    assert TrainSpec.from_dict(on_disk["spec"]) == SPEC
    losses = on_disk["losses"]
    assert len(losses["validation_curve"]) == 1 and losses["validation"]["loss"] == losses["validation_curve"][-1]
    assert set(losses["test"]) == {"loss", "recon", "kl"}
    assert losses["test"]["loss"] == pytest.approx(losses["test"]["recon"] + losses["test"]["kl"])
    assert on_disk["trainer_version"] == SPEC.trainer
    assert info["path"] == str(path)


def test_round_trip_gives_the_same_outputs(tmp_path):
    torch.manual_seed(3)
    model = VAE(GENOTYPE, 256)
    result = TrainResult(str(GENOTYPE), True, Measurement(loss=1.0, recon=0.5, kl=0.5, curve=(1.0,),
                                                          params=model.parameter_count(), test_loss=1.25))
    save_model(tmp_path / "m", model, GENOTYPE, SPEC, result)
    loaded, info = load_model(tmp_path / "m")
    assert not loaded.training and info["genotype"] == str(GENOTYPE)
    assert info["losses"]["validation"] == {"loss": 1.0, "recon": 0.5, "kl": 0.5}
    assert info["losses"]["validation_curve"] == [1.0] and info["losses"]["test"] == {"loss": 1.25}
    model.eval()
    x, z = torch.rand(5, 256), torch.randn(5, 10)
    with torch.no_grad():
        assert torch.equal(model.decode(z), loaded.decode(z))
        for a, b in zip(model.encode(x), loaded.encode(x), strict=True):
            assert torch.equal(a, b)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_save_refuses_a_model_of_another_genotype_or_shape(tmp_path):
    model = VAE(GENOTYPE, 256)
    result = TrainResult(str(GENOTYPE), True, Measurement(loss=1.0))
    with pytest.raises(ValueError, match="built from"):
        save_model(tmp_path / "a", model, parse_genotype("100|10|100"), SPEC, result)
    with pytest.raises(ValueError, match="pixels"):
        save_model(tmp_path / "b", model, GENOTYPE, SPEC, result, input_shape=(28, 28))


def test_load_refuses_missing_empty_and_corrupt_directories(tmp_path, saved):
    with pytest.raises(ModelDirError, match="no such model directory"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match=r"model\.json is missing"):
        load_model(tmp_path / "empty")
    bad_json = _copy(saved[0], tmp_path / "bad-json")
    (bad_json / "model.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="corrupt"):
        load_model(bad_json)
    no_weights = _copy(saved[0], tmp_path / "no-weights")
    (no_weights / "weights.pt").unlink()
    with pytest.raises(ModelDirError, match=r"weights\.pt is missing"):
        load_model(no_weights)


def test_load_refuses_a_foreign_description(tmp_path, saved):
    foreign = _copy(saved[0], tmp_path / "foreign")
    (foreign / "model.json").write_text(json.dumps({"format": "someone-else", "weights": "weights.pt"}))
    with pytest.raises(ModelDirError, match="not an evovae model description"):
        load_model(foreign)
    future = _copy(saved[0], tmp_path / "future")
    info = json.loads((future / "model.json").read_text())
    (future / "model.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ModelDirError, match="format version 99"):
        load_model(future)
    wrong_genotype = _copy(saved[0], tmp_path / "genotype")
    (wrong_genotype / "model.json").write_text(json.dumps({**info, "genotype": "100,50|20|50,100"}))
    with pytest.raises(ModelDirError, match=r"does not fit genotype 100,50\|20\|50,100.*wrong shapes"):
        load_model(wrong_genotype)


def test_load_refuses_tampered_weights(tmp_path, saved):
    tampered = _copy(saved[0], tmp_path / "tampered")
    raw = bytearray((tampered / "weights.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tampered / "weights.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelDirError, match=r"does not match model\.json"):
        load_model(tampered)


def test_load_refuses_weights_of_another_network_even_with_a_matching_checksum(tmp_path, saved):
    other = _copy(saved[0], tmp_path / "other")
    torch.save(VAE(parse_genotype("100|10|100"), 256).state_dict(), other / "weights.pt")
    _rehash(other)
    with pytest.raises(ModelDirError, match=r"does not fit genotype 100,50\|10\|50,100.*missing"):
        load_model(other)


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: call something on load
        return (print, ("this must never run",))


def test_load_never_unpickles_arbitrary_objects(tmp_path, saved, capsys):
    evil = _copy(saved[0], tmp_path / "evil")
    with open(evil / "weights.pt", "wb") as fh:
        pickle.dump({"encoder.0.weight": _Payload()}, fh, protocol=2)
    _rehash(evil)
    with pytest.raises(ModelDirError, match="cannot be read as a tensors-only state_dict"):
        load_model(evil)
    assert "this must never run" not in capsys.readouterr().out
    not_a_dict = _copy(saved[0], tmp_path / "list")
    torch.save([torch.zeros(1)], not_a_dict / "weights.pt")
    _rehash(not_a_dict)
    with pytest.raises(ModelDirError, match="does not hold a state_dict"):
        load_model(not_a_dict)


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_sample_writes_a_png_grid_of_the_expected_size(tmp_path, saved, capsys):
    out = tmp_path / "s.png"
    assert main_sample([str(saved[0]), "--out", str(out), "--n", "20", "--seed", "1"]) == 0
    assert _png_size(out) == grid_size(20, (16, 16), nrow=8) == (8 * 18 + 2, 3 * 18 + 2)
    assert str(out) in capsys.readouterr().out
    again = tmp_path / "again.png"
    main_sample([str(saved[0]), "--out", str(again), "--n", "20", "--seed", "1"])
    assert again.read_bytes() == out.read_bytes()  # same seed, same picture


def test_reconstruct_writes_originals_above_reconstructions(tmp_path, saved):
    out = tmp_path / "r.png"
    assert main_reconstruct([str(saved[0]), "--out", str(out), "--n", "12", "--nrow", "6"]) == 0
    assert _png_size(out) == (6 * 18 + 2, 4 * 18 + 2)  # 2 chunks of 6: originals row + reconstructions row each
    model, _ = load_model(saved[0])
    x = torch.rand(5, 256)
    rows = reconstruction_rows(model, x, nrow=4)
    assert rows.shape == (16, 256)
    assert torch.equal(rows[:4], x[:4]) and torch.equal(rows[8:9], x[4:5])
    assert torch.equal(rows[9:12], torch.zeros(3, 256))  # the short row is padded


def test_commands_refuse_a_bad_directory_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in (main_sample, main_reconstruct):
        assert command([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not an evovae model directory" in err[0]
    assert not (tmp_path / "x.png").exists()


def test_manifold_grid_walks_the_inverse_gaussian_cdf():
    model = VAE(parse_genotype("50|2|50"), 256)
    images = manifold_images(model, steps=4)
    assert images.shape == (16, 256) and bool(((images >= 0) & (images <= 1)).all())
    with pytest.raises(ValueError, match="2-D latent"):
        manifold_images(VAE(GENOTYPE, 256))


def test_export_retrains_each_genotype_into_rank_directories(tmp_path, capsys):
    out = tmp_path / "export"
    status = main_export(["--genotype", "100|10|100", "--genotype", "50|10|50,50", "--dataset", "synthetic",
                          "--epochs", "1", "--train-subset", "400", "--val-size", "200", "--out", str(out)])
    assert status == 0
    index = json.loads((out / "export.json").read_text())
    assert [m["genotype"] for m in index["models"]] == ["100|10|100", "50|10|50,50"]
    for n, genotype in ((1, "100|10|100"), (2, "50|10|50,50")):
        model, info = load_model(out / f"rank-{n}")
        assert str(model.genotype) == genotype and info["spec"]["epochs"] == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("rank-1  100|10|100") and "rank-2" in printed[1]
    assert main_export(["--genotype", "100|x|100", "--out", str(tmp_path / "bad")]) == 2
    assert "bad genotype" in capsys.readouterr().err


def test_export_best_is_a_thin_call_over_genotypes(tmp_path):
    infos = export_best(["100|10|100"], SPEC, tmp_path, epochs=2)
    assert infos[0]["losses"]["validation_curve"].__len__() == 2 and (tmp_path / "rank-1" / "weights.pt").is_file()
    with pytest.raises(ValueError, match="nothing to export"):
        export_best([], SPEC, tmp_path, epochs=1)


#: The entries evo.cli.DELEGATED gets for these commands (name -> ("module:function", help)).
ENTRY_POINTS = {
    "export": ("evo.cli.export:main_export", "retrain genotypes and save each as a model directory"),
    "sample": ("evo.cli.export:main_sample", "write a PNG grid of samples from a saved model"),
    "reconstruct": ("evo.cli.export:main_reconstruct", "write test images beside a saved model's reconstructions"),
    "experiment": ("evo.cli.experiment:main", "reproduce the paper's experiments into a report"),
}


def test_commands_run_through_evovae_as_delegated_subcommands(monkeypatch, saved, tmp_path):
    from evo.cli import app as cli

    for name, entry in ENTRY_POINTS.items():
        monkeypatch.setitem(cli.DELEGATED, name, entry)
    out = tmp_path / "via-cli.png"
    assert cli.main(["sample", str(saved[0]), "--out", str(out), "--n", "4"]) == 0
    assert _png_size(out) == grid_size(4, (16, 16), nrow=8)
    assert cli.main(["reconstruct", str(saved[0]), "--out", str(tmp_path / "r.png"), "--n", "2"]) == 0
    assert cli.main(["experiment", "--help"]) == 0  # a command's main returns its status, --help too
