package pulse.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Unpacks the events a batched decode returns for one batch into {@code (Row(user_id, pickled
 * event), event time)}, the shape the event-time and keyBy steps read (flink_jobs/decode.py).
 * Bytes: {@code count:i32}, then per event {@code user length:i32, user UTF-8, event length:i32,
 * pickled event, event time:i64}.
 */
public final class UnpackEvents implements FlatMapFunction<byte[], Tuple2<Row, Long>> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(byte[] packed, Collector<Tuple2<Row, Long>> out) {
        ByteBuffer in = ByteBuffer.wrap(packed);
        int count = in.getInt();
        for (int i = 0; i < count; i++) {
            byte[] user = new byte[in.getInt()];
            in.get(user);
            byte[] event = new byte[in.getInt()];
            in.get(event);
            long eventTime = in.getLong();
            out.collect(Tuple2.of(Row.of(new String(user, StandardCharsets.UTF_8), event), eventTime));
        }
    }
}
