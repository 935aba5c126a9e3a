package pulse.flink;

import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.flink.api.common.state.BroadcastState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * The user stage's batcher: its subtask's events (input 1, keyed by user) and the item owner's
 * snapshots (input 2, broadcast), in one batch per Python call.
 *
 * <p>With the snapshots inside the batches the Python user stage has a single input, so Flink
 * chains this batcher into it: the batch before a barrier reaches the stage in the same call as the
 * barrier (no queue of batches between them), which also makes unaligned checkpoints safe, since a
 * barrier can overtake only records not batched yet (ADR 0007). The snapshots of a batch follow its
 * records, the newest per item only ({@link #SNAPSHOTS} flag: {@code count:i32}, then per snapshot
 * {@code length:i32, bytes}). The newest snapshot per item is also kept in broadcast state, so a
 * restored subtask sends them all in its first batch and the stage's replica starts warm.
 */
public final class UserBatcher extends Batcher implements TwoInputStreamOperator<Row, byte[], Row> {
    private static final long serialVersionUID = 1L;

    /** The batch ends with item snapshots. */
    public static final int SNAPSHOTS = 4;

    private static final MapStateDescriptor<String, byte[]> ITEM_PARAMS = new MapStateDescriptor<>(
            "item-params", Types.STRING, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);

    private transient BroadcastState<String, byte[]> itemParams;
    private transient LinkedHashMap<String, byte[]> pending;

    public UserBatcher(int maxRecords, long maxDelayMs, long tickMs) {
        super(maxRecords, maxDelayMs, tickMs);
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        itemParams = context.getOperatorStateStore().getBroadcastState(ITEM_PARAMS);
        pending = new LinkedHashMap<>();
        for (Map.Entry<String, byte[]> entry : itemParams.entries()) {
            pending.put(entry.getKey(), entry.getValue()); // restored: the stage's replica starts from these
        }
    }

    @Override
    public void processElement1(StreamRecord<Row> element) throws Exception {
        add(element.getValue());
    }

    @Override
    public void processElement2(StreamRecord<byte[]> element) throws Exception {
        byte[] snapshot = element.getValue();
        String itemId = itemId(snapshot);
        itemParams.put(itemId, snapshot);
        pending.remove(itemId); // re-added at the end: snapshots go out in the order they arrived
        pending.put(itemId, snapshot);
    }

    @Override
    boolean hasTrailer() {
        return !pending.isEmpty();
    }

    @Override
    int appendTrailer(DataOutputStream out) throws IOException {
        if (pending.isEmpty()) {
            return 0;
        }
        out.writeInt(pending.size());
        for (byte[] snapshot : pending.values()) {
            out.writeInt(snapshot.length);
            out.write(snapshot);
        }
        pending.clear();
        return SNAPSHOTS;
    }

    /** The item id of a snapshot's bytes (flink_jobs/messages.py ItemSnapshot: {@code <qqHH}, then the id). */
    static String itemId(byte[] snapshot) {
        int length = ByteBuffer.wrap(snapshot).order(ByteOrder.LITTLE_ENDIAN).getShort(16) & 0xFFFF;
        return new String(snapshot, 20, length, StandardCharsets.UTF_8);
    }
}
