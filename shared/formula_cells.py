"""Cells a spreadsheet would run as a formula (OWASP CSV injection), as the export neutralises them.

Such a cell gets a leading single quote in an export: a cell whose first non-whitespace character is
= + - @ or a full-width form of one (＝ ＋ － ＠), or which starts with a tab, CR or LF; plain numbers such
as -3.5, +7 or " -1e3" are left as they are.

Deciding that per cell costs the export a third of its time, so the upload marks each row once: a row
none of whose cells starts with one of FIRST_CHARACTERS (`responses.may_hold_formula` false) is exported
as stored, and only marked rows have their cells looked at. The mark is a cheap over-approximation (any
cell starting with one of these characters marks the row, a plain -3.5 too); the export's own test
decides.
"""

from __future__ import annotations

import re

FORMULA_CHARACTERS = "=+@\uff1d\uff0b\uff0d\uff20-"
LINE_BREAKS = "\t\r\n"
SPACES = " \f\v\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
# What a cell the export may change can start with (a superset of the cells it does change).
FIRST_CHARACTERS = FORMULA_CHARACTERS + LINE_BREAKS + SPACES

_NUMBER = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"
# The export's test, as a PostgreSQL regular expression on the whole cell.
FORMULA_START = (f"^(?:(?=[{LINE_BREAKS}])|(?=[{SPACES}]*[{FORMULA_CHARACTERS}])(?![{SPACES}]*{_NUMBER}))")

# In a text[] literal as the upload writes it every element is "quoted" or NULL, and a quote inside an
# element is escaped (\"), so `{"` or `,"` starts an element: the character after it is the cell's first.
# Searched for as a quote and one of the characters first (a search for a literal start runs three times as
# fast as one for `[{,]"`), the character before the quote checked after.
_QUOTE_THEN_FIRST = re.compile("\"[" + re.escape(FIRST_CHARACTERS) + "]")


def may_hold_formula(form_id: str, answers_literal: str) -> bool:
    """Whether the row (its form id, and its answers as a text[] literal of quoted elements) has a cell
    the export may have to neutralise. False guarantees it has none."""
    return form_id[:1] in FIRST_CHARACTERS or answers_may_hold_formula(answers_literal)


def answers_may_hold_formula(answers_literal: str) -> bool:
    """Whether an answer of the row (its answers as a text[] literal of quoted elements) may be a formula."""
    found = _QUOTE_THEN_FIRST.search(answers_literal)
    while found is not None:
        if answers_literal[found.start() - 1] in "{,":
            return True
        found = _QUOTE_THEN_FIRST.search(answers_literal, found.start() + 1)
    return False
