"""The evaluation figures say what a reader needs to weigh each mode's point: its token budget, sample count and
truncation rate, and the budget as a line where it falls within the data."""

from rl.evaluation import plots


def captured(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_accuracy_against_tokens_names_budgets_samples_and_truncation(monkeypatch, tmp_path):
    figures = captured(monkeypatch)
    points = [{"label": "step 1", "mode": "short", "tokens_mean": 40.0, "accuracy": 0.5, "samples": 16,
               "truncation_rate": 0.0625},
              {"label": "step 1", "mode": "long", "tokens_mean": 900.0, "accuracy": 0.75, "samples": 8,
               "truncation_rate": 0.25}]
    plots.accuracy_vs_tokens(points, tmp_path / "a.png", budgets={"short": 64, "long": 8192})
    [ax] = figures[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "short mode (budget 64, n=16, 6% truncated)", "long mode (budget 8192, n=8, 25% truncated)"]
    # short's budget (64) is within range and drawn; long's (8192, over 1.5x the largest mean) only named
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [64]


def test_length_histograms_count_what_reached_the_budget(monkeypatch, tmp_path):
    figures = captured(monkeypatch)
    plots.length_histograms({"short": [10, 20, 64, 64], "long": [100, 300]}, tmp_path / "h.png",
                            budgets={"short": 64, "long": 512})
    [ax] = figures[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "short mode (budget 64, n=4, 50% truncated)", "long mode (budget 512, n=2, 0% truncated)"]
    assert sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--") == [64]


def test_a_mode_label_without_facts_is_the_mode():
    assert plots.mode_label("auto") == "auto mode"
