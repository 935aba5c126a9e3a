package pulse.flink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Decodes the events topic's records in the JVM, chained to the source, into {@code (Row(user_id,
 * event fields), event time)}: the shape the event-time and keyBy steps read (flink_jobs/decode.py,
 * {@code DECODED}). A record {@link EventFrames} does not accept goes, as read (partition and
 * offset first), to {@link #UNDECIDED}, where the Python codec decodes it or dead-letters it with
 * its reason.
 */
public final class EventDecoder extends ProcessFunction<byte[], Tuple2<Row, Long>> {
    private static final long serialVersionUID = 1L;

    /** Records for the Python codec: bad input, an unknown schema id, a corner the JVM leaves to it. */
    public static final OutputTag<byte[]> UNDECIDED =
        new OutputTag<>("undecided-events", PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);

    private final String schemaIds;
    private final int maxBytes;
    private final int maxIdLength;
    private final long minEventTimeMs;
    private final long maxFutureMs;
    private transient EventFrames frames;
    private transient Counter decoded;
    private transient Counter undecided;

    public EventDecoder(String schemaIds, int maxBytes, int maxIdLength, long minEventTimeMs, long maxFutureMs) {
        this.schemaIds = schemaIds;
        this.maxBytes = maxBytes;
        this.maxIdLength = maxIdLength;
        this.minEventTimeMs = minEventTimeMs;
        this.maxFutureMs = maxFutureMs;
    }

    @Override
    public void open(OpenContext context) {
        frames = new EventFrames(schemaIds, maxBytes, maxIdLength, minEventTimeMs, maxFutureMs);
        // The same name as the Python decoder's counter: the two add up to the events decoded.
        decoded = getRuntimeContext().getMetricGroup().counter("events_decoded");
        undecided = getRuntimeContext().getMetricGroup().counter("events_handed_to_codec");
    }

    @Override
    public void processElement(byte[] positioned, Context ctx, Collector<Tuple2<Row, Long>> out) {
        EventFrames.Decoded event =
            frames.decode(positioned, PositionedValueDeserializer.HEADER_BYTES, System.currentTimeMillis());
        if (event == null) {
            undecided.inc();
            ctx.output(UNDECIDED, positioned);
            return;
        }
        decoded.inc();
        out.collect(Tuple2.of(Row.of(event.userId, event.fields), event.eventTimeMs));
    }
}
