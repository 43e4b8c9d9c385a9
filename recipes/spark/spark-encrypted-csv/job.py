"""Revenue per region and product over an encrypted CSV, written to an encrypted CSV.

Spark reads /data/in/orders.csv and Python writes /data/out/summary.csv: both paths are
Gramine encrypted mounts, so the files are plaintext only inside the enclave. The job prints
row counts only; the figures themselves leave the enclave encrypted.
"""

import csv
import sys

from pyspark.sql import SparkSession

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/data/in/orders.csv"
RESULT = sys.argv[2] if len(sys.argv) > 2 else "/data/out/summary.csv"

spark = SparkSession.builder.appName("spark-encrypted-csv").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
orders = spark.read.csv("file://" + SOURCE, header=True, inferSchema=True)
orders.createOrReplaceTempView("orders")
rows = spark.sql(
    "SELECT region, product, COUNT(*) AS orders, SUM(quantity) AS units, "
    "SUM(quantity * unit_price_cents) AS revenue_cents "
    "FROM orders GROUP BY region, product ORDER BY region, product"
).collect()
with open(RESULT, "w", newline="", encoding="utf-8") as handle:
    out = csv.writer(handle, lineterminator="\n")
    out.writerow(["region", "product", "orders", "units", "revenue_cents"])
    for row in rows:
        out.writerow(
            [row["region"], row["product"], row["orders"], row["units"], row["revenue_cents"]]
        )
print(f"ROWS orders {orders.count()}")
print(f"ROWS summary {len(rows)}")
spark.stop()
