package pulse.flink;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The events topic's framed Avro read in the JVM, for the events {@code schemas/codec.py} accepts
 * without a doubt, written as the fields the user stage reads ({@code marshal} of
 * {@code EventFields}, flink_jobs/messages.py). Pure: no Flink, no I/O.
 *
 * <p>{@code schemas/codec.py} stays the one validation truth: {@link #decode} returns {@code null}
 * for any frame it does not accept (bad input, an unknown schema id, a corner this reader does
 * not handle, such as a negative union index, which fastavro reads from the end of the list), and
 * the job hands those frames to the codec, which dead-letters them with its reason (or, should it
 * accept one, decodes it). A frame accepted here is one the codec accepts with the same fields;
 * tests/unit/flink_jobs/test_event_frames.py checks that on good events of both schema versions,
 * the bad-input campaign's payloads and mutated frames.
 *
 * <p>{@code main} reads frames from stdin ({@code length:i32, frame}, big endian) and writes, per
 * frame, {@code length:i32, fields} or {@code -1}: the tests' way in.
 */
public final class EventFrames {
    /** The reader's event types (event_v2.avsc), by their index in the schema. */
    private static final String[] TYPES = {
        "view", "click", "add_to_cart", "purchase", "rating", "impression", "erase", "block"};
    private static final byte[][] TYPE_BYTES = new byte[TYPES.length][];
    private static final int RATING = 4;
    private static final int IMPRESSION = 5;
    private static final int BLOCK = 7;
    /** view .. impression: the types about one item (schemas.events.ITEM_EVENT_TYPES). */
    private static final int LAST_ITEM_TYPE = IMPRESSION;
    private static final byte[] SEGMENT = "segment".getBytes(StandardCharsets.UTF_8);
    private static final int ABSENT = -1;

    static {
        for (int i = 0; i < TYPES.length; i++) {
            TYPE_BYTES[i] = TYPES[i].getBytes(StandardCharsets.UTF_8);
        }
    }

    private final Map<Integer, Integer> versionOfSchemaId;
    private final int maxBytes;
    private final int maxIdLength;
    private final long minEventTimeMs;
    private final long maxFutureMs;

    /**
     * @param schemaIds {@code "id:version,..."}: the schema ids whose layout is version 1
     *     (event.avsc: no category, seven types) or 2 (event_v2.avsc) of the events subject
     */
    public EventFrames(String schemaIds, int maxBytes, int maxIdLength, long minEventTimeMs, long maxFutureMs) {
        this.versionOfSchemaId = new HashMap<>();
        for (String pair : schemaIds.split(",")) {
            if (!pair.isEmpty()) {
                String[] parts = pair.split(":");
                int version = Integer.parseInt(parts[1]);
                if (version != 1 && version != 2) {
                    throw new IllegalArgumentException("events schema version " + version + " has no reader here");
                }
                versionOfSchemaId.put(Integer.parseInt(parts[0]), version);
            }
        }
        this.maxBytes = maxBytes;
        this.maxIdLength = maxIdLength;
        this.minEventTimeMs = minEventTimeMs;
        this.maxFutureMs = maxFutureMs;
    }

    /** What a frame holds: the user id and event time the JVM keys and times on, and the fields. */
    public static final class Decoded {
        public final String userId;
        public final long eventTimeMs;
        public final byte[] fields;

        Decoded(String userId, long eventTimeMs, byte[] fields) {
            this.userId = userId;
            this.eventTimeMs = eventTimeMs;
            this.fields = fields;
        }
    }

    /** Where each field of one frame lies: a string as start and end in the frame, {@link #ABSENT} for null. */
    private static final class Frame {
        final byte[] b;
        int eventId;
        int eventIdEnd;
        int type;
        int userId;
        int userIdEnd;
        int itemId = ABSENT;
        int itemIdEnd;
        boolean hasValue;
        double value;
        long eventTimeMs;
        List<int[]> context;
        /** The decision's request id, policy and arm (start and end of each), or null. */
        int[] decision;
        double propensity;
        int category = ABSENT;
        int categoryEnd;

        Frame(byte[] b) {
            this.b = b;
        }
    }

    /** The event in {@code value[offset:]}, or {@code null}: leave it to the codec. */
    public Decoded decode(byte[] value, int offset, long nowMs) {
        try {
            Frame frame = read(value, offset);
            check(frame, nowMs);
            String userId = new String(value, frame.userId, frame.userIdEnd - frame.userId, StandardCharsets.UTF_8);
            return new Decoded(userId, frame.eventTimeMs, fields(frame));
        } catch (Undecided | RuntimeException e) {
            return null;
        }
    }

    /** The frame's fields, in the writer's order (both versions; version 1 has no category). */
    private Frame read(byte[] value, int offset) throws Undecided {
        int size = value.length - offset;
        if (size > maxBytes || size < 5 || value[offset] != 0) {
            throw Undecided.INSTANCE;
        }
        int schemaId = ((value[offset + 1] & 0xff) << 24) | ((value[offset + 2] & 0xff) << 16)
            | ((value[offset + 3] & 0xff) << 8) | (value[offset + 4] & 0xff);
        Integer version = versionOfSchemaId.get(schemaId);
        if (version == null) {
            throw Undecided.INSTANCE;
        }
        StrictAvro in = new StrictAvro(value, offset + 5);
        Frame f = new Frame(value);
        f.eventId = in.string();
        f.eventIdEnd = in.pos;
        f.type = in.index(version == 1 ? 7 : 8);
        f.userId = in.string();
        f.userIdEnd = in.pos;
        if (in.index(2) == 1) {
            f.itemId = in.string();
            f.itemIdEnd = in.pos;
        }
        f.hasValue = in.index(2) == 1;
        if (f.hasValue) {
            f.value = in.dbl();
        }
        f.eventTimeMs = in.lng();
        f.context = in.stringMap();
        if (in.index(2) == 1) {
            f.decision = new int[6];
            for (int i = 0; i < 3; i++) {
                f.decision[2 * i] = in.string();
                f.decision[2 * i + 1] = in.pos;
            }
            f.propensity = in.dbl();
        }
        if (version == 2 && in.index(2) == 1) {
            f.category = in.string();
            f.categoryEnd = in.pos;
        }
        if (in.pos != value.length) {
            throw Undecided.INSTANCE;  // trailing bytes
        }
        return f;
    }

    /** The codec's checks (EventCodec._validate); any that fails: the codec says why. */
    private void check(Frame f, long nowMs) throws Undecided {
        checkId(f.b, f.eventId, f.eventIdEnd);
        checkId(f.b, f.userId, f.userIdEnd);
        if (f.type <= LAST_ITEM_TYPE || f.itemId != ABSENT) {
            checkId(f.b, f.itemId, f.itemIdEnd);
        }
        if (f.type == BLOCK) {
            if (f.itemId != ABSENT && f.category != ABSENT) {
                throw Undecided.INSTANCE;
            }
            if (f.itemId == ABSENT) {
                checkId(f.b, f.category, f.categoryEnd);
            }
        } else if (f.category != ABSENT) {
            throw Undecided.INSTANCE;
        }
        for (int[] entry : f.context) {
            if (Arrays.equals(f.b, entry[0], entry[1], SEGMENT, 0, SEGMENT.length)
                && startsWithByteOrderMark(f.b, entry[2], entry[3])) {
                throw Undecided.INSTANCE;
            }
        }
        if ((f.hasValue && !Double.isFinite(f.value)) || (f.type == RATING && !f.hasValue)) {
            throw Undecided.INSTANCE;
        }
        if (f.type == IMPRESSION) {
            if (f.decision == null) {
                throw Undecided.INSTANCE;
            }
            checkId(f.b, f.decision[0], f.decision[1]);
            if (!(f.propensity > 0.0 && f.propensity <= 1.0)) {
                throw Undecided.INSTANCE;
            }
        }
        if (f.eventTimeMs < minEventTimeMs || f.eventTimeMs > nowMs + maxFutureMs) {
            throw Undecided.INSTANCE;
        }
    }

    /** {@code EventFields}: (event_id, type, user_id, event_time_ms, item_id, value, context, decision, category). */
    private static byte[] fields(Frame f) {
        MarshalWriter out = new MarshalWriter(f.b.length + 64);
        out.tuple(9);
        out.string(f.b, f.eventId, f.eventIdEnd);
        out.string(TYPE_BYTES[f.type], 0, TYPE_BYTES[f.type].length);
        out.string(f.b, f.userId, f.userIdEnd);
        out.integer(f.eventTimeMs);
        optionalString(out, f.b, f.itemId, f.itemIdEnd);
        if (f.hasValue) {
            out.dbl(f.value);
        } else {
            out.none();
        }
        out.dict(f.b, f.context);
        if (f.decision != null) {
            out.tuple(4);
            for (int i = 0; i < 3; i++) {
                out.string(f.b, f.decision[2 * i], f.decision[2 * i + 1]);
            }
            out.dbl(f.propensity);
        } else {
            out.none();
        }
        optionalString(out, f.b, f.category, f.categoryEnd);
        return out.bytes();
    }

    private static void optionalString(MarshalWriter out, byte[] b, int start, int end) {
        if (start == ABSENT) {
            out.none();
        } else {
            out.string(b, start, end);
        }
    }

    /** schemas/codec.py's {@code _check_id} on valid UTF-8 bytes: not empty, not too long, no control character, no BOM. */
    private void checkId(byte[] b, int start, int end) throws Undecided {
        if (start == ABSENT || start == end) {
            throw Undecided.INSTANCE;
        }
        int codePoints = 0;
        for (int i = start; i < end; i++) {
            int c = b[i] & 0xff;
            if (c < 0x20 || c == 0x7f) {
                throw Undecided.INSTANCE;
            }
            if ((c & 0xc0) != 0x80) {
                codePoints++;  // a character's first byte (the bytes were checked as UTF-8)
            }
        }
        if (codePoints > maxIdLength || startsWithByteOrderMark(b, start, end)) {
            throw Undecided.INSTANCE;
        }
    }

    /** U+FEFF (EF BB BF) or U+FFFE (EF BF BE) first (schemas.codec.BOM_STARTS). */
    private static boolean startsWithByteOrderMark(byte[] b, int start, int end) {
        return end - start >= 3 && (b[start] & 0xff) == 0xef
            && (((b[start + 1] & 0xff) == 0xbb && (b[start + 2] & 0xff) == 0xbf)
                || ((b[start + 1] & 0xff) == 0xbf && (b[start + 2] & 0xff) == 0xbe));
    }

    /** Frames on stdin, results on stdout (see the class comment); args: the constructor's, then now in ms. */
    public static void main(String[] args) throws IOException {
        EventFrames frames = new EventFrames(args[0], Integer.parseInt(args[1]), Integer.parseInt(args[2]),
            Long.parseLong(args[3]), Long.parseLong(args[4]));
        long nowMs = Long.parseLong(args[5]);
        DataInputStream in = new DataInputStream(new BufferedInputStream(System.in));
        DataOutputStream out = new DataOutputStream(new BufferedOutputStream(System.out));
        while (true) {
            int length;
            try {
                length = in.readInt();
            } catch (EOFException end) {
                break;
            }
            byte[] frame = new byte[length];
            in.readFully(frame);
            Decoded decoded = frames.decode(frame, 0, nowMs);
            if (decoded == null) {
                out.writeInt(-1);
            } else {
                out.writeInt(decoded.fields.length);
                out.write(decoded.fields);
            }
        }
        out.flush();
    }
}
