import re

import pytest

from cdinn.retrieval import DEFAULT_RECIPE, RecipeError, parse_recipe


def names(text):
    return [s.name for s in parse_recipe(text)]


def test_rightmost_runs_first_and_powers_expand():
    assert names("ER**2 * HIO**3") == ["HIO"] * 3 + ["ER"] * 2
    assert names("(SUP * ER)**2 * DM") == ["DM", "ER", "SUP", "ER", "SUP"]
    assert names("er*raar") == ["RAAR", "ER"]


def test_parameters_and_defaults():
    steps = parse_recipe("HIO(beta=0.7) * SUP(sigma=1.5, threshold=0.25) * HIO")
    assert steps[0].params == {"beta": 0.9}
    assert steps[1].params == {"sigma": 1.5, "threshold": 0.25}
    assert steps[2].params == {"beta": 0.7}


def test_break_skips_the_rest_of_its_group_in_every_repetition():
    steps = parse_recipe("AVG * (ER**2 * SUP * BREAK(below=1.5))**3 * HIO")
    assert [s.name for s in steps] == ["HIO"] + ["BREAK", "SUP", "ER", "ER"] * 3 + ["AVG"]
    # taken in repetition k, a BREAK skips its 3 followers and the 4 steps of each later repetition
    assert [s.skip for s in steps if s.name == "BREAK"] == [11, 7, 3]
    assert all(s.skip == 0 for s in steps if s.name != "BREAK")
    assert steps[1].params == {"below": 1.5} and str(steps[1]) == "BREAK(below=1.5)"
    # an inner group's BREAK leaves the inner group only
    nested = parse_recipe("((ER * BREAK)**2 * HIO)**2")
    assert [(s.name, s.skip) for s in nested[:5]] == [("HIO", 0), ("BREAK", 3), ("ER", 0), ("BREAK", 1), ("ER", 0)]


def test_default_recipe_is_600_iterations_with_20_averaged():
    steps = parse_recipe(DEFAULT_RECIPE)
    iterating = [s for s in steps if s.name != "SUP"]
    assert len(iterating) == 600
    assert [s.name for s in iterating[-20:]] == ["AVG"] * 20
    assert any(s.name == "SUP" for s in steps) and any(s.name == "HIO" for s in steps)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("ER**", "expected 'num'"),
        ("FOO**3", "unknown operator 'FOO'"),
        ("HIO(gamma=1)", "no parameter 'gamma'"),
        ("(ER*HIO", "expected ')'"),
        ("ER**0", "positive integer"),
        ("ER**2.5", "positive integer"),
        ("SUP", "no iterating operator"),
        ("ER HIO", "unexpected 'HIO'"),
        ("ER**10000000", "more than"),
        ("BREAK * ER", "must sit inside one"),
        ("(BREAK * ER) * HIO", "must sit inside one"),
        ("(ER * BREAK(below=0))**2", "must lie between"),
    ],
)
def test_errors_are_clear(text, fragment):
    with pytest.raises(RecipeError, match=re.escape(fragment)):
        parse_recipe(text)


def test_error_names_the_column():
    with pytest.raises(RecipeError, match="column 6"):
        parse_recipe("ER * BAD")
