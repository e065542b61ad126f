"""Shipped presets: a bare name finds the packaged run config or study spec from any folder, a path wins,
and a miss says where aeopt looked and what ships."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeopt.config import RunConfig, load_run_config, load_study_spec
from aeopt.config.presets import (
    KINDS,
    PRESETS_DIR,
    RUN_CONFIG,
    STUDY_SPEC,
    describe,
    is_bare_name,
    list_presets,
    preset_names,
    resolve,
)
from aeopt.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_every_top_level_yaml_ships_under_its_name():
    for kind in KINDS:
        top = sorted(p.name for p in (REPO / kind.folder).glob("*.yaml"))
        assert top, f"no YAML in {kind.folder}/"
        assert sorted(f"{n}.yaml" for n in preset_names(kind)) == top
        # The packaged folder is the top-level folder (a link in the checkout), not a stale copy.
        assert (PRESETS_DIR / kind.folder).resolve() == (REPO / kind.folder).resolve()


def test_a_bare_name_resolves_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("conv_ae", RUN_CONFIG).read_text() == (REPO / "configs" / "conv_ae.yaml").read_text()
    assert resolve("conv_ae", STUDY_SPEC).read_text() == (REPO / "studies" / "conv_ae.yaml").read_text()
    assert load_run_config("vae").model.kind == "vae"
    spec = load_study_spec("seed_grid", ["data.dataset=digits"])
    assert spec.sampler.name == "grid" and spec.data.dataset == "digits"


def test_a_file_wins_over_the_preset_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = RunConfig().model_dump(mode="json")
    mine["model"] = {"kind": "vae", "latent_dim": 7}
    Path("conv_ae").write_text(yaml.safe_dump(mine))  # a file named like a preset, no suffix
    assert resolve("conv_ae", RUN_CONFIG) == Path("conv_ae")
    assert load_run_config("conv_ae").model.latent_dim == 7


def test_a_classifier_spec_finds_its_autoencoder_beside_it_and_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # studies/classifier.yaml names ../configs/conv_ae.yaml, relative to itself: found from anywhere.
    spec = load_study_spec("classifier")
    assert spec.model.kind == "conv_ae"
    spec = load_study_spec("classifier", ["autoencoder=vae"])  # a shipped run config by name
    assert spec.model.kind == "vae"


@pytest.mark.parametrize("arg,bare", [("conv_ae", True), ("conv_ae.yaml", False), ("configs/conv_ae", False),
                                      ("./conv_ae", False), ("..", False)])
def test_what_counts_as_a_bare_name(arg, bare):
    assert is_bare_name(arg) is bare


def test_a_missing_name_says_where_aeopt_looked_and_what_ships(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_run_config("conv_aee")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert str(tmp_path / "conv_aee") in message  # the file it looked for here
    assert str((PRESETS_DIR / "configs").resolve()) in message  # and the shipped folder
    assert "did you mean 'conv_ae'?" in message
    assert "aae, aae_critic, conv_ae, denoising_ae, vae" in message


def test_a_missing_path_names_the_shipped_file_of_that_name_not_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_study_spec("studies/conv_ae.yaml")
    message = str(err.value)
    assert f"looked for {tmp_path}/studies/conv_ae.yaml" in message
    assert message.endswith("`aeopt study create conv_ae`")
    assert "for example studies/conv_ae.yaml" not in message  # the old hint: the very path that failed


def test_a_missing_unrelated_name_lists_the_shipped_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_study_spec("xyz")
    assert "did you mean" not in str(err.value)
    assert "shipped study specs: " + ", ".join(preset_names(STUDY_SPEC)) in str(err.value)


def test_descriptions_are_one_line_from_the_file(tmp_path):
    by_name = {(p.kind.folder, p.name): p for p in list_presets()}
    assert by_name["studies", "conv_ae"].description == yaml.safe_load(
        (REPO / "studies" / "conv_ae.yaml").read_text())["description"]
    assert by_name["configs", "vae"].description == "The report's variational autoencoder"
    assert all(p.description and "\n" not in p.description for p in by_name.values())
    assert all(p.path.is_file() for p in by_name.values())
    f = tmp_path / "x.yaml"
    f.write_text("# A thing (Smith et al., 2020) at 1e-3. More words.\n#   aeopt x\nmodel: {}\n")
    assert describe(f) == "A thing (Smith et al., 2020) at 1e-3"
    f.write_text("model: {}\n")
    assert describe(f) == ""


@pytest.mark.parametrize("kind,loader", [(RUN_CONFIG, load_run_config), (STUDY_SPEC, load_study_spec)])
def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch, kind, loader):
    # `aeopt train conv_ae` next to a folder conv_ae (runs of it, say) said "conv_ae: a folder, not a file".
    monkeypatch.chdir(tmp_path)
    Path("conv_ae").mkdir()
    assert resolve("conv_ae", kind) == (kind.where / "conv_ae.yaml").resolve()
    assert loader("conv_ae").model.kind == "conv_ae"
    # A path to the folder, or a folder with no preset of its name, is still read as what it is.
    Path("mine").mkdir()
    for arg in ("./conv_ae", "mine"):
        with pytest.raises(ConfigError, match="a folder, not a file"):
            loader(arg)


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_a_path_to_a_missing_file_is_not_the_preset_of_its_name(tmp_path, monkeypatch, capfd, command):
    # pathlib reads "./conv_ae" as "conv_ae": `aeopt finetune ./conv_ae` quietly ran the shipped preset.
    from aeopt.cli import main  # noqa: PLC0415 (the CLI, only for this test)

    monkeypatch.chdir(tmp_path)
    assert main([command, "./conv_ae"]) == 2
    err = capfd.readouterr().err
    assert err == (f"error: ./conv_ae: no such file (looked for {tmp_path}/conv_ae); the shipped run config "
                   "of that name runs with `aeopt train conv_ae`\n"), err
    assert list(tmp_path.iterdir()) == []


def test_a_description_is_not_cut_inside_parentheses_or_after_an_abbreviation(tmp_path):
    # `aeopt configs` showed "... plus an image critic (alpha-GAN, Rosca et al": cut at "al. 2017".
    by_name = {(p.kind.folder, p.name): p for p in list_presets()}
    assert by_name["configs", "aae_critic"].description == (
        "The adversarial autoencoder of configs/aae.yaml plus an image critic (alpha-GAN, Rosca et al. 2017)")
    f = tmp_path / "x.yaml"
    for text, first in [("Runs as Smith et al. 2020 did. More.", "Runs as Smith et al. 2020 did"),
                        ("A net (see sec. 2; e.g. the VAE): more", "A net (see sec. 2; e.g. the VAE)"),
                        ("Lr 1e-3; more", "Lr 1e-3"), ("No stop at all", "No stop at all")]:
        f.write_text(f"# {text}\nmodel: {{}}\n")
        assert describe(f) == first, text


def test_a_classifier_spec_takes_every_run_section_of_its_autoencoder(tmp_path, monkeypatch):
    # An export with a contrastive term: the workers must pretrain that encoder, not one without it.
    monkeypatch.chdir(tmp_path)
    exported = yaml.safe_load((REPO / "configs" / "conv_ae.yaml").read_text())
    exported["contrastive"] = {"weight": 1.0, "crop": 0.3}
    Path("best_c.yaml").write_text(yaml.safe_dump(exported))
    spec = load_study_spec("classifier", ["autoencoder=best_c.yaml"])
    assert spec.contrastive.weight == 1.0 and spec.contrastive.crop == 0.3


def test_a_classifier_specs_checkpoint_is_checked_and_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "checkpoint.pt").write_bytes(b"weights")
    spec = load_study_spec("classifier", ["checkpoint=runs/checkpoint.pt"])
    assert spec.checkpoint == str(tmp_path / "runs" / "checkpoint.pt")  # workers elsewhere find it
    with pytest.raises(ConfigError) as err:
        load_study_spec("classifier", ["checkpoint=nope.pt"])
    assert "checkpoint = 'nope.pt': no such file" in str(err.value) and "\n" not in str(err.value)
