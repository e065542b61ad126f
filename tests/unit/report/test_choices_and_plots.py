"""The report's choices and its study plots without training: `--denoising` (skip, train, reuse) and
what the page says of it, the denoising numbers as a table, legends and margins on the page's charts,
and importances only with enough complete trials, computed as optuna-dashboard computes them."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.report.denoising import choose_denoising, denoising_section, skipped_section
from aeopt.report.page import Section, render_html
from aeopt.report.source import ShownModel
from aeopt.report.study import search_section
from aeopt.search.plots import MIN_IMPORTANCE_TRIALS, STUDY_PLOTS, importance_evaluator
from aeopt.training.models import build_model

CONV = {"kind": "conv_ae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "dropout": 0.0}


def _shown(**model) -> ShownModel:
    cfg = RunConfig.model_validate({"model": {**CONV, **model}, "data": {"dataset": "digits"}})
    torch.manual_seed(0)
    return ShownModel(build_model(cfg).eval(), cfg, f"{cfg.model.kind} here", "s")


# ----- --denoising ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value,study,device,mode,default", [
    (None, None, "cpu", "skip", True),  # the cheap choice on a CPU
    (None, None, "cuda", "train", True),
    (None, "den", "cpu", "reuse", True),  # a named study is reused, whatever the device
    (None, "den", "cuda", "reuse", True),
    ("train", None, "cpu", "train", False),
    ("skip", None, "cuda", "skip", False),
    ("study:den", None, "cpu", "reuse", False),
    ("study:den", "den", "cpu", "reuse", False),
])
def test_denoising_choice(value, study, device, mode, default):
    choice = choose_denoising(value, study, device)
    assert (choice.mode, choice.default) == (mode, default)
    assert choice.study == ("den" if mode == "reuse" else None)


@pytest.mark.parametrize("value,study,says", [
    ("maybe", None, "use skip, train, or study:NAME"),
    ("study:", None, "needs a study name"),
    ("study:a", "b", "name different studies"),
    ("train", "b", "disagree"),
])
def test_a_bad_denoising_choice_is_one_line(value, study, says):
    with pytest.raises(AeoptError) as err:
        choose_denoising(value, study, "cpu")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_page_says_which_choice_and_how_to_get_the_others():
    skipped = skipped_section(choose_denoising(None, None, "cpu"), "cpu").intro
    assert skipped.startswith("Skipped (the default on a CPU")
    assert "--denoising train trains" in skipped and "--denoising study:NAME" in skipped
    asked = skipped_section(choose_denoising("skip", None, "cuda"), "cuda").intro
    assert asked.startswith("Skipped (--denoising skip)") and "--denoising train" in asked
    trained = choose_denoising(None, None, "cuda").note("cuda")
    assert trained.startswith("Chosen by the default on CUDA.") and "--denoising skip leaves" in trained
    reused = choose_denoising("study:den", None, "cpu").note("cpu")
    assert reused.startswith("Chosen by --denoising study:den.") and "--denoising train" in reused
    # A VAE with nothing to take an architecture from says so, and names the option that adds one.
    assert "--denoising study:NAME" in skipped_section(choose_denoising("train", None, "cpu")).intro


def test_denoising_numbers_are_a_table_of_noise_by_model(tmp_path: Path):
    plain, den = _shown(), _shown(kind="denoising_ae", noise_std=0.3)
    x = torch.rand(12, 1, 28, 28)
    section, numbers = denoising_section(plain, den, x, tmp_path, "Chosen by --denoising train.")
    (grid,) = section.grids
    assert grid.header == ["noise std", "conv AE MSE", "denoising AE MSE"]
    assert [r[0] for r in grid.rows] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5"]
    assert [float(r[1]) for r in grid.rows] == pytest.approx(numbers["mse_plain"], abs=5e-5)
    assert [float(r[2]) for r in grid.rows] == pytest.approx(numbers["mse_denoising"], abs=5e-5)
    assert section.intro.endswith("Chosen by --denoising train.")
    page = render_html("t", "s", [section], tmp_path)
    table = page.split('<table class="grid">', 1)[1].split("</table>", 1)[0]
    assert "<th>noise std</th><th>conv AE MSE</th><th>denoising AE MSE</th>" in table
    assert table.count("<tr>") == 7  # the header and one row per noise level
    assert "conv AE MSE" not in "".join(v for _, v in section.table)  # not one string cell any more


# ----- the study's plots -----------------------------------------------------------------------------


def _study(n_complete: int, n_pruned: int = 0) -> optuna.Study:
    """A real study of a made-up objective (no training): x matters, y hardly does."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["CV loss (MSE)"])
    for i in range(n_complete + n_pruned):
        trial = study.ask()
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        for step in range(3):
            trial.report((x - 0.3) ** 2 + 0.01 * y + 0.1 / (step + 1), step)
        if i < n_pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, (x - 0.3) ** 2 + 0.01 * y)
    return study


def _spec():
    from aeopt.config import StudySpec

    return StudySpec.model_validate({"name": "s", "model": CONV, "data": {"dataset": "digits"},
                                     "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})


def test_importances_need_enough_complete_trials_and_the_page_says_how_many(tmp_path: Path):
    # Pruned trials do not count: importances are computed over complete trials only.
    study = _study(4, n_pruned=30)
    section = search_section(study, _spec(), tmp_path)
    item = next(i for i in section.items if i.key == "param_importances")
    assert item.png is None and item.plotly is None
    assert f"at least {MIN_IMPORTANCE_TRIALS} complete trials" in item.missing
    assert item.missing.endswith("this study has 4") and "PED-ANOVA" in item.missing
    page = render_html("t", "s", [section], tmp_path)
    assert "this study has 4" in page


def test_importances_with_enough_trials_are_the_dashboards(tmp_path: Path):
    study = _study(MIN_IMPORTANCE_TRIALS + 5)
    section = search_section(study, _spec(), tmp_path)
    item = next(i for i in section.items if i.key == "param_importances")
    assert not item.missing and item.png is not None and item.png.stat().st_size > 1000
    # optuna-dashboard: get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=value).
    dashboard = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lambda t: t.values[0])
    (bar,) = item.plotly.data
    drawn = dict(zip(bar.y, bar.x, strict=True))
    assert set(drawn) == {"x", "y"} and drawn["x"] > drawn["y"]
    for name, value in dashboard.items():
        assert drawn[name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert isinstance(importance_evaluator(), optuna.importance.PedAnovaImportanceEvaluator)


def test_every_multi_trace_chart_has_a_legend_and_named_axes(tmp_path: Path):
    study = _study(5, n_pruned=2)
    plots = {p.key: p for p in STUDY_PLOTS}
    fig = plots["intermediate_values"].plotly(study)
    assert len(fig.data) == 7 and fig.layout.showlegend is True
    assert {t.name for t in fig.data} == {f"trial {n}" for n in range(7)}
    assert fig.layout.yaxis.title.text == "CV loss (MSE) per epoch" and fig.layout.xaxis.title.text == "epoch"
    history = plots["optimization_history"].plotly(study)
    assert history.layout.showlegend is not False and len({t.name for t in history.data if t.name}) >= 2
    assert history.layout.yaxis.title.text == "CV loss (MSE)"
    # The page lets axis titles push the margins out (the denoising chart's y title was cut off).
    section = Section("s", items=search_section(study, _spec(), tmp_path).items)
    page = render_html("t", "s", [section], tmp_path)
    assert page.count('"automargin":true') >= 4


def test_a_png_with_many_trials_labels_line_ends_instead_of_a_legend(tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    plots = {p.key: p for p in STUDY_PLOTS}
    few, many = _study(5), _study(25)
    import optuna.visualization.matplotlib as vis_mpl

    ax = plots["intermediate_values"].draw(vis_mpl, few)
    assert ax.get_legend() is not None and ax.get_ylabel() == "CV loss (MSE) per epoch"
    ax = plots["intermediate_values"].draw(vis_mpl, many)
    assert ax.get_legend() is None
    labels = sorted(int(t.get_text()) for t in ax.texts)
    assert labels == list(range(25))
    png = plots["intermediate_values"].png(many, tmp_path / "iv.png")
    assert png.stat().st_size > 1000
