-- depends: 0004_answer_layouts
-- Whether a row has a cell the export may have to neutralise as a formula (shared/formula_cells.py). The
-- upload works it out once per row; the export then looks at the cells of marked rows only, instead of at
-- every cell of every row (a third of an export's time, docs/performance.md). Rows stored before this
-- column existed count as marked, so their cells are looked at as before.
ALTER TABLE responses ADD COLUMN may_hold_formula boolean NOT NULL DEFAULT true;
