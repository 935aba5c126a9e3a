package pulse.flink;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ScheduledFuture;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Buffers the {@code Row(key, pickled value)} records (or plain {@code byte[]} values, with key "") of its subtask and emits them as one
 * {@code Row(key, batch bytes)} per batch, so a Python stage is called once per batch instead of
 * once per record (flink_jobs/batching.py reads the bytes). {@link MicroBatcher} is the one-input
 * batcher; {@link UserBatcher} adds the item snapshots every user-stage subtask receives.
 *
 * <p>A batch is emitted when it holds {@code maxRecords}, every {@code maxDelayMs}, before each
 * watermark (so event-time timers fire after the events before them) and before each checkpoint
 * barrier ({@code prepareSnapshotPreBarrier}: the records go downstream ahead of the barrier, so a
 * checkpoint never holds a buffered record). The batch before a barrier carries {@link #CHECKPOINT}
 * even when empty: the Python stage then writes the users it holds in memory to keyed state, and
 * its snapshot has them. When nothing arrived for {@code tickMs}, an empty batch lets the stage do
 * its due work (score refreshes). The key of a batch is the key of its first record (or the last
 * key seen): every record of the subtask belongs to its key groups, so the stream can be
 * reinterpreted as keyed on it.
 *
 * <p>Batch bytes: {@code flags:u8, count:i32}, then per record {@code key length:i32, key UTF-8,
 * value length:i32, value}, then what a subclass appends ({@link #appendTrailer}); big-endian.
 */
abstract class Batcher extends AbstractStreamOperator<Row> {
    private static final long serialVersionUID = 1L;

    /** The batch before a checkpoint barrier or savepoint. */
    public static final int CHECKPOINT = 1;
    /** The batch before the final watermark (the end of event time), or the last batch of the input. */
    public static final int END = 2;

    private final int maxRecords;
    private final long maxDelayMs;
    private final long tickMs;

    private transient ByteArrayOutputStream bytes;
    private transient DataOutputStream out;
    private transient int count;
    private transient String firstKey;
    private transient String lastKey;
    private transient long lastEmitMs;
    private transient ScheduledFuture<?> timer;

    Batcher(int maxRecords, long maxDelayMs, long tickMs) {
        this.maxRecords = maxRecords;
        this.maxDelayMs = maxDelayMs;
        this.tickMs = tickMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        bytes = new ByteArrayOutputStream(64 * 1024);
        out = new DataOutputStream(bytes);
        startBatch();
        timer = getProcessingTimeService().scheduleWithFixedDelay(this::onTime, maxDelayMs, maxDelayMs);
    }

    /** One record of the subtask's input into the batch. */
    final void add(Object record) throws Exception {
        String key;
        byte[] value;
        if (record instanceof Row) {
            key = (String) ((Row) record).getField(0);
            value = (byte[]) ((Row) record).getField(1);
        } else { // plain bytes (e.g. from a Kafka source): no key
            key = "";
            value = (byte[]) record;
        }
        if (count == 0) {
            firstKey = key;
        }
        byte[] keyBytes = key.getBytes(StandardCharsets.UTF_8);
        out.writeInt(keyBytes.length);
        out.write(keyBytes);
        out.writeInt(value.length);
        out.write(value);
        count++;
        lastKey = key;
        if (count >= maxRecords) {
            emit(0);
        }
    }

    /** Whether something besides records waits for the next batch (a subclass's trailer). */
    boolean hasTrailer() {
        return false;
    }

    /** Appends what follows the records; returns the flags it adds (none by default). */
    int appendTrailer(DataOutputStream out) throws IOException {
        return 0;
    }

    private void onTime(long now) throws Exception {
        if (count > 0 || hasTrailer()) {
            emit(0);
        } else if (lastKey != null && now - lastEmitMs >= tickMs) {
            emit(0); // an empty batch: the stage's due work
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        if (mark.getTimestamp() == Long.MAX_VALUE) {
            emit(END); // the end of event time: the stage's final work goes out ahead of the watermark
        } else if (count > 0) {
            emit(0);
        }
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        emit(CHECKPOINT);
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        if (count > 0 || hasTrailer()) {
            emit(END);
        }
        super.finish();
    }

    @Override
    public void close() throws Exception {
        if (timer != null) {
            timer.cancel(false);
        }
        super.close();
    }

    private void emit(int flags) throws IOException {
        String key = count > 0 ? firstKey : lastKey;
        if (key == null) {
            return; // nothing seen yet: no key the stage could be called with (a trailer waits too)
        }
        flags |= appendTrailer(out);
        out.flush();
        byte[] batch = bytes.toByteArray();
        batch[0] = (byte) flags;
        int n = count;
        batch[1] = (byte) (n >>> 24);
        batch[2] = (byte) (n >>> 16);
        batch[3] = (byte) (n >>> 8);
        batch[4] = (byte) n;
        output.collect(new StreamRecord<>(Row.of(key, batch)));
        lastEmitMs = getProcessingTimeService().getCurrentProcessingTime();
        startBatch();
    }

    private void startBatch() throws IOException {
        bytes.reset();
        out.writeByte(0);
        out.writeInt(0);
        count = 0;
        firstKey = null;
    }
}
