"""The steering and editing report: its tables are built from measured figures, with n/a where undefined."""


from toylab.cli import main
from toylab.methods.editing import EditConfig
from toylab.validate.interventions import editing_report, steering_report


def test_steering_report_table():
    text = steering_report(models=("factual-recall",), sources=("diff-in-means", "truth"), seeds=(0,),
                           n_fit=256, n=128)
    assert "### `factual-recall`: relation := r1 (method seeds on model seed 0;" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    truth = float(rows["truth"].split(" | ")[1].split(" ± ")[0])
    means = float(rows["diff-in-means"].split(" | ")[1].split(" ± ")[0])
    assert truth >= 0.95 and means < truth


def test_editing_report_table_says_n_a_for_generalisation_with_one_form():
    text = editing_report(models={"factual-recall": ((0,),)}, methods=("rome",), seeds=(0,), n_edits=2,
                          config=EditConfig(v_steps=50))
    row = next(line for line in text.splitlines() if line.startswith("| rome | 0 | one at a time"))
    assert row.split(" | ")[4] == "n/a"  # generalisation: one prompt form
    assert "all at once" in text and "Localisation" not in text


def test_report_cli_bad_input(capsys):
    assert main(["report", "--print", "--out", "x.md"]) == 2
    assert "give one of them" in capsys.readouterr().err
