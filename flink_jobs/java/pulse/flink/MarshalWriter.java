package pulse.flink;

import java.util.Arrays;
import java.util.List;

/**
 * Python's {@code marshal} format, the few types an event's fields use: what {@code marshal.loads}
 * reads as it reads {@code marshal.dumps}' output (flink_jobs/messages.py, {@code event_bytes}).
 * Little endian; strings as their UTF-8 bytes.
 */
final class MarshalWriter {
    private byte[] out;
    private int size;

    MarshalWriter(int capacity) {
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
