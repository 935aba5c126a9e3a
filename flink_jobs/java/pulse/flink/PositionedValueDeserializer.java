package pulse.flink;

import java.nio.ByteBuffer;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.util.Collector;

/**
 * A Kafka record's value prefixed with where it came from: partition (4 bytes) and offset
 * (8 bytes), big endian. PyFlink's KafkaSource only has value-only deserializers, so without this
 * the job could not tell which record a dead letter was (flink_jobs/decode.py splits it again).
 * A record without a value (a tombstone) arrives as the header alone, so it is dead-lettered
 * rather than silently dropped.
 */
public final class PositionedValueDeserializer implements KafkaRecordDeserializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    /** Bytes before the value. */
    public static final int HEADER_BYTES = 12;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
        byte[] value = record.value();
        int length = value == null ? 0 : value.length;
        ByteBuffer positioned = ByteBuffer.allocate(HEADER_BYTES + length);
        positioned.putInt(record.partition()).putLong(record.offset());
        if (value != null) {
            positioned.put(value);
        }
        out.collect(positioned.array());
    }

    @Override
    public TypeInformation<byte[]> getProducedType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
