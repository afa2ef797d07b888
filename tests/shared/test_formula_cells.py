"""The upload's mark of rows that may hold a formula cell: never missing one the export would change."""

from __future__ import annotations

import pytest

from services.upload.copy_lines import answers_array
from shared.formula_cells import FIRST_CHARACTERS, may_hold_formula


@pytest.mark.parametrize("character", list(FIRST_CHARACTERS))
@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_cell_starting_with_any_such_character_marks_the_row(character, position):
    values = ["plain", 'with "quote"', "x"]
    values[position] = character + "1"
    assert may_hold_formula("form", answers_array(values))


@pytest.mark.parametrize("character", list(FIRST_CHARACTERS))
def test_a_form_id_starting_with_one_marks_the_row(character):
    assert may_hold_formula(character + "form", answers_array(["a"]))


@pytest.mark.parametrize("values", [
    ["a", "", "b"], [], ["", ""], ["1-2", "a=b", "x+y"], ['said "=1"', "c,=d", 'e,"=f'], ["back\\slash", "-"[1:]],
    ["ünïcode", "नमस्ते", "你好"],
])
def test_rows_whose_cells_only_hold_such_characters_inside_are_not_marked(values):
    assert not may_hold_formula("form", answers_array(values))
