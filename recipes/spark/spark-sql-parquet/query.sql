-- Spark SQL over Parquet in a mounted directory (/data/out; see recipe.yaml's files section).
-- The input CSV is a trusted file in the image; everything under /data/out is written and
-- read back at run time.
CREATE TEMPORARY VIEW sales_csv
  (order_id INT, region STRING, product STRING, quantity INT, unit_price_cents INT)
  USING csv OPTIONS (path '/app/data/sales.csv', header 'true');

INSERT OVERWRITE DIRECTORY '/data/out/sales.parquet' USING parquet
  SELECT * FROM sales_csv;

CREATE TEMPORARY VIEW sales USING parquet OPTIONS (path '/data/out/sales.parquet');

INSERT OVERWRITE DIRECTORY '/data/out/summary.parquet' USING parquet
  SELECT region, product, COUNT(*) AS orders, SUM(quantity) AS units,
         SUM(quantity * unit_price_cents) AS revenue_cents
  FROM sales GROUP BY region, product;

CREATE TEMPORARY VIEW summary USING parquet OPTIONS (path '/data/out/summary.parquet');

SELECT region, product, orders, units, revenue_cents FROM summary ORDER BY region, product;
