"""The measured figures: README.md and docs/numbers.md show exactly what bench.numbers reads from the results files."""

from pathlib import Path

import pytest

from bench import numbers

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("document", ["README.md", "docs/numbers.md"])
def test_the_documents_show_the_results_files_figures(document):
    path = ROOT / document
    text = path.read_text()
    expected = numbers.replace_region(text, numbers.with_links_from(numbers.numbers_table(), path))
    assert text == expected, f"run: python -m bench.numbers --write README.md docs/numbers.md ({document} is stale)"


def test_every_figure_comes_from_a_file_in_the_checkout_and_links_to_it():
    for figure in numbers.FIGURES:
        assert (ROOT / figure.source).is_file(), figure.source
        assert figure.value(numbers.read_results(figure.source))
    docs_table = numbers.with_links_from(numbers.numbers_table(), ROOT / "docs" / "numbers.md")
    assert "](../bench/results/full_size.json)" in docs_table


def test_a_region_is_replaced_and_nothing_else():
    text = f"before\n{numbers.BEGIN}\nold\n{numbers.END}\nafter\n"
    assert numbers.replace_region(text, "new\n") == f"before\n{numbers.BEGIN}\nnew\n{numbers.END}\nafter\n"
    with pytest.raises(ValueError):
        numbers.replace_region("no region", "new\n")
