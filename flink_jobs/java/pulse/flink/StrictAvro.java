package pulse.flink;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Avro's binary encoding read strictly, for {@link EventFrames}: anything unusual (an index out of
 * range, a varint that does not fit, UTF-8 that Python's strict decode refuses, bytes missing) is
 * {@link Undecided}, and the codec decides.
 */
final class StrictAvro {
    /** More map entries than this are left to the codec (a repeated key is looked up linearly). */
    static final int MAX_MAP_ENTRIES = 64;

    final byte[] b;
    int pos;

    StrictAvro(byte[] b, int pos) {
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

    /** A map of strings: per entry {key start, key end, value start, value end}, a repeated key keeping its place. */
    List<int[]> stringMap() throws Undecided {
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
            if (count > MAX_MAP_ENTRIES || entries.size() + count > MAX_MAP_ENTRIES) {
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
