"""The warning for a PySpark/PyFlink job whose own Python needs JVM-started worker processes.

In the enclave the JVM refuses to start programs (launch.py's NoChildProcesses), so Python
UDFs, RDD functions, pandas functions and createDataFrame(<Python data>) fail at run time;
``plan``, ``manifest`` and ``build`` say so, once, before the build runs anything.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ppml_build.cli import main
from ppml_build.gramine.jvm_children import Finding, find_jvm_children, format_warning
from ppml_build.pipeline import stages as pipeline

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
MARK = "needs the JVM to start Python worker processes"


def pyspark_recipe(
    tmp_path: Path,
    job: str,
    *,
    extra_files: dict[str, str] | None = None,
    recipe_from: str = "spark/pyspark-sql-agg",
) -> Path:
    """A copy of a bundled Python recipe in tmp_path whose job.py is ``job``."""
    directory = tmp_path / "recipe"
    directory.mkdir()
    shutil.copy(RECIPES / recipe_from / "recipe.yaml", directory / "recipe.yaml")
    (directory / "job.py").write_text(textwrap.dedent(job))
    for name, text in (extra_files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    return directory / "recipe.yaml"


def warning_lines(capsys, argv: list[str], code: int = 0) -> list[str]:
    assert main(argv) == code
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if MARK in line]


def line_of(text: str, needle: str) -> int:
    return next(
        number
        for number, line in enumerate(textwrap.dedent(text).splitlines(), 1)
        if needle in line
    )


# --- the bundled recipes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "spark/pyspark-sql-agg",
        "spark/spark-sql-parquet",
        "flink/pyflink-table",
        "spark/spark-java-pi",
        "flink/flink-java-wordcount",
    ],
)
def test_bundled_recipes_give_no_warning(name, capsys):
    assert warning_lines(capsys, ["plan", str(RECIPES / name / "recipe.yaml")]) == []


# --- PySpark code that needs a worker, through `ppml-build plan` -------------------------------

NEEDS_WORKER = {
    "createDataFrame from a list": (
        """\
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        df = spark.createDataFrame([(1, "a"), (2, "b")], ["id", "v"])
        df.show()
        """,
        "createDataFrame(",
        "createDataFrame from a Python list",
    ),
    "@udf": (
        """\
        from pyspark.sql import SparkSession
        from pyspark.sql.functions import udf
        spark = SparkSession.builder.getOrCreate()

        @udf("long")
        def plus_one(x):
            return x + 1

        spark.range(3).select(plus_one("id")).show()
        """,
        "@udf",
        "@udf",
    ),
    "rdd.map(lambda)": (
        """\
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        rdd = spark.range(3).rdd
        print(rdd.map(lambda row: row.id * 2).collect())
        """,
        ".rdd",
        "DataFrame.rdd",
    ),
    "mapInPandas": (
        """\
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()

        def double(batches):
            for pdf in batches:
                yield pdf * 2

        (spark.range(3)
            .mapInPandas(double, "id long")
            .show())
        """,
        ".mapInPandas",
        "mapInPandas",
    ),
}


@pytest.mark.parametrize("job, needle, api", NEEDS_WORKER.values(), ids=NEEDS_WORKER.keys())
def test_pyspark_job_needing_a_worker_warns_once_with_its_line(tmp_path, capsys, job, needle, api):
    path = pyspark_recipe(tmp_path, job)
    lines = warning_lines(capsys, ["plan", str(path)])
    assert len(lines) == 1
    assert lines[0].startswith("warning: app.files ")
    assert f"job.py:{line_of(job, needle)} ({api})" in lines[0]
    assert "Gramine 1.9" in lines[0] and "spark.range" in lines[0]


def test_rdd_map_with_a_lambda_is_found_on_its_own():
    job = "def run(rdd):\n    return rdd.map(lambda x: x + 1).collect()\n"
    assert find_jvm_children("spark", {"job.py": job}) == [Finding("job.py", 2, "map(lambda ...)")]


@pytest.mark.parametrize(
    "code, api",
    [
        ("spark.udf.register('plus', lambda x: x + 1)", "spark.udf.register"),
        ("F.pandas_udf(lambda s: s, 'long')", "pandas_udf"),
        ("UserDefinedFunction(len)", "UserDefinedFunction"),
        ("spark.sparkContext.parallelize([1, 2])", "parallelize"),
        ("sc.range(10)", "SparkContext.range"),
        ("df.mapInArrow(double, 'id long')", "mapInArrow"),
        ("df.groupBy('k').cogroup(other.groupBy('k'))", "cogroup"),
        ("df.foreach(lambda row: print(row))", "foreach(lambda ...)"),
        ("df.foreachPartition(double)", "foreachPartition(double)"),
        ("pairs.reduceByKey(add)", "reduceByKey(add)"),
        ("lines.flatMap(str.split)", "flatMap(str.split)"),
        ("nums.fold(0, lambda a, b: a + b)", "fold(lambda ...)"),
        ("spark.createDataFrame(((i,) for i in range(3)))", "createDataFrame from a generator"),
        ("spark.createDataFrame(rows)", "createDataFrame from local Python data"),
        ("spark.createDataFrame(list(zip(a, b)))", "createDataFrame from Python data"),
        (
            "spark.createDataFrame(pd.DataFrame({'a': [1]}))",
            "createDataFrame from pandas without Arrow",
        ),
        ("spark.createDataFrame(data=sc.textFile('/x'))", "createDataFrame from an RDD"),
    ],
)
def test_each_pyspark_api_that_needs_a_worker(code, api):
    job = (
        "from operator import add\nimport pandas as pd\n"
        "def double(it):\n    return it\n" + code + "\n"
    )
    assert find_jvm_children("spark", {"job.py": job}) == [Finding("job.py", 5, api)]


def test_more_findings_are_counted_not_listed(tmp_path, capsys):
    job = """\
        from pyspark.sql import SparkSession, functions as F
        spark = SparkSession.builder.getOrCreate()
        sc = spark.sparkContext
        a = spark.createDataFrame([(1,)])
        b = F.udf(lambda x: x)
        c = sc.parallelize(range(10))
        d = c.reduce(lambda x, y: x + y)
        e = spark.range(3).groupBy("id").applyInPandas(lambda pdf: pdf, "id long")
        """
    lines = warning_lines(capsys, ["plan", str(pyspark_recipe(tmp_path, job))])
    assert len(lines) == 1
    assert (
        "job.py:4 (createDataFrame from a Python list), job.py:5 (udf), "
        "job.py:6 (parallelize) and 2 more: " in lines[0]
    )


def test_plan_json_has_the_warning_once(tmp_path, capsys):
    path = pyspark_recipe(tmp_path, NEEDS_WORKER["@udf"][0])
    assert main(["plan", str(path), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert [w for w in warnings if MARK in w] == [
        next(w for w in warnings if w.startswith("app.files job.py:5 (@udf): "))
    ]


def test_build_says_the_warning_once_before_anything_else_fails(tmp_path, capsys):
    path = pyspark_recipe(tmp_path, NEEDS_WORKER["@udf"][0])
    # No key: the build stops at the key, before Docker; the plan's warnings came first
    # (as the build's progress lines on stderr, "ppml-build: " first when not a terminal).
    lines = warning_lines(capsys, ["build", str(path), "--key", str(tmp_path / "none.pem")], code=2)
    assert len(lines) == 1
    assert lines[0].startswith("ppml-build: warning: app.files job.py:5 (@udf)")


def test_pyflink_udf_warns_with_flink_advice(tmp_path, capsys):
    job = """\
        from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
        from pyflink.table.udf import udf
        env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
        plus = udf(lambda i: i + 1, result_type=DataTypes.BIGINT())
        env.create_temporary_function("plus", plus)
        """
    path = pyspark_recipe(tmp_path, job, recipe_from="flink/pyflink-table")
    lines = warning_lines(capsys, ["plan", str(path)])
    assert len(lines) == 1
    assert "job.py:4 (udf), job.py:5 (create_temporary_function):" in lines[0]
    assert "Flink SQL" in lines[0]


def test_pyflink_datastream_functions_are_found():
    job = textwrap.dedent("""\
        from pyflink.datastream import MapFunction, StreamExecutionEnvironment

        class Double(MapFunction):
            def map(self, value):
                return value * 2

        env = StreamExecutionEnvironment.get_execution_environment()
        ds = env.from_collection([1, 2, 3])
        ds.map(Double()).print()
        ds.key_by(lambda x: x % 2).reduce(lambda a, b: a + b)
        """)
    assert [(f.line, f.api) for f in find_jvm_children("flink", {"job.py": job})] == [
        (9, "map(Double())"),
        (10, "key_by(lambda ...)"),
    ]


# --- what is not scanned ----------------------------------------------------------------------

JAVA_RECIPES = {
    "spark with a jar": """\
        kind: spark
        runtime: {java_home: /usr/lib/jvm/java-17-openjdk-amd64}
        app:
          files: [{src: job.py, dest: /app/job.py}, {src: app.jar, dest: /app/app.jar}]
          command: [/opt/spark/bin/spark-submit, --class, Main, /app/app.jar]
        """,
    "flink with java": """\
        kind: flink
        app:
          files: [{src: job.py, dest: /app/job.py}, {src: app.jar, dest: /app/app.jar}]
          command: [/usr/lib/jvm/java-17-openjdk-amd64/bin/java, -Xmx1g, -cp, /app/app.jar,
                    Main]
        """,
}


@pytest.mark.parametrize("body", JAVA_RECIPES.values(), ids=JAVA_RECIPES.keys())
def test_java_recipes_never_scan(tmp_path, capsys, monkeypatch, body):
    (tmp_path / "job.py").write_text("from pyspark.sql.functions import udf\nudf(len)\n")
    (tmp_path / "app.jar").write_bytes(b"PK")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        'apiVersion: ppml-build/v1\nname: demo\nbase: {image: "r/x:1"}\n' + textwrap.dedent(body)
    )

    def must_not_read(*args):
        raise AssertionError("a Java recipe's files were read for the scan")

    monkeypatch.setattr(pipeline, "read_app_python", must_not_read)
    assert warning_lines(capsys, ["plan", str(path)]) == []


# --- what must not warn -----------------------------------------------------------------------

NO_WORKER = {
    "string and Column filters": """\
        from pyspark.sql import SparkSession, functions as F
        spark = SparkSession.builder.getOrCreate()
        df = spark.read.parquet("/data/in")
        df.filter("x > 1").filter(F.col("x") > 1).filter(df.active).where(df.x < 3)
        df.select(F.col("a"), F.expr("a + 1")).groupBy(df.region).agg(F.sum("a"))
        spark.range(10).filter("id > 2").collect()
        df.write.partitionBy("region").parquet("/data/out")
        """,
    "SQL and the JVM's own data": """\
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        spark.sql("SELECT 1 AS x").collect()
        spark.createDataFrame(spark.range(3))
        spark.createDataFrame(spark.read.json("/data/in.json"))
        for row in spark.table("t").toLocalIterator():
            print(row)
        """,
    # Decision: a pandas DataFrame needs no worker only with Arrow on (see jvm_children.py).
    "toPandas with Arrow on": """\
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder
                 .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
        pdf = spark.range(3).toPandas()
        spark.createDataFrame(spark.range(3).toPandas())
        spark.createDataFrame(pdf)
        """,
    "lambdas that Spark turns into SQL, and plain Python": """\
        import functools
        from pyspark.sql import SparkSession, functions as F
        spark = SparkSession.builder.getOrCreate()
        df = spark.range(3).select(F.array("id").alias("a"))
        df.select(F.filter("a", lambda x: x > 1), F.aggregate("a", F.lit(0), lambda s, x: s + x))
        total = functools.reduce(lambda a, b: a + b, [1, 2, 3])
        pdf = df.toPandas()
        pdf["a"].map(lambda v: len(v))
        words = list(map(str.upper, ["a", "b"]))
        """,
}


@pytest.mark.parametrize("job", NO_WORKER.values(), ids=NO_WORKER.keys())
def test_dataframe_and_sql_code_gives_no_warning(tmp_path, capsys, job):
    assert warning_lines(capsys, ["plan", str(pyspark_recipe(tmp_path, job))]) == []


def test_pyflink_table_expressions_give_no_warning(tmp_path, capsys):
    job = """\
        \"\"\"No CREATE FUNCTION here: a LANGUAGE PYTHON one would need workers.\"\"\"
        from pyflink.table import EnvironmentSettings, TableEnvironment
        from pyflink.table.expressions import col, lit
        t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
        t = t_env.from_elements([(1, "a")], ["a", "b"])
        t.select(col("a")).filter(col("a") > 1).where(col("b") == lit("a")).execute().print()
        t_env.execute_sql("CREATE FUNCTION j AS 'com.example.J' LANGUAGE JAVA")
        """
    path = pyspark_recipe(tmp_path, job, recipe_from="flink/pyflink-table")
    assert warning_lines(capsys, ["plan", str(path)]) == []


def test_pandas_without_arrow_warns():
    job = "df = spark.createDataFrame(spark.range(3).toPandas())\n"
    assert find_jvm_children("spark", {"job.py": job}) == [
        Finding("job.py", 1, "createDataFrame from pandas without Arrow")
    ]
    assert find_jvm_children("spark", {"job.py": job}, arrow_enabled=True) == []


def test_arrow_on_the_command_line_counts(tmp_path, capsys):
    path = pyspark_recipe(tmp_path, "spark.createDataFrame(spark.range(3).toPandas())\n")
    text = path.read_text().replace(
        "--conf, spark.ui.enabled=false,",
        "--conf, spark.ui.enabled=false, --conf, spark.sql.execution.arrow.pyspark.enabled=true,",
    )
    path.write_text(text)
    assert warning_lines(capsys, ["plan", str(path)]) == []


# --- reading the files ------------------------------------------------------------------------


def test_a_file_that_does_not_parse_is_skipped(tmp_path, capsys):
    path = pyspark_recipe(tmp_path, "def broken(:\n    udf(len)\n")
    assert warning_lines(capsys, ["plan", str(path)]) == []
    assert find_jvm_children("spark", {"bad.py": "udf(", "good.py": "udf(len)\n"}) == [
        Finding("good.py", 1, "udf")
    ]


def test_python_under_an_app_files_directory_is_scanned(tmp_path, capsys):
    path = pyspark_recipe(
        tmp_path,
        "import lib.rows\n",
        extra_files={
            "lib/__init__.py": "",
            "lib/rows.py": "def load(spark):\n    return spark.createDataFrame([(1,)])\n",
            "lib/notes.txt": "udf(len)\n",
        },
    )
    text = path.read_text().replace(
        "    - src: job.py\n      dest: /app/job.py\n",
        "    - src: job.py\n      dest: /app/job.py\n    - src: lib/\n      dest: /app/lib/\n",
    )
    path.write_text(text)
    lines = warning_lines(capsys, ["plan", str(path)])
    assert (
        len(lines) == 1
        and "app.files lib/rows.py:2 (createDataFrame from a Python list):" in lines[0]
    )


def test_a_link_out_of_the_recipe_directory_is_not_read(tmp_path, capsys):
    outside = tmp_path / "outside.py"
    outside.write_text("udf(len)\n")
    path = pyspark_recipe(tmp_path, "print(1)\n", extra_files={"lib/__init__.py": ""})
    (path.parent / "lib" / "linked.py").symlink_to(outside)
    path.write_text(
        path.read_text().replace(
            "    - src: job.py\n", "    - src: lib/\n      dest: /app/lib/\n    - src: job.py\n"
        )
    )
    # `plan` refuses such a link outright (host_sources); the scan on its own skips it too.
    assert warning_lines(capsys, ["plan", str(path)], code=2) == []
    from ppml_build.recipe import load_recipe

    assert "lib/linked.py" not in pipeline.read_app_python(load_recipe(path), path.parent)


def test_files_over_a_mebibyte_are_not_read(tmp_path, capsys):
    big = "udf(len)\n" + "#" * (1 << 20) + "\n"
    assert warning_lines(capsys, ["plan", str(pyspark_recipe(tmp_path, big))]) == []


def test_the_warning_is_one_line():
    findings = [Finding("job.py", line, "udf") for line in range(1, 6)]
    text = format_warning("spark", findings)
    assert "\n" not in text
    assert text.startswith("app.files job.py:1 (udf), job.py:2 (udf), job.py:3 (udf) and 2 more: ")
