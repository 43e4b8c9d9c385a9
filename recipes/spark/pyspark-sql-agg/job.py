"""PySpark SQL aggregation over generated data: revenue per region, printed as lines.

The 1000 orders are generated in the JVM (spark.range and SQL expressions), not from a Python
list: createDataFrame(<list>) would make the JVM start Python worker processes, which a JVM in
an enclave must not do (see the recipe's README).
"""

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("pyspark-sql-agg").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")

orders = spark.range(1, 1001).selectExpr(
    "id AS order_id",
    "element_at(array('north', 'south', 'east', 'west'), CAST(id % 4 AS INT) + 1) AS region",
    "(id % 7) + 1 AS quantity",
    "10 * ((id % 5) + 1) AS unit_price",
)
orders.createOrReplaceTempView("orders")

result = spark.sql(
    "SELECT region, COUNT(*) AS orders, SUM(quantity * unit_price) AS revenue "
    "FROM orders GROUP BY region ORDER BY region"
).collect()
for row in result:
    print(f"RESULT {row['region']} orders={row['orders']} revenue={row['revenue']}")
spark.stop()
