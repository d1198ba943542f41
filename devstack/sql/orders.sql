-- demo.orders: a generated table of :orders_rows rows whose values exercise every encoding
-- rule an export must get right: integers, numerics, dates, timestamps, booleans, NULLs, empty
-- strings, and text with commas, double and single quotes, backslashes, tabs, newlines and
-- non-ASCII characters. Deterministic: row g always has the same values.

CREATE SCHEMA IF NOT EXISTS demo;
DROP TABLE IF EXISTS demo.orders;
CREATE TABLE demo.orders AS
SELECT
    g::bigint AS order_id,
    (ARRAY[
        'Acme, Inc.',
        'O''Brien & Sons',
        'Café "Zürich"',
        E'Line one\nLine two',
        'Ünïcødé 日本語 🌸',
        'plain customer',
        E'tab\tseparated',
        'back\slash'
    ])[1 + g % 8] || ' #' || g AS customer,
    round((g % 100000) * 1.37 / 7, 2)::numeric(12, 2) AS amount,
    (g % 50)::int AS quantity,
    (date '2024-01-01' + (g % 730)::int) AS order_date,
    timestamp '2024-01-01 00:00:00' + g * interval '37 seconds' AS created_at,
    (g % 3 = 0) AS shipped,
    CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN '' ELSE 'note ' || g END AS notes,
    CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 10)::smallint END AS priority
FROM generate_series(1, :orders_rows) AS g;
ANALYZE demo.orders;
