package org.ppmlbuild.examples;

import java.util.Map;
import java.util.TreeMap;

import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.CloseableIterator;
import org.apache.flink.util.Collector;

/**
 * Flink streaming WordCount in a local mini-cluster (the environment a plain `java` launch
 * gets): lines -> words -> keyed running counts. The stream emits every updated count; the last
 * update per word is its total, printed as "RESULT word count", sorted by word. The first
 * argument, if any, is the parallelism (a cluster spreads the tasks over its TaskManagers).
 */
public final class StreamingWordCount {
    static final String[] LINES = {
        "To be, or not to be, that is the question:",
        "Whether 'tis nobler in the mind to suffer",
        "The slings and arrows of outrageous fortune,",
        "Or to take arms against a sea of troubles",
        "And by opposing end them.",
    };

    private StreamingWordCount() {
    }

    public static void main(String[] args) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
        env.setParallelism(args.length > 0 ? Integer.parseInt(args[0]) : 1);

        DataStream<Tuple2<String, Integer>> counts = env.fromData(LINES)
            .flatMap((String line, Collector<Tuple2<String, Integer>> out) -> {
                for (String word : line.toLowerCase().split("[^a-z']+")) {
                    if (!word.isEmpty()) {
                        out.collect(Tuple2.of(word, 1));
                    }
                }
            })
            .returns(Types.TUPLE(Types.STRING, Types.INT))
            .keyBy(pair -> pair.f0)
            .sum(1);

        Map<String, Integer> totals = new TreeMap<>();
        long updates = 0;
        try (CloseableIterator<Tuple2<String, Integer>> results =
                 counts.executeAndCollect("flink-java-wordcount")) {
            while (results.hasNext()) {
                Tuple2<String, Integer> update = results.next();
                totals.put(update.f0, update.f1);
                updates++;
            }
        }
        System.out.println("UPDATES " + updates);
        for (Map.Entry<String, Integer> entry : totals.entrySet()) {
            System.out.println("RESULT " + entry.getKey() + " " + entry.getValue());
        }
    }
}
