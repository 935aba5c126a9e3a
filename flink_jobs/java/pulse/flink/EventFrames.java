package pulse.flink;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
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
 * not handle, such as an Avro varint written longer than needed), and the job hands those frames
 * to the codec, which dead-letters them with its reason (or, should it accept one, decodes it). A
 * frame accepted here is one the codec accepts with the same fields; tests/unit/flink_jobs/
 * test_event_frames.py checks that on good events of both schema versions, the bad-input campaign's
 * payloads and mutated frames.
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
    /** More context entries than this go to the codec (a duplicate key is looked up linearly). */
    private static final int MAX_CONTEXT_ENTRIES = 64;

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

    /** Not a frame this reader accepts; the codec decides. */
    private static final class Undecided extends Exception {
        private static final long serialVersionUID = 1L;
        static final Undecided INSTANCE = new Undecided();

        private Undecided() {
            super(null, null, false, false);
        }
    }

    /** The event in {@code value[offset:]}, or {@code null}: leave it to the codec. */
    public Decoded decode(byte[] value, int offset, long nowMs) {
        try {
            return read(value, offset, nowMs);
        } catch (Undecided | RuntimeException e) {
            return null;
        }
    }

    private Decoded read(byte[] value, int offset, long nowMs) throws Undecided {
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
        Reader in = new Reader(value, offset + 5);
        int eventIdAt = in.string();
        int eventIdEnd = in.pos;
        int type = in.index(version == 1 ? 7 : 8);
        int userIdAt = in.string();
        int userIdEnd = in.pos;
        int itemIdAt = -1;
        int itemIdEnd = -1;
        if (in.index(2) == 1) {
            itemIdAt = in.string();
            itemIdEnd = in.pos;
        }
        boolean hasValue = in.index(2) == 1;
        double number = hasValue ? in.dbl() : 0.0;
        long eventTimeMs = in.lng();
        List<int[]> context = in.context();
        int[] decision = null;  // request id, policy, arm: start and end of each; then the propensity's position
        if (in.index(2) == 1) {
            decision = new int[7];
            for (int i = 0; i < 3; i++) {
                decision[2 * i] = in.string();
                decision[2 * i + 1] = in.pos;
            }
            decision[6] = in.pos;
            in.dbl();
        }
        int categoryAt = -1;
        int categoryEnd = -1;
        if (version == 2 && in.index(2) == 1) {
            categoryAt = in.string();
            categoryEnd = in.pos;
        }
        if (in.pos != value.length) {
            throw Undecided.INSTANCE;  // trailing bytes
        }
        // The codec's checks (EventCodec._validate), in its order; any that fails: the codec says why.
        checkId(value, eventIdAt, eventIdEnd);
        checkId(value, userIdAt, userIdEnd);
        if (type <= LAST_ITEM_TYPE || itemIdAt >= 0) {
            checkId(value, itemIdAt, itemIdEnd);
        }
        if (type == BLOCK) {
            if (itemIdAt >= 0 && categoryAt >= 0) {
                throw Undecided.INSTANCE;
            }
            if (itemIdAt < 0) {
                checkId(value, categoryAt, categoryEnd);
            }
        } else if (categoryAt >= 0) {
            throw Undecided.INSTANCE;
        }
        for (int[] entry : context) {
            if (Arrays.equals(value, entry[0], entry[1], SEGMENT, 0, SEGMENT.length)
                && startsWithByteOrderMark(value, entry[2], entry[3])) {
                throw Undecided.INSTANCE;
            }
        }
        if (hasValue && !Double.isFinite(number)) {
            throw Undecided.INSTANCE;
        }
        if (type == RATING && !hasValue) {
            throw Undecided.INSTANCE;
        }
        if (type == IMPRESSION) {
            if (decision == null) {
                throw Undecided.INSTANCE;
            }
            checkId(value, decision[0], decision[1]);
            double propensity = Reader.dblAt(value, decision[6]);
            if (!(propensity > 0.0 && propensity <= 1.0)) {
                throw Undecided.INSTANCE;
            }
        }
        if (eventTimeMs < minEventTimeMs || eventTimeMs > nowMs + maxFutureMs) {
            throw Undecided.INSTANCE;
        }

        Marshal out = new Marshal(value.length + 64);
        out.tuple(9);
        out.string(value, eventIdAt, eventIdEnd);
        out.string(TYPE_BYTES[type], 0, TYPE_BYTES[type].length);
        out.string(value, userIdAt, userIdEnd);
        out.integer(eventTimeMs);
        if (itemIdAt >= 0) {
            out.string(value, itemIdAt, itemIdEnd);
        } else {
            out.none();
        }
        if (hasValue) {
            out.dbl(number);
        } else {
            out.none();
        }
        out.dict(value, context);
        if (decision != null) {
            out.tuple(4);
            for (int i = 0; i < 3; i++) {
                out.string(value, decision[2 * i], decision[2 * i + 1]);
            }
            out.dbl(Reader.dblAt(value, decision[6]));
        } else {
            out.none();
        }
        if (categoryAt >= 0) {
            out.string(value, categoryAt, categoryEnd);
        } else {
            out.none();
        }
        String userId = new String(value, userIdAt, userIdEnd - userIdAt, StandardCharsets.UTF_8);
        return new Decoded(userId, eventTimeMs, out.bytes());
    }

    /** schemas/codec.py's {@code _check_id} on valid UTF-8 bytes: not empty, not too long, no control character, no BOM. */
    private void checkId(byte[] b, int start, int end) throws Undecided {
        if (start < 0 || start == end) {
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

    /** Avro's binary encoding, strictly: anything unusual is {@link Undecided}. */
    private static final class Reader {
        final byte[] b;
        int pos;

        Reader(byte[] b, int pos) {
            this.b = b;
            this.pos = pos;
        }

        /** A zig-zag varint of at most 10 bytes that fits a long. */
        long lng() throws Undecided {
            long n = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= b.length) {
                    throw Undecided.INSTANCE;
                }
                int c = b[pos++] & 0xff;
                if (shift == 63 && (c & 0xfe) != 0) {
                    throw Undecided.INSTANCE;
                }
                n |= (long) (c & 0x7f) << shift;
                if ((c & 0x80) == 0) {
                    return (n >>> 1) ^ -(n & 1);
                }
            }
            throw Undecided.INSTANCE;
        }

        /** An enum symbol's or union branch's index in {@code [0, count)}. */
        int index(int count) throws Undecided {
            long i = lng();
            if (i < 0 || i >= count) {
                throw Undecided.INSTANCE;
            }
            return (int) i;
        }

        double dbl() throws Undecided {
            if (b.length - pos < 8) {
                throw Undecided.INSTANCE;
            }
            double d = dblAt(b, pos);
            pos += 8;
            return d;
        }

        static double dblAt(byte[] b, int at) {
            long bits = 0;
            for (int i = 7; i >= 0; i--) {
                bits = (bits << 8) | (b[at + i] & 0xff);
            }
            return Double.longBitsToDouble(bits);
        }

        /** A string's start; {@link #pos} is then its end. Only well-formed UTF-8 (as Python's strict decode). */
        int string() throws Undecided {
            long length = lng();
            if (length < 0 || length > b.length - pos) {
                throw Undecided.INSTANCE;
            }
            int start = pos;
            int end = pos + (int) length;
            checkUtf8(b, start, end);
            pos = end;
            return start;
        }

        /** The context map: per entry {key start, key end, value start, value end}, a repeated key keeping its place. */
        List<int[]> context() throws Undecided {
            List<int[]> entries = new ArrayList<>();
            while (true) {
                long count = lng();
                if (count == 0) {
                    return entries;
                }
                if (count < 0) {
                    count = -count;
                    lng();  // the block's size in bytes
                }
                if (count > MAX_CONTEXT_ENTRIES || entries.size() + count > MAX_CONTEXT_ENTRIES) {
                    throw Undecided.INSTANCE;
                }
                for (long i = 0; i < count; i++) {
                    int[] entry = new int[4];
                    entry[0] = string();
                    entry[1] = pos;
                    entry[2] = string();
                    entry[3] = pos;
                    int same = -1;
                    for (int j = 0; j < entries.size(); j++) {
                        int[] e = entries.get(j);
                        if (Arrays.equals(b, e[0], e[1], b, entry[0], entry[1])) {
                            same = j;
                            break;
                        }
                    }
                    if (same >= 0) {
                        entries.get(same)[2] = entry[2];  // as a dict: the last value, the first place
                        entries.get(same)[3] = entry[3];
                    } else {
                        entries.add(entry);
                    }
                }
            }
        }

        /** Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF). */
        static void checkUtf8(byte[] b, int start, int end) throws Undecided {
            int i = start;
            while (i < end) {
                int c = b[i] & 0xff;
                if (c < 0x80) {
                    i++;
                    continue;
                }
                int need;
                int lo = 0x80;
                int hi = 0xbf;
                if (c >= 0xc2 && c <= 0xdf) {
                    need = 1;
                } else if (c >= 0xe0 && c <= 0xef) {
                    need = 2;
                    if (c == 0xe0) {
                        lo = 0xa0;
                    } else if (c == 0xed) {
                        hi = 0x9f;
                    }
                } else if (c >= 0xf0 && c <= 0xf4) {
                    need = 3;
                    if (c == 0xf0) {
                        lo = 0x90;
                    } else if (c == 0xf4) {
                        hi = 0x8f;
                    }
                } else {
                    throw Undecided.INSTANCE;
                }
                if (end - i <= need) {
                    throw Undecided.INSTANCE;
                }
                int second = b[i + 1] & 0xff;
                if (second < lo || second > hi) {
                    throw Undecided.INSTANCE;
                }
                for (int k = 2; k <= need; k++) {
                    if ((b[i + k] & 0xc0) != 0x80) {
                        throw Undecided.INSTANCE;
                    }
                }
                i += need + 1;
            }
        }
    }

    /** Python's marshal format, the few types an event's fields use (loads reads them as marshal.dumps writes them). */
    private static final class Marshal {
        private byte[] out;
        private int size;

        Marshal(int capacity) {
            out = new byte[capacity];
        }

        private void room(int n) {
            if (size + n > out.length) {
                out = Arrays.copyOf(out, Math.max(out.length * 2, size + n));
            }
        }

        private void int32(int v) {
            room(4);
            out[size++] = (byte) v;
            out[size++] = (byte) (v >>> 8);
            out[size++] = (byte) (v >>> 16);
            out[size++] = (byte) (v >>> 24);
        }

        private void code(char c) {
            room(1);
            out[size++] = (byte) c;
        }

        void tuple(int n) {
            code('(');
            int32(n);
        }

        void none() {
            code('N');
        }

        void string(byte[] utf8, int start, int end) {
            code('u');
            int32(end - start);
            room(end - start);
            System.arraycopy(utf8, start, out, size, end - start);
            size += end - start;
        }

        void integer(long v) {
            if (v >= Integer.MIN_VALUE && v <= Integer.MAX_VALUE) {
                code('i');
                int32((int) v);
                return;
            }
            // TYPE_LONG: the count of 15-bit digits (negative for a negative number), least significant first.
            long magnitude = Math.abs(v);  // event times are checked to be positive: no Long.MIN_VALUE here
            int digits = 0;
            for (long m = magnitude; m != 0; m >>>= 15) {
                digits++;
            }
            code('l');
            int32(v < 0 ? -digits : digits);
            room(2 * digits);
            for (int i = 0; i < digits; i++) {
                int digit = (int) (magnitude & 0x7fff);
                out[size++] = (byte) digit;
                out[size++] = (byte) (digit >>> 8);
                magnitude >>>= 15;
            }
        }

        void dbl(double d) {
            code('g');
            long bits = Double.doubleToRawLongBits(d);
            room(8);
            for (int i = 0; i < 8; i++) {
                out[size++] = (byte) (bits >>> (8 * i));
            }
        }

        void dict(byte[] utf8, List<int[]> entries) {
            code('{');
            for (int[] e : entries) {
                string(utf8, e[0], e[1]);
                string(utf8, e[2], e[3]);
            }
            code('0');
        }

        byte[] bytes() {
            return Arrays.copyOf(out, size);
        }
    }

    /** Frames on stdin, results on stdout (see the class comment); args: the constructor's, then now in ms. */
    public static void main(String[] args) throws IOException {
        EventFrames frames = new EventFrames(args[0], Integer.parseInt(args[1]), Integer.parseInt(args[2]),
            Long.parseLong(args[3]), Long.parseLong(args[4]));
        long nowMs = Long.parseLong(args[5]);
        DataInputStream in = new DataInputStream(new java.io.BufferedInputStream(System.in));
        DataOutputStream out = new DataOutputStream(new java.io.BufferedOutputStream(System.out));
        while (true) {
            int length;
            try {
                length = in.readInt();
            } catch (java.io.EOFException end) {
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
