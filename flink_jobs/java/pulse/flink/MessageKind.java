package pulse.flink;

import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.types.Row;

/**
 * Keeps the message rows of one kind. A Pulse stage sends every message on its main output as
 * {@code Row(key, message, kind, raw)} (flink_jobs/routing.py) and each consumer takes its kind
 * here, in the JVM: a PyFlink side output costs a call from Python into the JVM per record, around
 * which the stage gives up the Python interpreter's lock and must wait to take it back.
 */
public final class MessageKind implements FilterFunction<Row> {
    private static final long serialVersionUID = 1L;

    private final String kind;

    public MessageKind(String kind) {
        this.kind = kind;
    }

    @Override
    public boolean filter(Row row) {
        return kind.equals(row.getField(2));
    }
}
