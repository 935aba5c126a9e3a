package pulse.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Unpacks the messages a batched Python stage returns for one batch into the
 * {@code Row(key, message, kind, raw)} rows of flink_jobs/routing.py (one Python return value per
 * batch instead of one per message). Bytes: {@code count:i32}, then per message
 * {@code key, pickled message, kind, raw}, each as {@code length:i32 + bytes} (strings UTF-8).
 */
public final class UnpackMessages implements FlatMapFunction<byte[], Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(byte[] packed, Collector<Row> out) {
        ByteBuffer in = ByteBuffer.wrap(packed);
        int count = in.getInt();
        for (int i = 0; i < count; i++) {
            String key = new String(field(in), StandardCharsets.UTF_8);
            byte[] message = field(in);
            String kind = new String(field(in), StandardCharsets.UTF_8);
            byte[] raw = field(in);
            out.collect(Row.of(key, message, kind, raw));
        }
    }

    private static byte[] field(ByteBuffer in) {
        byte[] value = new byte[in.getInt()];
        in.get(value);
        return value;
    }
}
