"""PySpark SQL aggregation over generated data: revenue per region, printed as lines."""

from pyspark.sql import SparkSession, functions as F

spark = SparkSession.builder.appName("pyspark-sql-agg").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")

regions = ["north", "south", "east", "west"]
rows = [(i, regions[i % 4], (i % 7) + 1, 10 * ((i % 5) + 1)) for i in range(1, 1001)]
orders = spark.createDataFrame(rows, ["order_id", "region", "quantity", "unit_price"])
orders.createOrReplaceTempView("orders")

result = spark.sql(
    "SELECT region, COUNT(*) AS orders, SUM(quantity * unit_price) AS revenue "
    "FROM orders GROUP BY region ORDER BY region"
).collect()
for row in result:
    print(f"RESULT {row['region']} orders={row['orders']} revenue={row['revenue']}")
spark.stop()
