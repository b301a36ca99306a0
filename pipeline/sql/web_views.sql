-- Web views from a Google Analytics 360 sessions export: one row per PAGE hit that has a successor in its visit.
--   clientId    the visitor (fullVisitorId)
--   contentId   the hit-level custom dimension @custom_dimension_index (TF1 used 10: the article id)
--   timeOnPage  the next PAGE hit's time minus this hit's, within the visit (GA hits.time: ms since visit start)
-- The last PAGE hit of a visit, and hits without the custom dimension, are dropped (TF1's DAG query, in standard SQL).
--
-- BigQuery standard SQL. Query parameters: @custom_dimension_index INT64, @start_date and @end_date STRING
-- (YYYYMMDD, inclusive, compared with the export's `date` column). BigQuery cannot take a table name as a
-- parameter, so ${project}, ${dataset} and ${table} are substituted first (pipeline.query.render); ${table} may be
-- a wildcard such as ga_sessions_* on BigQuery.
SELECT clientId, contentId, timeOnPage
FROM (
  SELECT
    s.fullVisitorId AS clientId,
    (SELECT MAX(cd.value) FROM UNNEST(h.customDimensions) AS cd WHERE cd.index = @custom_dimension_index) AS contentId,
    LEAD(h.time) OVER (PARTITION BY s.fullVisitorId, s.visitNumber ORDER BY h.time, h.hitNumber) - h.time
      AS timeOnPage
  FROM `${project}.${dataset}.${table}` AS s, UNNEST(s.hits) AS h
  WHERE s.date BETWEEN @start_date AND @end_date AND h.type = 'PAGE'
)
WHERE clientId IS NOT NULL AND contentId IS NOT NULL AND timeOnPage IS NOT NULL
