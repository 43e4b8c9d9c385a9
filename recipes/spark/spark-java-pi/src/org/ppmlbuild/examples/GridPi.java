package org.ppmlbuild.examples;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;

/**
 * Estimates pi with Spark: the centres of an n x n grid over the unit square are counted if
 * they lie inside the quarter circle, one grid row per RDD element. No random numbers, so the
 * count is exact and a test can check it.
 *
 * Usage: GridPi [n=2000] [slices=4]
 */
public final class GridPi {
    private GridPi() {
    }

    public static void main(String[] args) {
        final int n = args.length > 0 ? Integer.parseInt(args[0]) : 2000;
        final int slices = args.length > 1 ? Integer.parseInt(args[1]) : 4;

        SparkSession spark = SparkSession.builder().appName("spark-java-pi").getOrCreate();
        spark.sparkContext().setLogLevel("ERROR");
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());

        List<Integer> rows = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            rows.add(i);
        }
        long inside = jsc.parallelize(rows, slices).map(i -> {
            double x = (i + 0.5) / n;
            long count = 0;
            for (int j = 0; j < n; j++) {
                double y = (j + 0.5) / n;
                if (x * x + y * y <= 1.0) {
                    count++;
                }
            }
            return count;
        }).reduce(Long::sum);

        long total = (long) n * n;
        System.out.printf("RESULT inside=%d total=%d pi=%.6f%n", inside, total,
                          4.0 * inside / total);
        spark.stop();
    }
}
