"""Run query.sql with Spark SQL, statement by statement: CSV → Parquet → aggregate → Parquet.

Prints how many rows each Parquet dataset holds when read back, then the final query's rows.
"""

import sys

from pyspark.sql import SparkSession

QUERY = sys.argv[1] if len(sys.argv) > 1 else "/app/query.sql"


def statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


spark = SparkSession.builder.appName("spark-sql-parquet").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
with open(QUERY, encoding="utf-8") as handle:
    *setup, final = statements(handle.read())
for statement in setup:
    spark.sql(statement)
for dataset in ("sales", "summary"):
    print(f"ROWS {dataset} {spark.table(dataset).count()}")
for row in spark.sql(final).collect():
    print("RESULT " + " ".join(f"{key}={value}" for key, value in row.asDict().items()))
spark.stop()
