package pulse.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/** The raw bytes of a message row (field 3), for a Kafka sink: closed sessions, item snapshots. */
public final class RawBytes implements MapFunction<Row, byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public byte[] map(Row row) {
        return (byte[]) row.getField(3);
    }
}
