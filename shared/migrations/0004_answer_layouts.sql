-- depends: 0003_task_metrics
-- Answers as text[] in the order of the uploaded file's question columns (its "layout"), instead of jsonb.
-- An export projects a column with one array subscript (its position in the row's layout) instead of a
-- jsonb key look-up per cell, and rows no longer repeat their question names: COPY in and out both get
-- cheaper (docs/performance.md). An empty answer is NULL, as a missing jsonb key was.

CREATE TABLE answer_layouts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    questions       text[] NOT NULL
);
-- Layouts are looked up by organization (a header is a layout once per organization, give or take races).
CREATE INDEX answer_layouts_org ON answer_layouts (organization_id);

-- Existing rows: one layout per organization and set of answered questions, in key order.
INSERT INTO answer_layouts (organization_id, questions)
SELECT DISTINCT organization_id, ARRAY(SELECT k FROM jsonb_object_keys(answers) AS k ORDER BY k)
FROM responses;

ALTER TABLE responses ADD COLUMN layout_id bigint, ADD COLUMN answer_values text[];

UPDATE responses r
SET layout_id = l.id,
    answer_values = ARRAY(SELECT r.answers ->> q FROM unnest(l.questions) WITH ORDINALITY AS u(q, i) ORDER BY i)
FROM answer_layouts l
WHERE l.organization_id = r.organization_id
  AND l.questions = ARRAY(SELECT k FROM jsonb_object_keys(r.answers) AS k ORDER BY k);

ALTER TABLE responses DROP COLUMN answers;
ALTER TABLE responses RENAME COLUMN answer_values TO answers;
-- No foreign key to answer_layouts: its per-row check would slow every upload's COPY, and a layout is
-- only deleted together with its organization (and so its responses).
ALTER TABLE responses ALTER COLUMN answers SET NOT NULL, ALTER COLUMN layout_id SET NOT NULL;

-- The answers as a {question: answer} object, for people and tests reading the table by hand.
CREATE VIEW response_answers AS
SELECT r.organization_id, r.response_id, r.form_id, r.submitted_at, r.upload_task_id,
       (SELECT coalesce(jsonb_object_agg(u.q, u.a), '{}')
        FROM unnest(l.questions, r.answers) AS u(q, a) WHERE u.a IS NOT NULL) AS answers
FROM responses r JOIN answer_layouts l ON l.id = r.layout_id;

-- A revoked or failed upload's rows are found by upload_task_id. An upload writes its rows together, so a
-- BRIN index (a few bytes per 16 blocks) finds them nearly as well as the btree did, at a fraction of its
-- cost on every COPY (6% of an upload's COPY time, docs/performance.md).
DROP INDEX responses_upload_task;
CREATE INDEX responses_upload_task ON responses USING brin (upload_task_id) WITH (pages_per_range = 16);
