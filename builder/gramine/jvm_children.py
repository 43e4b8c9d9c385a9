"""Find the app's own Python code that needs the JVM to start Python worker processes.

A PySpark or PyFlink job runs Python-first in the enclave (launch.py), and its JVM refuses to
start programs (``NoChildProcesses``): on Gramine 1.9 a running JVM must not fork, and under
SGX every child would be a new enclave. Spark and Flink run the job's own Python functions in
worker processes the JVM starts (Spark: PythonWorkerFactory.scala's ``startDaemon``; Flink:
its Python function runners), so such a job builds fine and then fails at run time. This
module reads the job's source with ``ast`` and names the lines, so the user hears it at
``plan``/``build`` time instead.

It is a heuristic over source text, tuned to stay quiet on ordinary SQL/DataFrame/Table code:

- UDF makers and pandas/Arrow functions are named APIs: flagged wherever they are called.
- ``map``/``filter``/``foreach``/... exist on DataFrames and Tables too, so they count only
  when a Python function is passed: a lambda, a builtin, a function or class defined in the
  app's files, or (not for ``filter``, where ``df.filter(df.flag)`` is a Column) an imported
  name or ``module.function`` such as ``json.loads``. A receiver that is an imported module
  (``functools.reduce``, ``F.filter(col, lambda ...)``) or a pandas column (``pdf["a"].map``)
  is not an RDD. Other objects with a ``map`` method (``executor.map(work, items)``) can still
  be taken for one: the warning names the line, so the user can tell.
- ``createDataFrame`` counts when its data is local Python data (pyspark/sql/session.py
  ``_create_dataframe``: ``parallelize`` plus a Python ``map``); a call that makes a Spark or
  Arrow source (``spark.range``, ``spark.read...``) does not. A pandas DataFrame (e.g.
  ``spark.range(3).toPandas()``) counts only while Arrow is off: without
  ``spark.sql.execution.arrow.pyspark.enabled`` pyspark/sql/pandas/conversion.py turns it
  into rows and takes the same path; with it the JVM reads Arrow batches itself. The option
  counts when app.command's ``--conf``, app.env's PYSPARK_SUBMIT_ARGS or the app's code
  (``.config(KEY, "true")``, ``conf.set(KEY, True)``) sets it; the image's spark-defaults.conf
  is not read.

Pure: source texts in, findings and one warning line out. pipeline/stages.py reads the files.

Longer than most: one walk over the app's Python syntax tree, with the rule for each API that
would make the JVM start a child, kept together so the rules cannot drift apart.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ..plan.launch import LaunchPlan
from ..recipe import Recipe

ARROW_KEY = "spark.sql.execution.arrow.pyspark.enabled"
FINDINGS_NAMED = 3  # the warning names this many lines, then says how many more

# Calling these makes a Python UDF (pyspark/sql/udf.py, pyspark/sql/udtf.py,
# pyflink/table/udf.py); PyFlink's create_temporary_*function accept only Python functions
# (Java ones go through create_java_temporary_function).
_SPARK_UDF_MAKERS = frozenset({"udf", "pandas_udf", "udtf", "UserDefinedFunction"})
_FLINK_UDF_MAKERS = frozenset(
    {
        "udf",
        "udtf",
        "udaf",
        "udtaf",
        "create_temporary_function",
        "create_temporary_system_function",
        "register_function",
    }
)
# DataFrame/GroupedData methods that always run Python workers (pyspark/sql/pandas/*.py).
_SPARK_PYTHON_METHODS = frozenset(
    {
        "mapInPandas",
        "mapInArrow",
        "applyInPandas",
        "applyInArrow",
        "applyInPandasWithState",
        "transformWithStateInPandas",
        "cogroup",
    }
)
# Methods that run the function passed at this argument position in a Python worker. RDD's
# fold/aggregate take the zero value first; F.aggregate's 2nd argument is a Column.
_SPARK_FUNCTION_METHODS = {
    **dict.fromkeys(
        (
            "map",
            "flatMap",
            "filter",
            "mapPartitions",
            "mapPartitionsWithIndex",
            "mapValues",
            "flatMapValues",
            "foreach",
            "foreachPartition",
            "reduce",
            "treeReduce",
            "reduceByKey",
            "keyBy",
            "sortBy",
            "combineByKey",
        ),
        0,
    ),
    **dict.fromkeys(("fold", "aggregate", "treeAggregate", "foldByKey", "aggregateByKey"), 1),
}
# (Not groupBy/partitionBy: on DataFrames and writers they take column names and Columns.)
_FLINK_FUNCTION_METHODS = dict.fromkeys(
    ("map", "flat_map", "filter", "key_by", "process", "reduce"), 0
)
# The keyword names PySpark's RDD and PyFlink's DataStream give those function parameters.
_FUNCTION_KEYWORDS = (
    "f",
    "func",
    "op",
    "seqOp",
    "seqFunc",
    "keyfunc",
    "createCombiner",
    "key_selector",
)
# Calls that make an RDD on the Python side (pyspark/context.py): createDataFrame of one, or
# any action on it, maps Python functions over it.
_RDD_SOURCES = frozenset(
    {"parallelize", "textFile", "wholeTextFiles", "binaryFiles", "pickleFile", "emptyRDD"}
)
# Builtins that make local Python data when called, or are Python functions when passed.
_ITERABLE_BUILTINS = frozenset(
    {
        "list",
        "tuple",
        "set",
        "zip",
        "map",
        "filter",
        "range",
        "enumerate",
        "sorted",
        "reversed",
        "iter",
    }
)
_BUILTIN_FUNCTIONS = frozenset(
    name for name in dir(builtins) if callable(getattr(builtins, name)) and not name.startswith("_")
)
# Flink SQL's own way to a Python UDF:
# CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] name AS 'module.f' LANGUAGE PYTHON.
_PYTHON_SQL_FUNCTION = re.compile(
    r"\bCREATE\s+(?:TEMPORARY\s+)?(?:SYSTEM\s+)?FUNCTION\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"[\w.`]+\s+AS\s+(?:'[^']*'|\"[^\"]*\")\s+LANGUAGE\s+PYTHON\b",
    re.IGNORECASE,
)
_NAME_DEPTH = 2  # how many ``name = value`` steps createDataFrame's data is followed through


@dataclass(frozen=True)
class Finding:
    file: str  # as the recipe names it: the app.files src, or a .py under an app.files directory
    line: int
    api: str  # what on that line needs a Python worker, e.g. "udf", "map(lambda ...)"


def scans_app_python(recipe: Recipe, launch: LaunchPlan) -> bool:
    """Whether the app's Python runs beside a JVM that refuses to start Python workers."""
    return recipe.kind in ("spark", "flink") and launch.python_first


def jvm_children_warning(
    recipe: Recipe, launch: LaunchPlan, sources: Mapping[str, str | bytes]
) -> str | None:
    """The one warning line for ``recipe`` (without ``warning:``), or None if nothing needs
    a JVM-started Python worker. ``sources``: label -> source text of the app's .py files."""
    if not scans_app_python(recipe, launch):
        return None
    submit_args = list(launch.spark_launcher_args)
    submit_args += shlex.split(recipe.app.env.get("PYSPARK_SUBMIT_ARGS", ""))
    findings = find_jvm_children(recipe.kind, sources, arrow_enabled=_arrow_in_options(submit_args))
    return format_warning(recipe.kind, findings) if findings else None


def find_jvm_children(
    kind: str, sources: Mapping[str, str | bytes], *, arrow_enabled: bool = False
) -> list[Finding]:
    """Every line of ``sources`` (label -> text, in order) whose code needs a JVM-started
    Python worker under ``kind`` ("spark" or "flink"), one finding per line. Files that do not
    parse are skipped. ``arrow_enabled``: the job's command line turns Arrow on (its code is
    read for that here)."""
    if kind not in ("spark", "flink"):
        return []
    trees = _parse_all(sources)
    arrow_enabled = arrow_enabled or _arrow_in_code(trees.values())
    facts = _AppFacts(trees.values())
    findings: list[Finding] = []
    for label, tree in trees.items():
        findings += _FileScan(kind, label, tree, facts, arrow_enabled).findings()
    return findings


def format_warning(kind: str, findings: list[Finding]) -> str:
    """One line: the first few places, and what to do instead."""
    named = ", ".join(f"{f.file}:{f.line} ({f.api})" for f in findings[:FINDINGS_NAMED])
    more = len(findings) - FINDINGS_NAMED
    if more > 0:
        named += f" and {more} more"
    if kind == "flink":
        instead = (
            "Use Table API expressions and Flink SQL (from_elements, SQL, connectors) "
            "instead of Python UDFs and DataStream functions"
        )
    else:
        instead = (
            "Build the data in the JVM (spark.range, SQL, spark.read) and use "
            "SQL/DataFrame expressions instead of Python UDFs"
        )
    return (
        f"app.files {named}: this job needs the JVM to start Python worker processes, "
        "which Gramine 1.9 cannot run in an enclave (a running JVM must not fork); "
        f"run-direct will fail at those lines. {instead}"
    )


# --- parsing ------------------------------------------------------------------------------------


def _parse_all(sources: Mapping[str, str | bytes]) -> dict[str, ast.Module]:
    trees = {}
    for label, text in sources.items():
        try:
            with warnings.catch_warnings():
                # Invalid escapes and the like are the job's business, not plan output.
                warnings.simplefilter("ignore")
                trees[label] = ast.parse(text, filename=label)
        except (SyntaxError, ValueError, RecursionError):
            continue  # the job's own syntax errors are reported when it runs
    return trees


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and str(node.value).lower() == "true"


def _arrow_in_options(spark_submit_args: list[str]) -> bool:
    """``--conf spark.sql.execution.arrow.pyspark.enabled=true`` among spark-submit's options."""
    values = [
        value
        for option, value in zip(spark_submit_args, spark_submit_args[1:])
        if option in ("--conf", "-c")
    ]
    values += [arg.split("=", 1)[1] for arg in spark_submit_args if arg.startswith("--conf=")]
    return any(
        value.partition("=")[0].strip() == ARROW_KEY
        and value.partition("=")[2].strip().lower() == "true"
        for value in values
    )


def _arrow_in_code(trees) -> bool:
    """``.config(ARROW_KEY, "true")`` / ``spark.conf.set(ARROW_KEY, True)`` in the app."""
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                key, value = node.args[0], node.args[1]
                if isinstance(key, ast.Constant) and key.value == ARROW_KEY and _is_true(value):
                    return True
    return False


# --- what the app's files define ---------------------------------------------------------------


class _AppFacts:
    """Names the app's own files define: a function or class of the app passed to ``map`` is
    Python code, whichever of its files defines it."""

    def __init__(self, trees) -> None:
        self.functions: set[str] = set()
        self.classes: set[str] = set()
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions.add(node.name)
                elif isinstance(node, ast.ClassDef):
                    self.classes.add(node.name)
                elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                    self.functions.update(t.id for t in node.targets if isinstance(t, ast.Name))


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``F`` -> pyspark.sql.functions)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}"
    return names


def _assignments(tree: ast.Module) -> dict[str, list[ast.expr]]:
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                values.setdefault(target.id, []).append(node.value)
    return values


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _where(node: ast.expr) -> tuple[int, int]:
    """Line and column of a call's name: for ``a\\n .mapInPandas(f)`` the second line."""
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.end_lineno or func.lineno, func.end_col_offset or func.col_offset
    return node.lineno, node.col_offset


class _FileScan:
    def __init__(
        self, kind: str, label: str, tree: ast.Module, facts: _AppFacts, arrow_enabled: bool
    ) -> None:
        self.kind, self.label, self.tree, self.facts = kind, label, tree, facts
        self.arrow_enabled = arrow_enabled
        self.imports = _imports(tree)
        self.assigned = _assignments(tree)
        self.udf_makers = _SPARK_UDF_MAKERS if kind == "spark" else _FLINK_UDF_MAKERS
        self.function_methods = (
            _SPARK_FUNCTION_METHODS if kind == "spark" else _FLINK_FUNCTION_METHODS
        )
        self._found: dict[int, tuple[int, str]] = {}  # line -> (column, api): one per line

    def findings(self) -> list[Finding]:
        decorator_calls: set[int] = set()
        # A string that is a statement of its own (a docstring) is never run as SQL.
        docstrings = {
            id(node.value)
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._decorators(node, decorator_calls)
            elif isinstance(node, ast.Call) and id(node) not in decorator_calls:
                self._call(node)
            elif isinstance(node, ast.Attribute) and self.kind == "spark":
                self._rdd_attribute(node)
            elif (
                isinstance(node, ast.Constant)
                and self.kind == "flink"
                and id(node) not in docstrings
                and isinstance(node.value, str)
                and _PYTHON_SQL_FUNCTION.search(node.value)
            ):
                self._add(node, "CREATE FUNCTION ... LANGUAGE PYTHON")
        return [Finding(self.label, line, api) for line, (_, api) in sorted(self._found.items())]

    def _add(self, node: ast.expr, api: str) -> None:
        line, column = _where(node)
        if line not in self._found or column < self._found[line][0]:
            self._found[line] = (column, api)

    def _decorators(self, node, decorator_calls: set[int]) -> None:
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = _called_name(target)
            if name in self.udf_makers:
                self._add(decorator, f"@{name}")
                decorator_calls.add(id(decorator))

    def _call(self, node: ast.Call) -> None:
        func = node.func
        name = _called_name(func)
        if name is None:
            return
        if name in self.udf_makers:
            self._add(node, name)
        elif (
            self.kind == "spark"
            and name == "register"
            and isinstance(func, ast.Attribute)
            and _called_name(func.value) in ("udf", "udtf")
        ):
            self._add(node, ast.unparse(func))  # spark.udf.register
        elif self.kind == "spark" and name in _SPARK_PYTHON_METHODS:
            self._add(node, name)
        elif self.kind == "spark" and name == "parallelize":
            self._add(node, "parallelize")
        elif (
            self.kind == "spark"
            and name == "range"
            and isinstance(func, ast.Attribute)
            and _is_spark_context(func.value)
        ):
            # SparkContext.range is parallelize plus a Python map; spark.range is the JVM's.
            self._add(node, "SparkContext.range")
        elif self.kind == "spark" and name == "createDataFrame":
            data = _argument(node, 0, "data")
            described = self._local_data(data, _NAME_DEPTH) if data is not None else None
            if described:
                self._add(node, f"createDataFrame from {described}")
        if isinstance(func, ast.Attribute) and name in self.function_methods:
            self._function_method(node, name)

    def _rdd_attribute(self, node: ast.Attribute) -> None:
        """``df.rdd``: any action on it runs Python (RDD.count is a mapPartitions)."""
        if (
            node.attr == "rdd"
            and isinstance(node.ctx, ast.Load)
            and not self._is_imported(node.value)
        ):
            self._add(node, "DataFrame.rdd")

    def _function_method(self, node: ast.Call, name: str) -> None:
        func = node.func
        assert isinstance(func, ast.Attribute)
        if self._is_imported(func.value) or _is_pandas_column(func.value):
            return
        argument = _argument(node, self.function_methods[name], *_FUNCTION_KEYWORDS)
        shown = self._python_function(argument, allow_attribute=name != "filter")
        if shown:
            self._add(node, f"{name}({shown})")

    def _python_function(self, node: ast.expr | None, *, allow_attribute: bool) -> str | None:
        """How ``node`` reads if it is a Python function (or function object), else None."""
        if isinstance(node, ast.Lambda):
            return "lambda ..."
        if isinstance(node, ast.Name):
            values = self.assigned.get(node.id, [])
            if values:  # a variable of this file: a function only if it holds one
                holds_one = any(
                    isinstance(value, ast.Lambda) or self._app_instance(value) for value in values
                )
                return node.id if holds_one else None
            if node.id in self.facts.functions or node.id in _BUILTIN_FUNCTIONS:
                return node.id
            if allow_attribute and node.id in self.imports:
                return node.id  # from operator import add; rdd.reduce(add)
        if self._app_instance(node):
            return f"{node.func.id}()"  # a PyFlink MapFunction, KeySelector... of the app
        if allow_attribute and isinstance(node, ast.Attribute) and self._names_a_function(node):
            return ast.unparse(node)
        return None

    def _names_a_function(self, node: ast.Attribute) -> bool:
        """``json.loads`` (of an import), ``self.parse`` (a function of the app), ``str.split``."""
        if not isinstance(node.value, ast.Name):
            return False
        owner = node.value.id
        return (
            owner in self.imports
            or node.attr in self.facts.functions
            or (owner in _BUILTIN_FUNCTIONS and owner not in self.assigned)
        )

    def _app_instance(self, node: ast.expr | None) -> bool:
        """``Double()``: an object of a class the app defines (its methods are Python)."""
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.facts.classes
        )

    def _is_imported(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in self.imports

    def _local_data(self, node: ast.expr, depth: int) -> str | None:
        """What createDataFrame's data is, if it makes the JVM start Python workers."""
        if isinstance(node, (ast.List, ast.ListComp)):
            return "a Python list"
        if isinstance(node, ast.Tuple):
            return "a Python tuple"
        if isinstance(node, (ast.Set, ast.SetComp, ast.Dict, ast.DictComp)):
            return "Python data"
        if isinstance(node, ast.GeneratorExp):
            return "a generator"
        if isinstance(node, ast.Attribute) and node.attr == "rdd":
            return "an RDD"
        if isinstance(node, ast.Call):
            return self._data_from_call(node)
        if isinstance(node, ast.Name):
            values = self.assigned.get(node.id)
            if not values:
                return "local Python data"  # a parameter, a loop variable: rows, most likely
            if depth <= 0:
                return None
            for value in values:
                described = self._local_data(value, depth - 1)
                if described:
                    return described
        return None

    def _data_from_call(self, node: ast.Call) -> str | None:
        func = node.func
        name = _called_name(func)
        if isinstance(func, ast.Name) and name in _ITERABLE_BUILTINS:
            return "Python data"
        if isinstance(func, ast.Name) and name in self.facts.functions:
            return f"Python data ({name}())"
        if isinstance(func, ast.Attribute) and name in _RDD_SOURCES:
            return "an RDD"
        if self._makes_pandas(func) and not self.arrow_enabled:
            return "pandas without Arrow"
        return None  # spark.range, spark.read..., spark.table: the JVM's own data

    def _makes_pandas(self, func: ast.expr) -> bool:
        if isinstance(func, ast.Attribute) and func.attr == "toPandas":
            return True
        origin = ""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            origin = self.imports.get(func.value.id, "")
        elif isinstance(func, ast.Name):
            origin = self.imports.get(func.id, "")
        # pandas.DataFrame(...), pd.read_csv(...), np.array(...) (made a pandas DataFrame).
        return origin.split(".")[0] in ("pandas", "numpy")


def _argument(node: ast.Call, position: int, *keywords: str) -> ast.expr | None:
    for item in node.keywords:
        if item.arg in keywords:
            return item.value
    if 0 <= position < len(node.args) and not isinstance(node.args[position], ast.Starred):
        return node.args[position]
    return None


def _is_spark_context(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "sc" or node.id.endswith("_sc") or "context" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return node.attr in ("sparkContext", "_sc", "sc")
    if isinstance(node, ast.Call):  # SparkContext(...), SparkContext.getOrCreate()
        func = node.func
        return _called_name(func) == "SparkContext" or (
            isinstance(func, ast.Attribute)
            and func.attr == "getOrCreate"
            and _called_name(func.value) == "SparkContext"
        )
    return False


def _is_pandas_column(node: ast.expr) -> bool:
    """``pdf["a"]``: a pandas Series (its .map takes lambdas), never an RDD."""
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    )
