"""PyFlink Table API word count over an in-memory table, printed as lines."""

from pyflink.table import EnvironmentSettings, TableEnvironment
from pyflink.table.expressions import col, lit

env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
env.get_config().set("parallelism.default", "1")

words = "to be or not to be that is the question".split()
table = env.from_elements([(w,) for w in words], ["word"])
counts = table.group_by(col("word")).select(col("word"), lit(1).count.alias("n"))
with counts.execute().collect() as results:
    for word, n in sorted((row[0], row[1]) for row in results):
        print(f"RESULT {word} {n}")
