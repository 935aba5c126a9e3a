package pulse.flink;

import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/** The one-input {@link Batcher}: a stage's records (keyed rows, or a source's plain bytes) as batches. */
public final class MicroBatcher extends Batcher implements OneInputStreamOperator<Row, Row> {
    private static final long serialVersionUID = 1L;

    public MicroBatcher(int maxRecords, long maxDelayMs, long tickMs) {
        super(maxRecords, maxDelayMs, tickMs);
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        add(element.getValue());
    }
}
