package pulse.flink;

/** A frame {@link EventFrames} does not accept: the codec decides (flink_jobs/decode.py). No stack trace: it is common. */
final class Undecided extends Exception {
    private static final long serialVersionUID = 1L;
    static final Undecided INSTANCE = new Undecided();

    private Undecided() {
        super(null, null, false, false);
    }
}
